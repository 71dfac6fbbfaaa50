"""``MemoryWriter``: byte quotas split as the documented rule says, selection within the
quotas, top-k and Gumbel top-k token choice on planted scores, and a write that stores the
planted tokens of the chosen samples byte for byte."""
import warnings

import pytest
import torch

from avalanche_cts.memory.items import ClassItems
from avalanche_cts.memory.store import TokenStore
from avalanche_cts.memory.writer import MemoryWriter
from avalanche_cts.models import get_adapter
from avalanche_cts.scorers.base import TokenScorer

T, V, K = 16, 4, 4  # vit_digits_micro: 16 tokens of 2x2 grey pixels; t = 0.25 keeps 4
RECORD = K * V + K * 2 + 2  # uint8 values, int16 positions and length
HEADER = 16


class PlantedScorer(TokenScorer):
    """Every image scores position p as ``pattern[p]``."""

    name = "planted"

    def __init__(self, pattern):
        self.pattern = torch.as_tensor(pattern, dtype=torch.float32)

    def score(self, model, images, targets=None):
        return self.pattern.expand(len(images), -1).clone()


def _admitted(micro_vit, data, budget, **kw):
    """A store of budget ``budget`` bytes (t = 0.25) that has seen ``data`` as experience 0."""
    store = TokenStore(budget, None, 0.25, **kw)
    store.admit(get_adapter(micro_vit), data, ClassItems(), 0, None, "uint8")
    return store


def _quotas(micro_vit, budget, members, held=None):
    """Quotas of groups ``(c, 0)`` with ``members[c]`` new samples and ``held[c]`` records."""
    store = _admitted(micro_vit, [(torch.zeros(1, 8, 8), 0)], budget)
    for c, n in enumerate(held or [0] * len(members)):
        store.group((c, 0)).append([torch.zeros(K, V, dtype=torch.uint8)] * n,
                                   [torch.arange(K)] * n, [1.0] * n)
    return store, MemoryWriter().quotas(
        store, {(c, 0): torch.arange(n) for c, n in enumerate(members)})


@pytest.mark.parametrize("members, held, records, expected", [
    ([10, 10, 10], None, 9, [3, 3, 3]),
    ([10, 10, 10], None, 8, [3, 3, 2]),  # the spare record goes to the first group
    ([10, 10, 1], None, 7, [3, 3, 1]),  # a group with one sample leaves the rest to the others
    ([0, 10, 10], [2, 0, 0], 9, [2, 4, 3]),  # an old group is capped by the records it holds
    ([10, 10], None, 0, [0, 0]),
])
def test_quotas_are_equal_shares_of_whole_records(micro_vit, members, held, records, expected):
    groups = len(members)
    budget = groups * HEADER + records * RECORD + RECORD - 1  # a byte short of one more record
    store, quotas = _quotas(micro_vit, budget, members, held)
    assert store.record_bytes() == RECORD
    assert quotas == {(c, 0): HEADER + n * RECORD for c, n in enumerate(expected)}
    assert sum(quotas.values()) <= budget


def test_choose_takes_as_many_members_as_fit(micro_vit):
    members = {(0, 0): torch.arange(0, 20, 2), (1, 0): torch.arange(1, 20, 2)}
    store = _admitted(micro_vit, [(torch.zeros(1, 8, 8), 0)], 2 * HEADER + 5 * RECORD)
    for key in members:
        store.group(key)
    quotas = {(0, 0): HEADER + 3 * RECORD, (1, 0): HEADER + 2 * RECORD + RECORD - 1}
    chosen = MemoryWriter(seed=1).choose(store, sorted(members), members, quotas, None)
    assert [(key, len(idx)) for key, idx, _ in chosen] == [((0, 0), 3), ((1, 0), 2)]
    for key, idx, weights in chosen:
        assert set(idx.tolist()) <= set(members[key].tolist())
        assert len(set(idx.tolist())) == len(idx) == len(weights)


