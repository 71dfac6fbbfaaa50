"""InfLoRA: subspace design, DualGPM memory, merging, parameter counts, interference."""
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_cts.models import create_model
from avalanche_cts.strategies import (
    DualGPM, InfLoRA, KVLoRALinear, TaskHeads, count_trainable, dualgpm_threshold,
    inflora_trainable_params,
)
from avalanche_cts.strategies.inflora import InputCovariance, add_kv_lora, design_down
from baselines_digits import digits_benchmark, pretrained_micro_vit

torch.set_num_threads(1)


def _rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


def _planted(q: torch.Tensor, cols, sigmas) -> torch.Tensor:
    """Covariance with singular values ``sigmas`` on the columns ``cols`` of rotation ``q``."""
    u = q[:, cols]
    return u @ torch.diag(torch.tensor(sigmas, dtype=torch.float64)) @ u.T


def _same_span(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape[1] == b.shape[1] and torch.allclose(a @ a.T, b @ b.T, atol=1e-8)


def _strategy(cls=InfLoRA, **kw):
    ev = EvaluationPlugin(accuracy_metrics(stream=True, experience=True), loggers=[])
    args = dict(rank=4, lr=5e-3, train_mb_size=32, train_epochs=3, eval_mb_size=256,
                evaluator=ev)
    args.update(kw)
    return cls(model=pretrained_micro_vit(), **args)


# ------------------------------------------------------------------ DualGPM threshold
def test_threshold_schedule():
    assert dualgpm_threshold(0, 10) == pytest.approx(0.98)
    assert dualgpm_threshold(5, 10) == pytest.approx(0.99)
    assert dualgpm_threshold(10, 10) == pytest.approx(1.0)
    assert dualgpm_threshold(2, 4, base=0.99) == pytest.approx(0.995)


# ---------------------------------------------------------------------- DualGPM memory
def test_first_task_keeps_directions_below_threshold():
    q = _rotation(16, 0)
    # squared singular values 0.5, 0.47, 0.03 of the total: cumulative .5, .97 < .98 <= 1
    cov = _planted(q, [0, 1, 2], [math.sqrt(0.5), math.sqrt(0.47), math.sqrt(0.03)])
    mem = DualGPM()
    mem.update([cov], 0.98)
    assert mem.modes == ["remove"]
    assert _same_span(mem.protected_basis(0), q[:, :2])


def test_first_task_stores_complement_when_large():
    q = _rotation(8, 1)
    mem = DualGPM()
    energy = [0.3, 0.25, 0.2, 0.12, 0.08, 0.05]  # cumulative .3 .55 .75 .87 .95 < .98 <= 1
    mem.update([_planted(q, range(6), [math.sqrt(e) for e in energy])], 0.98)
    assert mem.modes == ["retain"]
    assert mem.bases[0].shape == (8, 3)
    assert _same_span(mem.bases[0], q[:, 5:])
    assert _same_span(mem.protected_basis(0), q[:, :5])


def test_later_task_grows_memory_and_switches_to_retain():
    q = _rotation(10, 2)
    mem = DualGPM()
    mem.update([_planted(q, [0, 1], [1.0, 1e-3])], 0.98)
    assert _same_span(mem.protected_basis(0), q[:, :1])
    # new task: half its energy in the old direction, the rest in 3 new ones
    mem.update([_planted(q, [0, 4, 5, 6], [1.0, 0.6, 0.6, 0.6])], 0.99)
    assert mem.modes == ["remove"]
    assert _same_span(mem.protected_basis(0), q[:, [0, 4, 5, 6]])
    mem.update([_planted(q, [7, 8], [1.0, 1.0])], 0.99)
    assert mem.modes == ["retain"]  # 6 > 10 / 2 directions
    assert _same_span(mem.protected_basis(0), q[:, [0, 4, 5, 6, 7, 8]])


@pytest.mark.parametrize("mode", ["remove", "retain"])
def test_designed_B_is_orthogonal_to_old_subspace(mode):
    d, q = 12, _rotation(12, 3)
    # old task: k directions kept (cumulative energy < eps) plus one unprotected tail
    k, eps = (2, 0.98) if mode == "remove" else (7, 0.99)
    mem = DualGPM()
    mem.update([_planted(q, range(k + 1), [1.0] * k + [0.3])], eps)
    assert mem.modes == [mode]
    protected = mem.protected_basis(0)
    assert _same_span(protected, q[:, :k])
    new = [9, 10, 11]
    cov = _planted(q, [0, 1] + new, [5.0, 5.0, 1.0, 0.8, 0.6])  # strongest in the old space
    down = design_down(mem.project(0, cov), 3)
    assert down.shape == (3, d)
    assert torch.allclose(down @ down.T, torch.eye(3, dtype=down.dtype) / 3, atol=1e-8)
    assert (down @ protected).abs().max() < 1e-8
    # planted: the rows span exactly the new directions
    assert _same_span(math.sqrt(3) * down.T, q[:, new])
    # without the memory, B would pick the old directions
    assert (design_down(cov, 3) @ protected).abs().max() > 0.1


def test_B_rows_beyond_rank_are_zero():
    q = _rotation(6, 4)
    down = design_down(_planted(q, [0, 1], [2.0, 1.0]), 4)
    assert torch.allclose(down[2:], torch.zeros(2, 6, dtype=down.dtype))
    assert _same_span(math.sqrt(3) * down[:2].T, q[:, :2])


# ------------------------------------------------------------------- branch and merge
def test_branch_acts_on_k_and_v_only():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 24)
    layer = KVLoRALinear(copy.deepcopy(base))
    layer.add_branch(torch.randn(3, 8))
    with torch.no_grad():
        layer.branch_A.normal_()
    x = torch.randn(5, 8)
    ref = x @ (base.weight + layer.delta_weight()).T + base.bias
    out = layer(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out[:, :8], base(x)[:, :8])
    assert not torch.allclose(out[:, 8:], base(x)[:, 8:], atol=1e-3)


