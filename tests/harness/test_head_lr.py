"""``RunConfig.head_lr_scale``: the classifier head in a parameter group of its own, at
``lr * head_lr_scale``, for the harness's optimisers and the PEFT strategies', kept across
experiences by Avalanche's optimiser update."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avalanche.training.plugins import EvaluationPlugin

from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.harness import RunConfig
from avalanche_cts.harness.methods import build_strategy, make_optimizer
from avalanche_cts.harness.runner import make_model
from avalanche_cts.strategies.base import param_groups

torch.set_num_threads(1)
LR = 1e-3


def _cfg(**kw):
    return RunConfig(**dict(dict(model="vit_digits_micro", epochs=1, batch_size=16, lr=LR,
                                 seed=0), **kw))


def _first_adam_step(scale: float):
    """``(head moves, backbone moves)``: the absolute change of every entry whose gradient
    is far from 0 after one Adam step of the harness's optimiser."""
    cfg = _cfg(head_lr_scale=scale)
    torch.manual_seed(0)
    model = make_model(cfg, 4)
    opt = make_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    F.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    head = {n for n, _ in model.named_parameters() if n.startswith("head.")}
    moves = {True: [], False: []}
    for n, p in model.named_parameters():
        big = grads[n].abs() > 1e-4  # Adam's first step there is lr * g / (|g| + eps) = lr
        moves[n in head].append((p.detach() - before[n]).abs()[big])
    return torch.cat(moves[True]), torch.cat(moves[False])


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_the_first_adam_step_moves_the_head_by_scale_times_lr(scale):
    head, backbone = _first_adam_step(scale)
    assert len(head) > 10 and len(backbone) > 100
    # reference: Adam's first update of an entry is lr * g / (|g| + eps), |.| = lr
    assert torch.allclose(head, torch.full_like(head, LR * scale), rtol=0.02)
    assert torch.allclose(backbone, torch.full_like(backbone, LR), rtol=0.02)


def test_the_groups_survive_every_experience_of_a_token_memory_run():
    bm = synthetic_benchmark(2, n_classes=4, train_per_class=16, test_per_class=4,
                             image_size=8, channels=1)
    cfg = _cfg(method="core_tokenset", budget=0.2, replay_mode="mask", head_lr_scale=10.0)
    model = make_model(cfg, 4)
    strategy = build_strategy(cfg, model, EvaluationPlugin(loggers=[]))
    head = {id(p) for p in model.get_classifier().parameters()}
    for exp in bm.train_stream:
        strategy.train(exp)
        groups = strategy.optimizer.param_groups
        assert [g["lr"] for g in groups] == [LR, 10 * LR]
        assert {id(p) for p in groups[1]["params"]} == head
        trained = {id(p) for g in groups for p in g["params"]}
        # every trainable parameter, the replay's mask token included, is optimised once
        assert trained == {id(p) for p in model.parameters() if p.requires_grad}
        assert sum(len(g["params"]) for g in groups) == len(trained)
    assert "cts_mask_token" in dict(model.named_parameters())  # in group 0, checked above


@pytest.mark.parametrize("method, options", [("inflora", {"rank": 2}),
                                             ("coda_prompt", {"pool_size": 4, "prompt_length": 2})])
def test_the_peft_strategies_train_their_heads_at_the_scaled_rate(method, options):
    bm = synthetic_benchmark(2, n_classes=4, train_per_class=8, test_per_class=4,
                             image_size=8, channels=1)
    cfg = _cfg(method=method, options=options, head_lr_scale=5.0)
    model = make_model(cfg, 4)
    strategy = build_strategy(cfg, model, EvaluationPlugin(loggers=[]))
    for exp in bm.train_stream:
        strategy.train(exp)
        lrs = [g["lr"] for g in strategy.optimizer.param_groups]
        heads = {id(p) for p in strategy.heads.parameters() if p.requires_grad}
        assert lrs == [LR, 5 * LR]
        assert {id(p) for p in strategy.optimizer.param_groups[1]["params"]} == heads
        assert heads  # the current experience's head


def test_scale_one_is_one_group_and_keeps_the_fingerprints():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    assert len(param_groups(model, model[1], 1.0, LR)) == 1
    assert "head_lr_scale" not in _cfg().shaping()  # stored runs keep their fingerprints
    assert _cfg(head_lr_scale=3.0).shaping()["head_lr_scale"] == 3.0


def test_a_model_without_a_head_and_bad_scales_are_refused():
    with pytest.raises(ValueError, match="has no classifier head.*pass head_lr_scale=1"):
        param_groups(nn.Linear(3, 3), None, 10.0, LR)
    for bad in (0, -1.0, 1e4, "10", float("nan")):
        with pytest.raises(ValueError, match="head_lr_scale must be a positive number"):
            _cfg(head_lr_scale=bad)


def test_the_demo_passes_its_head_rate_to_every_run_and_refuses_a_bad_one(capsys):
    from avalanche_cts.harness.cli import build_parser, main
    from avalanche_cts.harness.demo import demo_cells

    cells = demo_cells(build_parser().parse_args(["demo", "--head-lr-scale", "30"]))
    assert cells and {c.cfg.head_lr_scale for c in cells} == {30.0}
    assert {c.cfg.head_lr_scale for c in demo_cells(build_parser().parse_args(["demo"]))} == {1.0}
    assert main(["demo", "--head-lr-scale", "0", "--jobs", "1"]) == 2
    assert "RunConfig.head_lr_scale must be a positive number" in capsys.readouterr().err
