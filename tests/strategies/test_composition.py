"""CoreTokensetReplayPlugin inside Avalanche's own strategies: two experiences each, token
dropout on exactly the batch it was drawn for, and the strategies it refuses."""
import warnings

import pytest
import torch
from torch import nn

import avalanche.training as strategies
from avalanche.training.plugins import EvaluationPlugin

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, create_model
from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.models.timm_vit import TimmViTAdapter


class _Features(nn.Module):
    """ER-AML's feature extractor: the ViT's pre-logits (not a registered submodule)."""

    def __init__(self, model):
        super().__init__()
        self.model = [model]

    def forward(self, x):
        m = self.model[0]
        return m.forward_head(m.forward_features(x), pre_logits=True)


KWARGS = {
    "Naive": {}, "EWC": dict(ewc_lambda=1.0), "SynapticIntelligence": dict(si_lambda=1.0),
    "LwF": dict(alpha=1.0, temperature=2.0), "MAS": {},
    "ER_ACE": dict(mem_size=50, batch_size_mem=16),
    # ER-AML cycles a loader of train_mb_size per class: every class needs that many samples
    "ER_AML": dict(mem_size=200, batch_size_mem=16, train_mb_size=16),
    "GEM": dict(patterns_per_exp=16), "AGEM": dict(patterns_per_exp=16, sample_size=16),
    "GDumb": dict(mem_size=50), "Cumulative": {}, "Replay": dict(mem_size=50),
    "MIR": dict(mem_size=50, subsample=32), "FromScratchTraining": {},
    "DER": dict(mem_size=50, batch_size_mem=16), "JointTraining": {},
}
WORKS = [n for n in KWARGS if n not in ("DER", "JointTraining")]


@pytest.fixture(scope="module")
def stream():
    return synthetic_benchmark(2, n_classes=4, train_per_class=20, test_per_class=4,
                               image_size=8, channels=1)


def _strategy(name, plugin, **extra):
    torch.manual_seed(0)
    model = create_model("vit_digits_micro")
    kw = {"train_mb_size": 32, **KWARGS[name], **extra}
    if name == "ER_AML":
        kw["feature_extractor"] = _Features(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(strategies, name)(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
            criterion=nn.CrossEntropyLoss(), train_epochs=1, eval_mb_size=64,
            plugins=[plugin], evaluator=EvaluationPlugin(loggers=[]), **kw)


def _plugin(dropout=0.5):
    buf = CoreTokensetBuffer(budget_fraction=0.3, token_retention=0.5)
    return CoreTokensetReplayPlugin(buf, dropout=dropout, batch_size_mem=8)


@pytest.mark.parametrize("name", WORKS)
def test_plugin_trains_two_experiences_inside(name, stream, monkeypatch):
    dropped = []
    partial = TimmViTAdapter.forward_partial

    def record(self, images, keep, mode):
        dropped.append(images is s.mb_x)
        return partial(self, images, keep, mode)

    monkeypatch.setattr(TimmViTAdapter, "forward_partial", record)
    plugin = _plugin()
    s = _strategy(name, plugin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in stream.train_stream:
            s.train(exp)
        s.eval(stream.test_stream)
    assert plugin.storage_policy.num_records > 0
    assert plugin.last_mem_loss is not None and bool(torch.isfinite(plugin.last_mem_loss))
    # one dropped forward per step, on the strategy's mini-batch: never on a buffer batch
    # of the strategy's own (ER-ACE, ER-AML), which sees full images
    assert all(dropped) and len(dropped) == s.clock.train_iterations, dropped


@pytest.mark.parametrize("name, dropout, phrase", [
    ("JointTraining", 0.5, "trains once on all experiences together"),
    ("DER", 0.5, "pass dropout=1.0"),
])
def test_strategies_it_cannot_serve_are_refused_when_training_starts(name, dropout, phrase,
                                                                     stream):
    s = _strategy(name, _plugin(dropout))
    with pytest.raises(TypeError, match=phrase):
        s.train(stream.train_stream[0] if name == "DER" else stream.train_stream)


def test_der_without_token_dropout_works(stream):
    plugin = _plugin(dropout=1.0)
    s = _strategy("DER", plugin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in stream.train_stream:
            s.train(exp)
    assert plugin.last_mem_loss is not None


def test_a_forward_on_another_batch_is_named():
    """A strategy that feeds the model a copy of the batch would silently train whole images."""

    class Copying(strategies.Naive):
        def forward(self):
            return self.model(self.mb_x.clone())

    torch.manual_seed(0)
    model = create_model("vit_digits_micro")
    bm = synthetic_benchmark(2, n_classes=4, train_per_class=4, test_per_class=2,
                             image_size=8, channels=1)
    s = Copying(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                train_mb_size=8, plugins=[_plugin()], evaluator=EvaluationPlugin(loggers=[]))
    with pytest.raises(RuntimeError, match="did not run the model on the mini-batch"):
        s.train(bm.train_stream[0])