def _planted_scores(rows, seed=0):
    """``(rows, T)`` scores with distinct values and the positions sorted by score, best first."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.stack([torch.randperm(T, generator=g) for _ in range(rows)]).float() * 0.5
    order = [sorted(range(T), key=lambda p: -float(s[p])) for s in scores]
    return scores, torch.tensor(order)


def test_top_k_keeps_the_highest_scores_in_order():
    scores, order = _planted_scores(6)
    chosen = MemoryWriter(token_choice="topk").choose_tokens(scores, K)
    assert chosen.shape == (6, K) and torch.equal(chosen, order[:, :K])


def test_gumbel_at_a_low_temperature_is_top_k():
    scores, order = _planted_scores(50, seed=3)
    chosen = MemoryWriter(token_choice="gumbel", temperature=1e-4).choose_tokens(scores, K)
    assert torch.equal(chosen, order[:, :K])


def test_gumbel_draws_favour_planted_dominant_scores():
    rows, planted = 2000, [3, 11]
    scores = torch.zeros(rows, T)
    scores[:, planted] = 10.0
    chosen = MemoryWriter(token_choice="gumbel", temperature=1.0, seed=0).choose_tokens(scores, 2)
    hits = torch.isin(chosen, torch.tensor(planted)).float().mean()
    # standardised scores: planted z = 2.56, others -0.37, so the first draw is planted with
    # probability 2e^2.56 / (2e^2.56 + 14e^-0.37) = 0.73, the second with about 0.62 (uniform
    # choice: 2/16; top-k: 1)
    assert 0.55 < hits < 0.8
    assert len(set(map(tuple, chosen.tolist()))) > 2  # a draw, not a fixed choice


def test_write_stores_the_planted_tokens_of_chosen_samples(micro_vit, digits_benchmark):
    data = digits_benchmark.train_stream[0].dataset
    pattern = torch.randperm(T, generator=torch.Generator().manual_seed(5)).float()
    best = pattern.argsort(descending=True)[:K]
    store = _admitted(micro_vit, data, 2 * HEADER + 7 * RECORD + 3, keep_sources=True)
    targets, tasks = ClassItems().keys(data)
    MemoryWriter(scorer=PlantedScorer(pattern)).write(
        store, micro_vit, "cpu", data, targets, tasks, 0)
    assert sorted(len(g) for g in store.groups.values()) == [3, 4]
    assert store.nbytes == 2 * HEADER + 7 * RECORD <= store.budget_bytes
    for (label, _), g in store.groups.items():
        for i in range(len(g)):
            values, positions = g.record(i)
            assert torch.equal(positions.long(), best)
            exp, j = g.sources[i].tolist()
            image, y = data[j][0], int(data[j][1])
            assert exp == 0 and y == label
            rows, cols = positions.long() // 4, positions.long() % 4
            pixels = torch.stack([image[0, 2 * r:2 * r + 2, 2 * c:2 * c + 2].flatten()
                                  for r, c in zip(rows.tolist(), cols.tolist())])
            assert torch.equal(values, (pixels * 255).round().to(torch.uint8))


def test_write_shrinks_old_groups_keeping_their_first_records(micro_vit, digits_benchmark):
    exps = digits_benchmark.train_stream
    store = _admitted(micro_vit, exps[0].dataset, 4 * HEADER + 8 * RECORD)
    writer = MemoryWriter(scorer=PlantedScorer(torch.arange(T)))
    for e in (0, 1):
        data = exps[e].dataset
        if e:
            store.admit(get_adapter(micro_vit), data, ClassItems(), e, None, "uint8")
            before = {k: g.values.clone() for k, g in store.groups.items()}
        writer.write(store, micro_vit, "cpu", data, *ClassItems().keys(data), e)
    assert [len(g) for g in store.groups.values()] == [2, 2, 2, 2]
    for key, values in before.items():  # 4 records each before, the first 2 kept
        assert torch.equal(store.groups[key].values, values[:2 * K])
    assert store.nbytes == 4 * HEADER + 8 * RECORD


@pytest.mark.parametrize("records, warned", [(1, True), (2, False)])
def test_groups_left_empty_are_warned_about(micro_vit, digits_benchmark, records, warned):
    data = digits_benchmark.train_stream[0].dataset
    store = _admitted(micro_vit, data, 2 * HEADER + records * RECORD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MemoryWriter().write(store, micro_vit, "cpu", data, *ClassItems().keys(data), 0)
    messages = [str(w.message) for w in caught if "hold no record" in str(w.message)]
    assert len(messages) == int(warned)
    if warned:
        assert "1 of 2 (class, task) groups hold no record after experience 0" in messages[0]
        assert f"a budget of {2 * (RECORD + HEADER)} B holds one record per group" in messages[0]
    assert len(store.groups) == records  # the empty group is dropped


def test_compact_choice_keeps_the_planted_object_not_the_brighter_lone_token():
    """Rows of a 4 x 4 grid with a planted 2 x 2 object block and a brighter lone token away
    from it: ``compact`` keeps 3 of the block's tokens and its nearest neighbour, never the
    lone token; top-k keeps the lone token first."""
    scores, block, lone = torch.zeros(6, 4, 4), [], []
    for i in range(6):
        r = i % 3  # block rows r, r + 1; columns 0, 1
        scores[i, r:r + 2, 0:2] = 1.0 + 0.1 * i
        lr = 0 if r == 2 else 3
        scores[i, lr, 3] = 2.0
        block.append({a * 4 + b for a in (r, r + 1) for b in (0, 1)})
        lone.append(lr * 4 + 3)
    scores = scores.reshape(6, T)
    compact = MemoryWriter(token_choice="compact").choose_tokens(scores, 4).tolist()
    assert all(len(block[i] & set(row)) >= 3 and lone[i] not in row for i, row in enumerate(compact))
    top = MemoryWriter(token_choice="topk").choose_tokens(scores, 4)
    assert top[:, 0].tolist() == lone