def test_merged_and_unmerged_models_agree():
    torch.manual_seed(0)
    model = create_model("vit_digits_micro").eval()
    reference = copy.deepcopy(model)
    layers = add_kv_lora(model)
    for layer in layers:
        layer.add_branch(torch.linalg.qr(torch.randn(32, 4))[0].T / math.sqrt(3))
        with torch.no_grad():
            layer.branch_A.normal_(std=0.3)
    with torch.no_grad():  # independent reference: W + A B written into a plain copy
        for blk, layer in zip(reference.blocks, layers):
            blk.attn.qkv.weight[32:] += layer.branch_A @ layer.branch_B
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        unmerged, expected = model(x), reference(x)
        for layer in layers:
            layer.merge()
        merged = model(x)
    assert not torch.allclose(expected, create_model("vit_digits_micro").eval()(x), atol=1e-3)
    assert torch.allclose(unmerged, expected, atol=1e-5)
    assert torch.allclose(merged, expected, atol=1e-5)
    assert set(model.state_dict()) == set(reference.state_dict())


# ------------------------------------------------------------------- parameter counts
def test_trainable_parameter_formula_vit_b16():
    assert inflora_trainable_params(768, 12, 10, 20) == 199_700  # InfLoRA's ImageNet-R log
    import timm

    with torch.device("meta"):  # exact count without allocating ViT-B/16 weights
        model = timm.create_model("vit_base_patch16_224", num_classes=0)
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in add_kv_lora(model):
            layer.add_branch(torch.zeros(10, 768))
        heads = TaskHeads(768, 200)
        heads.add_head(range(20))
    assert count_trainable(model) + count_trainable(heads) == 199_700


def test_trainable_parameters_of_the_strategy():
    bm = digits_benchmark()
    s = _strategy(rank=3)
    s.prepare_experience(bm.train_stream[0])
    n_cls = len(bm.train_stream[0].classes_in_this_experience)
    assert count_trainable(s.model) == inflora_trainable_params(32, 2, 3, n_cls)
    trainable = {n for n, p in s.model.named_parameters() if p.requires_grad}
    assert all(n.endswith("branch_A") or n.startswith("head.heads.0") for n in trainable)


# ------------------------------------------------------------- end to end + interference
@pytest.fixture(scope="module")
def inflora_run():
    bm = digits_benchmark(n_experiences=2)
    s = _strategy()
    thresholds = []
    update = s.memory.update
    s.memory.update = lambda covs, eps: (thresholds.append(eps), update(covs, eps))
    for exp in bm.train_stream:
        s.train(exp)
    return bm, s, thresholds, s.eval(bm.test_stream)


