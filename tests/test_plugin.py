"""CoreTokensetReplayPlugin inside Avalanche strategies."""
import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EWCPlugin, LwFPlugin

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin


class Probe(SupervisedPlugin):
    """Records what the strategy sees: inputs, the loss before backward, eval inputs."""

    def __init__(self):
        super().__init__()
        self.train_inputs, self.losses, self.eval_inputs = [], [], []

    def before_backward(self, strategy, **kw):
        ce = F.cross_entropy(strategy.mb_output, strategy.mb_y)
        self.losses.append((strategy.loss.item(), ce.item()))

    def after_forward(self, strategy, **kw):
        self.train_inputs.append(strategy.mb_x.detach().clone())

    def before_eval_forward(self, strategy, **kw):
        self.eval_inputs.append(strategy.mb_x.detach().clone())


def _strategy(model, plugins, epochs=1):
    return Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                 train_mb_size=32, train_epochs=epochs, eval_mb_size=128, plugins=plugins,
                 evaluator=None)


@pytest.mark.parametrize("other", ["lwf", "ewc"])
def test_memory_loss_added_and_composes_with_other_plugin(digits_benchmark, micro_vit, other):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, batch_size_mem=16, dropout=1.0)
    extra = LwFPlugin(alpha=1.0, temperature=2.0) if other == "lwf" else EWCPlugin(ewc_lambda=100.0)
    probe = Probe()
    s = _strategy(micro_vit, [ours, extra, probe])
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    assert all(abs(loss - ce) < 1e-6 for loss, ce in probe.losses)  # no memory yet
    assert buf.num_records > 0
    probe.losses.clear()
    s.train(exps[1])
    extra_terms = [loss - ce for loss, ce in probe.losses]
    # the memory loss alone would be last_mem_loss; the other plugin adds a positive term
    assert ours.last_mem_loss is not None and ours.last_mem_loss > 0
    assert extra_terms[-1] > ours.last_mem_loss.item() + 1e-6
    assert buf.seen_samples == len(exps[0].dataset) + len(exps[1].dataset)


def test_memory_only_loss_equals_replay_cross_entropy(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, batch_size_mem=8, dropout=1.0)
    probe = Probe()
    s = _strategy(micro_vit, [ours, probe])
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    probe.losses.clear()
    s.train(exps[1])
    loss, ce = probe.losses[-1]
    assert loss - ce == pytest.approx(ours.last_mem_loss.item(), abs=1e-5)


def test_zero_mode_dropout_rate_and_full_images_at_eval(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.3)
    ours = CoreTokensetReplayPlugin(buf, replay_mode="zero")  # keep rate 0.3 by default
    assert ours.keep_rate == 0.3
    probe = Probe()
    s = _strategy(micro_vit, [ours, probe])
    exp = digits_benchmark.train_stream[0]
    originals = torch.stack([x for x, *_ in exp.dataset])
    nonzero_tokens = (originals.reshape(-1, 4, 2, 4, 2).abs().sum((2, 4)) > 0).float().mean()
    s.train(exp)
    x = torch.cat(probe.train_inputs)
    kept = (x.reshape(-1, 4, 2, 4, 2).abs().sum((2, 4)) > 0).float().mean()
    # tokens that had ink survive with probability 0.3
    assert kept.item() == pytest.approx(0.3 * nonzero_tokens.item(), abs=0.02)
    s.eval(digits_benchmark.test_stream[:1])
    ev = torch.cat(probe.eval_inputs)
    test = torch.stack([x for x, *_ in digits_benchmark.test_stream[0].dataset])
    assert torch.equal(ev.sort(0).values, test.sort(0).values)  # untouched images


def test_sparse_mode_trains_and_restores_patch_drop(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, replay_mode="sparse")
    s = _strategy(micro_vit, [ours])
    old = micro_vit.patch_drop
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    s.train(exps[1])
    assert micro_vit.patch_drop is old
    assert ours.last_mem_loss is not None and torch.isfinite(ours.last_mem_loss)


def test_plugin_rejects_bad_settings():
    buf = CoreTokensetBuffer(budget_fraction=0.1)
    with pytest.raises(ValueError, match="replay_mode must be one of"):
        CoreTokensetReplayPlugin(buf, replay_mode="dense")
    with pytest.raises(ValueError, match=r"dropout \(token keep rate\) must be in \(0, 1\]"):
        CoreTokensetReplayPlugin(buf, dropout=0.0)
    with pytest.raises(TypeError, match="must be a CoreTokensetBuffer"):
        CoreTokensetReplayPlugin(object())
    with pytest.raises(ValueError, match="weighted_replay=True needs"):
        CoreTokensetReplayPlugin(buf, weighted_replay=True)


def test_non_vit_model_rejected_at_training(digits_benchmark):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    s = _strategy(model, [CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_fraction=0.1))])
    with pytest.raises(TypeError, match="not a supported vision transformer"):
        s.train(digits_benchmark.train_stream[0])
