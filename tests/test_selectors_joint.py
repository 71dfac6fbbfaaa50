"""Single-stage joint selector and the Avalanche ``ExemplarsSelectionStrategy`` adapter."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from avalanche_cts.models import create_model
from avalanche_cts.selectors import (
    ClassFeatures,
    HerdingSelector,
    JointGradSelector,
    SelectionStrategyAdapter,
    get_selector,
    token_relevance,
)

torch.set_num_threads(1)
T, P = 16, 2  # vit_digits_micro: 8x8 images, 2x2 patches
TOKEN, RECORD = 5, 3  # bytes


def tiny_model(num_classes=4, seed=0):
    torch.manual_seed(seed)
    return create_model("vit_digits_micro", num_classes=num_classes)


def tiny_images(n=48, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, :2, :4] = 0  # tokens 0 and 1 are blank
    return x, torch.arange(n) % classes


def reference_relevance(model, x, y):
    """Per-sample input x gradient of the log-odds margin, summed per 2x2 patch."""
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        z = model(xi)[0]
        others = torch.cat([z[: y[i]], z[y[i] + 1 :]])
        (g,) = torch.autograd.grad(z[y[i]] - torch.logsumexp(others, 0), xi)
        rows.append((F.avg_pool2d(xi.detach() * g, P) * P * P).flatten())
    return torch.stack(rows)


def test_token_relevance_matches_per_sample_gradients_and_leaves_no_trace():
    model = tiny_model()
    model.train()
    model.blocks[0].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    x, y = tiny_images(n=10)
    pre, logits, rel = token_relevance(model, x, y, batch_size=4)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(rel, reference_relevance(model, x, y), atol=1e-6, rtol=1e-4)
    assert pre.shape == (10, model.embed_dim) and rel.shape == (10, T)
    assert (rel[:, :2] == 0).all()  # blank patches carry no relevance


@pytest.mark.parametrize("budget", [0, 7, 60, 300, 1000, 2500])
def test_joint_selector_respects_byte_budget(budget):
    model = tiny_model()
    x, y = tiny_images()
    records = JointGradSelector().select_joint(model, x, y, budget, TOKEN, RECORD)
    used = sum(RECORD + len(p) * TOKEN for _, p in records)
    assert used <= budget
    samples = [i for i, _ in records]
    assert len(set(samples)) == len(samples) and all(0 <= i < len(x) for i in samples)
    for _, pos in records:
        assert pos.dtype == torch.int64 and pos.dim() == 1 and len(pos) >= 1
        assert len(set(pos.tolist())) == len(pos) and 0 <= pos.min() and pos.max() < T
    full = len(x) * (RECORD + T * TOKEN)
    if budget >= full:
        assert used == full
    elif budget >= RECORD + TOKEN:
        assert budget - used < TOKEN  # filled up to less than one token
    if budget in (300, 1000):  # class balance: bytes per class within one large record
        per_class = torch.zeros(4)
        for i, pos in records:
            per_class[y[i]] += RECORD + len(pos) * TOKEN
        assert per_class.max() - per_class.min() <= 2 * (RECORD + T * TOKEN)


def test_joint_selector_tokens_follow_relevance_and_counts_vary():
    model = tiny_model()
    x, y = tiny_images()
    sel = JointGradSelector(token_retention=0.25, spread=4)
    records = sel.select_joint(model, x, y, 1000, TOKEN, RECORD)
    rel = reference_relevance(model.eval(), x, y)
    for i, pos in records:
        ranked = rel[i].argsort(descending=True, stable=True)
        assert set(pos.tolist()) == set(ranked[: len(pos)].tolist())
        assert (rel[i, pos][:-1] >= rel[i, pos][1:] - 1e-9).all()  # most relevant first
    counts = torch.tensor([len(p) for _, p in records])
    assert counts.min() >= 1 and counts.max() <= T and len(counts.unique()) > 1
    again = sel.select_joint(model, x, y, 1000, TOKEN, RECORD)
    assert [(i, p.tolist()) for i, p in again] == [(i, p.tolist()) for i, p in records]


def test_joint_selector_is_registered_and_delegates_select():
    sel = get_selector("joint_grad", sample_selector="herding")
    assert sel.joint and sel.needs_features
    assert not get_selector("gradmatch").joint
    h = torch.randn(20, 6)
    f = ClassFeatures(h, torch.randn(20, 4), torch.zeros(20, dtype=torch.long))
    expected = HerdingSelector().select(5, 20, f).indices
    assert sel.select(5, 20, f).indices.tolist() == expected.tolist()


# ------------------------------------------------------------------ Avalanche
class LabelledTensors(TensorDataset):
    @property
    def targets(self):
        return self.tensors[1].tolist()


def tiny_benchmark():
    from avalanche.benchmarks import nc_benchmark

    x, y = tiny_images(n=40, classes=4, seed=1)
    xt, yt = tiny_images(n=8, classes=4, seed=2)
    return nc_benchmark(LabelledTensors(x, y), LabelledTensors(xt, yt), n_experiences=2,
                        task_labels=False, seed=0, fixed_class_order=[0, 1, 2, 3])


def reference_herding(feats, k):
    """Brute-force iCaRL herding: try every candidate, keep the best running mean."""
    phi = F.normalize(feats, dim=1)
    mu, chosen = phi.mean(0), []
    for _ in range(k):
        dist = [float("inf") if j in chosen else (phi[chosen + [j]].mean(0) - mu).norm().item()
                for j in range(len(phi))]
        chosen.append(min(range(len(phi)), key=dist.__getitem__))
    return chosen


def test_adapter_inside_avalanche_parametric_buffer():
    from avalanche.training.storage_policy import ParametricBuffer

    bench = tiny_benchmark()
    model = tiny_model()
    model.train()
    buffer = ParametricBuffer(max_size=8, groupby="class",
                              selection_strategy=SelectionStrategyAdapter("herding"))
    for exp in bench.train_stream:
        buffer.post_adapt(SimpleNamespace(model=model, device="cpu", experience=exp), exp)
    assert model.training and all(p.grad is None for p in model.parameters())
    kept = buffer.buffer
    assert len(kept) == 8 and sorted(kept.targets) == [0, 0, 1, 1, 2, 2, 3, 3]
    x_all, y_all = tiny_images(n=40, classes=4, seed=1)  # the benchmark's training data
    model.eval()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x_all), pre_logits=True)
    for c in range(4):
        members = (y_all == c).nonzero()[:, 0]
        expected = members[reference_herding(feats[members], 2)]
        got = [kept[i][0] for i in range(len(kept)) if kept[i][1] == c]
        assert all(torch.equal(g, x_all[e]) for g, e in zip(got, expected))


@pytest.mark.parametrize("name, num_selected",
                         [("gradmatch", None), ("craig", 3), ("random", None)])
def test_adapter_returns_class_balanced_permutation(name, num_selected):
    bench = tiny_benchmark()
    data = bench.train_stream[0].dataset
    model = tiny_model()
    agent = SimpleNamespace(model=model, device="cpu")
    adapter = SelectionStrategyAdapter(name, num_selected=num_selected)
    order = adapter.make_sorted_indices(agent, data)
    assert sorted(order) == list(range(len(data)))
    targets = list(data.targets)
    for m in range(2, len(order) + 1, 2):  # two classes of equal size: prefixes alternate
        assert sum(targets[i] == targets[order[0]] for i in order[:m]) == m // 2