def test_end_to_end_beats_chance(inflora_run):
    bm, s, thresholds, metrics = inflora_run
    acc = metrics["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
    assert acc > 0.3  # 10 classes: chance 0.1
    assert thresholds == pytest.approx([0.98, 0.99])  # 0.98 + 0.02 t / T, T = 2
    assert all(layer.branch_A is None for layer in s.layers)  # merged: no extra inference cost
    assert len(s.model.head.heads) == 2


def test_next_B_is_orthogonal_to_memory_of_a_trained_model(inflora_run):
    bm, s, _, _ = inflora_run
    covs = s.input_covariances(bm.train_stream[0])  # old data: mostly inside the memory
    for i in range(len(s.layers)):
        down, m = s.design_branch(i, covs[i]), s.memory.protected_basis(i)
        assert m.shape[1] >= 1 and down.abs().sum() > 0
        assert (down @ m).abs().max() < 1e-8
        assert (design_down(covs[i], s.rank) @ m).abs().max() > 0.1  # would overlap unprojected


def _drift_of_old_outputs(inflora: bool) -> float:
    """Tiny planted data: old-task tokens lie in a 4-dim subspace S0 plus a weaker fifth
    direction (the tail GPM's threshold leaves out) and 1% noise; new-task tokens lie in
    S0 + S1. Train A_1 on the new task through one adapted qkv layer, with B_1 designed by
    InfLoRA (DualGPM memory of the old task) or random (plain LoRA), and return the
    relative change of the layer's k, v outputs on old-task tokens."""
    d, g = 16, torch.Generator().manual_seed(0)
    q = _rotation(d, 5).float()
    s0, s1, tail = q[:, :4], q[:, 4:8], q[:, 8:9]
    old = (torch.randn(512, 4, generator=g) @ s0.T + 0.7 * torch.randn(512, 1, generator=g) @ tail.T
           + 0.01 * torch.randn(512, d, generator=g))
    new = (torch.randn(512, 4, generator=g) @ s0.T + torch.randn(512, 4, generator=g) @ s1.T
           + 0.01 * torch.randn(512, d, generator=g))
    layer = KVLoRALinear(torch.nn.Linear(d, 3 * d))
    mem = DualGPM()
    with InputCovariance([layer]) as rec:
        layer(old)
    mem.update(rec.covariances(), dualgpm_threshold(0, 2))
    m = mem.protected_basis(0).float()
    assert m.shape[1] == 4 and (s0 - m @ (m.T @ s0)).norm() < 0.2  # memory ~ S0, tail left out
    with InputCovariance([layer]) as rec:
        layer(new)
    if inflora:
        down = design_down(mem.project(0, rec.covariances()[0]), 4)
    else:
        down = torch.linalg.qr(torch.randn(d, 4, generator=g))[0].T / math.sqrt(3)
    with torch.no_grad():
        before = layer(old)[:, d:]
        target = layer(new)[:, d:] + torch.randn(512, 2 * d, generator=g)
    opt = torch.optim.Adam([layer.add_branch(down.float())], lr=1e-2)
    for _ in range(200):
        loss = F.mse_loss(layer(new)[:, d:], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((layer(old)[:, d:] - before).norm() / before.norm())


def test_old_task_outputs_move_far_less_than_with_plain_lora():
    inflora, plain = _drift_of_old_outputs(True), _drift_of_old_outputs(False)
    assert plain > 0.05  # plain LoRA fine-tuning does move them
    assert inflora < 0.05 * plain


def _round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_resume_rebuilds_the_strategy(inflora_run):
    bm, s, _, _ = inflora_run
    fresh = _strategy()
    fresh.load_state_dict(_round_trip(s.state_dict()))
    fresh.model.load_state_dict(_round_trip(s.model.state_dict()))
    x = torch.stack([bm.test_stream[0].dataset[i][0] for i in range(20)])
    with torch.no_grad():
        assert torch.equal(fresh.model.eval()(x), s.model.eval()(x))
    assert fresh.memory.modes == s.memory.modes and fresh.tasks_done == 2
    assert all(torch.equal(a, b) for a, b in zip(fresh.memory.bases, s.memory.bases))
    assert count_trainable(fresh.model) == 0
