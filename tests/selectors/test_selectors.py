"""Sample selectors: gradient kernel, herding, CRAIG, GradMatch.

Every expected value comes from an independent computation (autograd gradients,
brute force, re-solved least squares, or a hand-worked example).
"""
import itertools
import math

import pytest
import torch
from torch import nn

from avalanche_cts.selectors import (
    ClassFeatures,
    CraigSelector,
    GradientFeatures,
    GradMatchSelector,
    HerdingSelector,
    RandomSelector,
    facility_location,
    get_selector,
    omp_select,
)

torch.set_num_threads(1)


def make_features(n=12, d=5, c=4, seed=0, target=None):
    """Random pre-logits, a random linear head, and its logits (float64)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    head = nn.Linear(d, c).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(c, d, generator=g))
        head.bias.copy_(torch.randn(c, generator=g))
    y = torch.randint(c, (n,), generator=g) if target is None else torch.full((n,), target)
    return h, head, y


def explicit_gradients(h, head, y, block=None):
    """(n, C(D+1)) per-sample CE gradients w.r.t. (bias, weight) by autograd.

    ``block=c`` keeps only the rows of class c: ``[∂b_c, ∂W_c]``.
    """
    rows = []
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(head(h[i : i + 1]), y[i : i + 1])
        gb, gw = torch.autograd.grad(loss, [head.bias, head.weight])
        if block is not None:
            gb, gw = gb[block : block + 1], gw[block : block + 1]
        rows.append(torch.cat([gb.flatten(), gw.flatten()]))
    return torch.stack(rows)


def class_features(h, head, y):
    with torch.no_grad():
        return ClassFeatures(h, head(h), y)


# ----------------------------------------------------------------------- kernel
@pytest.mark.parametrize("mode", ["last_layer", "class_block", "bias"])
def test_kernel_identity_equals_explicit_gradients(mode):
    target = 2 if mode == "class_block" else None
    h, head, y = make_features(n=9, target=target)
    a = explicit_gradients(h, head, y, block=target)
    if mode == "bias":
        a = a[:, : head.out_features]
    g = GradientFeatures.from_class_features(class_features(h, head, y), mode)
    assert g.dim == a.shape[1]
    torch.testing.assert_close(g.kernel(), a @ a.T)
    block = g.kernel(slice(2, 5), torch.tensor([0, 7]))
    torch.testing.assert_close(block, (a @ a.T)[2:5][:, [0, 7]])
    torch.testing.assert_close(g.diag(), a.square().sum(1))
    torch.testing.assert_close(g.distances(), torch.cdist(a, a), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(g.distances(squared=True), torch.cdist(a, a).square(),
                               atol=1e-6, rtol=1e-6)
    c, bb = g.target_correlations()
    b = a.sum(0)
    torch.testing.assert_close(c, a @ b)
    torch.testing.assert_close(bb, b @ b)


def test_kernel_float32_tolerance():
    h, head, y = make_features(n=30, d=64, c=10)
    a = explicit_gradients(h, head, y)
    f = class_features(h.float(), head.float(), y)
    g = GradientFeatures.from_class_features(f)
    assert g.kernel().dtype == torch.float32
    torch.testing.assert_close(g.kernel().double(), a @ a.T, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------- herding
def test_herding_hand_computed_order():
    # unit vectors a=(1,0), b=(.6,.8), c=(0,1), d=(-.6,.8); mean mu=(.25,.65)
    # t=1: |x-mu|^2 = a .985, b .145, c .185, d .745          -> b
    # t=2: |(b+x)/2-mu|^2 = a .365, c .065, d .085             -> c
    # t=3: |(b+c+x)/3-mu|^2 = a .0828, d .1094                 -> a, then d
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])
    scaled = x * torch.tensor([[2.0], [0.5], [3.0], [1.0]])  # L2 normalisation removes scale
    for feats in (x, scaled):
        f = ClassFeatures(feats, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        sel = HerdingSelector().select(4, 4, f)
        assert sel.indices.tolist() == [1, 2, 0, 3]
        assert sel.weights.tolist() == [1.0] * 4


def test_herding_mean_approaches_class_mean():
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(1)) + 2
    f = ClassFeatures(x, torch.zeros(400, 3), torch.zeros(400, dtype=torch.long))
    idx = HerdingSelector().select(40, 400, f).indices
    phi = nn.functional.normalize(x, dim=1)
    mu = phi.mean(0)
    errs = [(phi[idx[:m]].mean(0) - mu).norm().item() for m in (1, 5, 40)]
    rand = (phi[:40].mean(0) - mu).norm().item()
    assert errs[0] > errs[1] > errs[2] and errs[2] < rand / 3


# ------------------------------------------------------------- facility location
def dense_rows(dist):
    return lambda idx: dist[idx]


def fl_value(sim, subset):
    return sim[:, list(subset)].max(1).values.sum().item() if subset else 0.0


def test_lazy_and_stochastic_full_equal_naive_order():
    h, head, y = make_features(n=150, d=8, c=5, seed=3)
    g = GradientFeatures.from_class_features(class_features(h, head, y))
    dist = g.distances()
    bound = float(dist.max())
    rows, dt = dense_rows(dist), dist.dtype
    naive, wn = facility_location(rows, 150, 40, bound, method="naive", dtype=dt)
    lazy, wl = facility_location(rows, 150, 40, bound, method="lazy", batch=4, dtype=dt)
    # epsilon so small that every remaining candidate is sampled: plain greedy
    sto, ws = facility_location(rows, 150, 40, bound, method="stochastic", epsilon=1e-300, dtype=dt)
    assert lazy.tolist() == naive.tolist() == sto.tolist()
    assert torch.equal(wn, wl) and torch.equal(wn, ws)
    assert len(set(naive.tolist())) == 40 and wn.sum() == 150
    # weights are the cluster sizes of the chosen points
    nearest = dist[:, naive].argmin(1)
    assert torch.equal(wn, torch.bincount(nearest, minlength=40).float())


def test_greedy_facility_location_reaches_1_minus_1_over_e():
    for seed in range(4):
        h, head, y = make_features(n=11, d=3, c=3, seed=seed)
        a = explicit_gradients(h, head, y)
        dist = torch.cdist(a, a)
        sim = dist.max() - dist
        for k in (2, 3, 4):
            best = max(fl_value(sim, s) for s in itertools.combinations(range(11), k))
            sel = CraigSelector(dtype=torch.float64).select(k, 11, class_features(h, head, y))
            assert fl_value(sim, sel.indices.tolist()) >= (1 - 1 / math.e) * best - 1e-9
            assert sel.weights.sum() == 11


def test_craig_dense_streamed_and_truncation_agree():
    h, head, y = make_features(n=120, d=6, c=4, seed=5)
    f = class_features(h, head, y)
    dense = CraigSelector(dtype=torch.float64).select(30, 120, f)
    streamed = CraigSelector(method="lazy", max_matrix_bytes=0, dtype=torch.float64)
    streamed = streamed.select(30, 120, f)
    assert dense.indices.tolist() == streamed.indices.tolist()
    short = CraigSelector(dtype=torch.float64).select(12, 120, f)
    assert short.indices.tolist() == dense.indices[:12].tolist()
    sto = CraigSelector(method="stochastic", seed=1).select(30, 120, f)
    assert len(set(sto.indices.tolist())) == 30 and sto.weights.sum() == 120
    everyone = CraigSelector(features="bias").select(200, 120, f).indices
    assert sorted(everyone.tolist()) == list(range(120))


# --------------------------------------------------------------------- GradMatch
def reference_omp(a, k, lam):
    """OMP re-solving the ridge system from the explicit gradients at every step, then the
    non-negative fit by enumerating active sets (KKT), all in float64."""
    b = a.sum(0)
    chosen = []
    w = torch.zeros(0, dtype=a.dtype)
    while len(chosen) < k:
        r = b - a[chosen].T @ w
        p = a @ r
        p[chosen] = -math.inf
        j = int(p.argmax())
        if p[j] <= 0:
            break
        chosen.append(j)
        s = a[chosen]
        w = torch.linalg.solve(s @ s.T + lam * torch.eye(len(chosen), dtype=a.dtype), s @ b)
    s = a[chosen]
    q, c = s @ s.T + lam * torch.eye(len(chosen), dtype=a.dtype), s @ b
    best, best_w = math.inf, None
    for mask in itertools.product([0, 1], repeat=len(chosen)):
        on = [i for i, m in enumerate(mask) if m]
        v = torch.zeros(len(chosen), dtype=a.dtype)
        if on:
            v[on] = torch.linalg.solve(q[on][:, on], c[on])
        if (v >= -1e-12).all():
            obj = float(v @ q @ v - 2 * v @ c)
            if obj < best:
                best, best_w = obj, v.clamp_min(0)
    return chosen, best_w


def objective(a, idx, w, lam):
    b = a.sum(0)
    return float((a[idx].T @ w - b).square().sum() + lam * w.square().sum())


@pytest.mark.parametrize(
    "n, d, c, k, lam, seed",
    [(25, 4, 3, 6, 0.5, 0), (25, 4, 3, 6, 0.5, 1), (25, 4, 3, 6, 0.01, 2),
     (30, 3, 3, 10, 0.01, 3)],  # the last one needs the non-negative re-fit
)
def test_batch_omp_equals_resolved_reference(n, d, c, k, lam, seed):
    h, head, y = make_features(n=n, d=d, c=c, seed=seed)
    a = explicit_gradients(h, head, y)
    g = GradientFeatures.from_class_features(class_features(h, head, y))
    res = omp_select(g, k, lam=lam)
    idx, w = reference_omp(a, k, lam)
    assert res.order.tolist() == idx
    torch.testing.assert_close(res.weights, w, atol=1e-7, rtol=1e-6)
    if seed == 3:
        assert (w == 0).any()


def test_gradmatch_weights_unique_and_residual_never_grows():
    h, head, y = make_features(n=80, d=6, c=5, seed=7, target=1)
    a = explicit_gradients(h, head, y)
    f = class_features(h, head, y)
    objs = []
    for k in range(1, 25):
        sel = GradMatchSelector().select(k, 80, f)
        assert len(set(sel.indices.tolist())) == k == len(sel.weights)
        assert (sel.weights >= 0).all() and sel.weights.dtype == torch.float32
        objs.append(objective(a, sel.indices, sel.weights.double(), 0.5))
    assert all(o2 <= o1 * (1 + 1e-6) for o1, o2 in zip(objs, objs[1:]))
    assert objs[-1] < 0.2 * float(a.sum(0).square().sum())
    res = omp_select(GradientFeatures.from_class_features(f), 24)
    assert (res.objective[1:] <= res.objective[:-1] + 1e-9).all()


def test_omp_tolerance_stops_at_target_residual():
    h, head, y = make_features(n=60, d=5, c=4, seed=6, target=3)
    a = explicit_gradients(h, head, y)
    g = GradientFeatures.from_class_features(class_features(h, head, y))
    full = omp_select(g, 30, lam=0.5)
    res = omp_select(g, 30, lam=0.5, tol=0.3)
    assert 0 < len(res.order) < len(full.order)
    assert res.order.tolist() == full.order[: len(res.order)].tolist()
    bb = float(a.sum(0).square().sum())
    assert res.objective[-1] <= 0.09 * bb < res.objective[-2]  # first step below tol²·‖b‖²


def test_gradmatch_underfilled_budget_filled_at_random():
    h, head, y = make_features(n=40, d=3, c=3, seed=2)
    f = class_features(h, head, y)
    res = omp_select(GradientFeatures.from_class_features(f), 40)
    assert len(res.order) < 40  # stops once no atom correlates positively
    sel = GradMatchSelector(seed=0).select(40, 40, f)
    assert sorted(sel.indices.tolist()) == list(range(40))
    assert sel.indices[: len(res.order)].tolist() == res.order.tolist()
    fill = sel.weights[len(res.order):]
    torch.testing.assert_close(fill, torch.full_like(fill, float(res.weights.mean())))


# ------------------------------------------------------------------ common rules
@pytest.mark.parametrize("name", ["random", "herding", "craig", "gradmatch"])
def test_registry_and_prefix_property(name):
    h, head, y = make_features(n=60, d=6, c=4, seed=4, target=0)
    f = class_features(h, head, y)
    big = get_selector(name).select(20, 60, f)
    assert big.indices.dtype == torch.int64 and big.weights.dtype == torch.float32
    assert len(set(big.indices.tolist())) == 20
    assert 0 <= big.indices.min() and big.indices.max() < 60
    assert get_selector(name).select(0, 60, f).indices.numel() == 0
    assert get_selector(name).select(7, 60, f).indices.tolist() == big.indices[:7].tolist()


def test_feature_selectors_reject_missing_features():
    with pytest.raises(ValueError):
        CraigSelector().select(3, 10, None)
    h, head, y = make_features(n=10)
    with pytest.raises(ValueError):
        GradMatchSelector().select(3, 11, class_features(h, head, y))
    short, long = RandomSelector(seed=3).select(4, 10), RandomSelector(seed=3).select(9, 10)
    assert short.indices.tolist() == long.indices[:4].tolist()
