"""new_data_loss="local": new data's cross-entropy over its own experience's classes (ER-ACE)."""
import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.memory.local_loss import local_cross_entropy


def test_local_cross_entropy_equals_a_per_row_reference_and_ignores_other_classes():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 10, generator=gen) * 3
    classes = torch.tensor([3, 7])
    targets = torch.tensor([3, 7, 7, 3, 3, 7])
    ref = sum(torch.logsumexp(logits[i, [3, 7]], 0) - logits[i, targets[i]]
              for i in range(6)) / 6
    assert local_cross_entropy(logits, targets, classes).item() == pytest.approx(ref.item(), 1e-6)
    moved = logits.clone()
    moved[:, [0, 1, 2, 4, 5, 6, 8, 9]] += 50.0  # other classes' logits do not matter
    assert local_cross_entropy(moved, targets, classes).item() == pytest.approx(ref.item(), 1e-5)
    assert torch.nn.functional.cross_entropy(moved, targets).item() > ref.item() + 10


def test_local_cross_entropy_names_labels_outside_the_experience():
    with pytest.raises(ValueError, match=r"training labels \[5\] are not classes of the current"):
        local_cross_entropy(torch.zeros(2, 10), torch.tensor([3, 5]), torch.tensor([3, 7]))


class HeadGrads(SupervisedPlugin):
    """The head's weight gradient after each backward."""

    def __init__(self):
        super().__init__()
        self.grads = []

    def after_backward(self, strategy, **kw):
        self.grads.append(strategy.model.head.weight.grad.detach().clone())


def _train_two(model, loss, benchmark):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    plugin = CoreTokensetReplayPlugin(buf, dropout=1.0, mem_weight=0.0, new_data_loss=loss)
    probe = HeadGrads()
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), 1e-2),
              train_mb_size=32, train_epochs=1, eval_mb_size=128, plugins=[plugin, probe],
              evaluator=None)
    criterion = s._criterion
    exps = list(benchmark.train_stream)
    s.train(exps[0])
    probe.grads.clear()
    s.train(exps[1])
    assert s._criterion is criterion  # restored after each experience
    return probe.grads, exps


@pytest.mark.parametrize("loss", ["local", "all"])
def test_new_data_leaves_the_other_classes_heads_alone_only_with_the_local_loss(
        digits_benchmark, micro_vit, loss):
    grads, exps = _train_two(micro_vit, loss, digits_benchmark)
    current = sorted(exps[1].classes_in_this_experience)
    others = [c for c in range(10) if c not in current]
    other_norm = max(float(g[others].abs().max()) for g in grads)
    assert max(float(g[current].abs().max()) for g in grads) > 1e-6
    if loss == "local":
        assert other_norm == 0.0
    else:  # the control: the usual cross-entropy pushes every other class down
        assert other_norm > 1e-6


def test_local_loss_refused_for_a_strategy_with_its_own_criterion(digits_benchmark, micro_vit):
    class OwnLoss(Naive):
        def criterion(self):
            return super().criterion()

    plugin = CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_fraction=0.1),
                                      new_data_loss="local")
    s = OwnLoss(model=micro_vit, optimizer=torch.optim.SGD(micro_vit.parameters(), 1e-2),
                train_mb_size=32, plugins=[plugin], evaluator=None)
    with pytest.raises(TypeError, match="OwnLoss defines its own"):
        s.train(digits_benchmark.train_stream[0])
    with pytest.raises(ValueError, match="new_data_loss must be"):
        CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_fraction=0.1), new_data_loss="ace")


def test_balanced_rows_match_the_memory_batch_per_class():
    from avalanche_cts.memory.local_loss import balanced_rows

    assert balanced_rows(32, 64, 2, 2) == 32  # second experience: 2 new classes, 2 stored
    assert balanced_rows(32, 64, 2, 8) == 8  # fifth: 4 records per class either side
    assert balanced_rows(32, 64, 1, 3) == 11
    assert balanced_rows(32, 16, 2, 2) == 16  # at most the mini-batch
    with pytest.raises(ValueError, match="at least one class"):
        balanced_rows(32, 64, 2, 0)


class LossProbe(SupervisedPlugin):
    """After the replay plugin's before_backward: the total loss, the logits and labels."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def before_backward(self, strategy, **kw):
        self.steps.append((float(strategy.loss.detach()), strategy.mb_output.detach().clone(),
                           strategy.mb_y.clone(), strategy.is_training))


def test_balanced_loss_equals_a_per_row_reference(digits_benchmark, micro_vit):
    """Total = local CE of the mini-batch + w * mean over (the memory batch's records, the
    mini-batch's first m rows over every class), m = the memory batch's size (2 current
    classes, 2 stored); computed here from the logits with logsumexp."""
    w = 0.5
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    plugin = CoreTokensetReplayPlugin(buf, dropout=1.0, mem_weight=w, batch_size_mem=8,
                                      new_data_loss="balanced", seed=0)
    recorded = []
    inner = plugin.replay_losses
    plugin.replay_losses = lambda batch, strategy=None: recorded.append(
        inner(batch, strategy)) or recorded[-1]
    probe = LossProbe()
    s = Naive(model=micro_vit, optimizer=torch.optim.SGD(micro_vit.parameters(), 1e-2),
              train_mb_size=32, train_epochs=1, eval_mb_size=128, plugins=[plugin, probe],
              evaluator=None)
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    assert not recorded  # no memory yet: the local loss alone
    first = exps[0].classes_in_this_experience
    assert buf.store.classes() == sorted(first)
    probe.steps.clear()
    s.train(exps[1])
    current = sorted(exps[1].classes_in_this_experience)
    assert len(recorded) == len(probe.steps) > 0
    for mem, (total, logits, y, _) in zip(recorded, probe.steps):
        lse_local = torch.logsumexp(logits[:, current], 1)
        local = (lse_local - logits.gather(1, y[:, None])[:, 0]).mean()
        m = min(len(y), len(mem))  # 2 current classes, 2 stored: one row per record
        new = torch.logsumexp(logits[:m], 1) - logits[:m].gather(1, y[:m, None])[:, 0]
        ref = local + w * torch.cat([mem.detach(), new]).mean()
        assert total == pytest.approx(float(ref), rel=1e-5)
        dropped = local + w * mem.detach().mean()  # planted break: without the new rows
        assert abs(total - float(dropped)) > 1e-4
