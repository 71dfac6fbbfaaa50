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


def _pixel_masked(x, keep, patch):
    """Reference: zero every pixel of the dropped tokens, one patch at a time."""
    out = x.clone()
    cols = x.shape[-1] // patch
    for b, t in (~keep).nonzero().tolist():
        r, c = divmod(t, cols)
        out[b, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = 0
    return out


@pytest.mark.parametrize("schedule", ["fixed", "uniform"])
def test_zero_mode_model_sees_masked_images_and_full_images_at_eval(digits_benchmark, micro_vit,
                                                                     schedule):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.3)
    ours = CoreTokensetReplayPlugin(buf, replay_mode="zero", dropout_schedule=schedule)
    assert ours.keep_rate == 0.3  # the memory's retention by default
    masks, seen = [], []
    draw = ours.dropout_mask
    ours.dropout_mask = lambda b, device=None: masks.append(draw(b, device)) or masks[-1]
    hook = micro_vit.patch_embed.register_forward_pre_hook(
        lambda m, inp: seen.append(inp[0].detach().clone()))
    probe = Probe()
    s = _strategy(micro_vit, [ours, probe])
    s.train(digits_benchmark.train_stream[0])
    assert len(masks) == len(seen) == len(probe.train_inputs) > 0
    for keep, x_in, x in zip(masks, seen, probe.train_inputs):
        counts = keep.sum(1)
        if schedule == "fixed":
            assert (counts == round(0.3 * 16)).all()
        else:
            assert counts.min() >= round(0.3 * 16) and counts.max() <= 16
        assert torch.equal(x_in, _pixel_masked(x, keep, 2))  # dropped tokens are 0
    if schedule == "uniform":
        all_counts = torch.cat([k.sum(1) for k in masks]).float()
        assert all_counts.std() > 1  # rates really vary per sample
    seen.clear()
    s.eval(digits_benchmark.test_stream[:1])
    hook.remove()
    test = torch.stack([x for x, *_ in digits_benchmark.test_stream[0].dataset])
    assert torch.equal(torch.cat(seen).sort(0).values, test.sort(0).values)  # untouched images


def test_dropout_fraction_leaves_the_rest_of_the_batch_whole(digits_benchmark, micro_vit):
    ours = CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.25),
                                    dropout_fraction=0.5)
    from avalanche_cts.models import get_adapter

    ours._adapter = get_adapter(micro_vit)
    torch.manual_seed(0)
    keep = ours.dropout_mask(4000)
    counts = keep.sum(1)
    assert set(counts.tolist()) == {4, 16}
    assert (counts == 4).float().mean().item() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("mode", ["sparse", "mask"])
def test_sparse_and_mask_modes_train_and_restore_the_forward(digits_benchmark, micro_vit, mode):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, replay_mode=mode, seed=0)
    s = _strategy(micro_vit, [ours])
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    s.train(exps[1])
    assert "forward" not in vars(micro_vit)  # the partial-input forward is gone after each step
    assert ours.last_mem_loss is not None and torch.isfinite(ours.last_mem_loss)
    token = getattr(micro_vit, "cts_mask_token", None)
    if mode == "mask":  # the learned mask token was added, optimised and moved from its init
        init = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(0)) * 0.02
        assert token is not None and not torch.allclose(token.detach(), init)
    else:
        assert token is None


def test_non_finite_loss_stops_with_step_and_terms(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, dropout=1.0)
    s = _strategy(micro_vit, [ours])
    with torch.no_grad():
        micro_vit.head.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at experience 0, epoch 0, "
                                                 r"iteration 0: total nan, memory term none"):
        s.train(digits_benchmark.train_stream[0])


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
