"""``TokenStore``: bytes counted from the documented record layout, the budget, experience
ids, shrinking by priority, class-balanced ``keep_records`` and a checked state round trip."""
import copy
from types import SimpleNamespace

import pytest
import torch

from avalanche_cts.memory.items import ClassItems, TextItems
from avalanche_cts.memory.store import TokenStore
from avalanche_cts.models import get_adapter
from avalanche_cts.models.blip_text import TextSpec, VLCollator

T, V = 16, 4  # vit_digits_micro: (1, 8, 8) images, a 4x4 grid of 2x2 grey tokens
HEADER = 16  # label and task id of a group, two int64
POS, LEN, WEIGHT = 2, 2, 4  # int16 position per token of a partial record, int16 length, float32


def _record(k, weighted=False):
    """Bytes of one uint8 record keeping ``k`` of the T tokens (records.py's layout)."""
    return k * V + (k * POS if k < T else 0) + LEN + (WEIGHT if weighted else 0)


def _data(n, label=0, seed=0):
    """``n`` items ``(image (1, 8, 8) of exact 8-bit values, label, task 0)``."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (1, 8, 8), generator=g) / 255, label, 0) for _ in range(n)]


def _store(micro_vit, n=10, experience=0, **kw):
    kw = dict(dict(fixed_bytes=10_000, budget_fraction=None, token_retention=0.25), **kw)
    store = TokenStore(**kw)
    store.admit(get_adapter(micro_vit), _data(n), ClassItems(), experience, None, "uint8")
    return store


def _fill(store, key, ks, first=0):
    """Append records keeping ``ks[i]`` tokens; every value of record i is ``first + i``."""
    g = store.group(key)
    values = [torch.full((k, V), first + i, dtype=torch.uint8) for i, k in enumerate(ks)]
    positions = [torch.arange(T).roll(3 * (first + i) + 1)[:k] for i, k in enumerate(ks)]
    g.append(values, positions, [float(first + i) for i in range(len(ks))])
    return g


def _record_ids(group):
    return [int(group.record(i)[0][0, 0]) for i in range(len(group))]


def test_sizes_follow_the_record_layout(micro_vit):
    store = _store(micro_vit)
    assert store.tokens_per_sample == round(0.25 * T) == 4
    assert store.token_bytes() == V + POS
    assert store.sample_bytes() == 1 * 8 * 8
    for k in (1, 4, T - 1, T):
        assert store.record_bytes(k) == _record(k)
    assert store.record_bytes() == _record(4) == 4 * 4 + 4 * 2 + 2
    assert store.record_bytes(T) == T * V + LEN  # a whole record stores no positions
    weighted = _store(micro_vit, weighted=True)
    assert weighted.record_bytes() == _record(4, weighted=True)


def test_sizes_need_a_layout():
    store = TokenStore(1000, None, 0.5)
    with pytest.raises(RuntimeError, match="seen no data yet"):
        store.record_bytes()


@pytest.mark.parametrize("weighted", [False, True])
def test_nbytes_is_headers_plus_records(micro_vit, weighted):
    store = _store(micro_vit, weighted=weighted)
    a = [4, 4, T, 1]
    b = [2, T - 1]
    _fill(store, (0, 0), a)
    _fill(store, (3, 1), b)
    expected = 2 * HEADER + sum(_record(k, weighted) for k in a + b)
    assert store.nbytes == expected
    assert store.num_records == 6 and store.num_tokens == sum(a + b)
    assert store.groups[(0, 0)].record_nbytes().tolist() == [_record(k, weighted) for k in a]


def test_budget_is_fixed_or_a_fraction_of_the_bytes_seen(micro_vit):
    assert _store(micro_vit, n=30).budget_bytes == 10_000
    store = _store(micro_vit, n=30, fixed_bytes=None, budget_fraction=0.1)
    assert store.budget_bytes == int(0.1 * 30 * 64)
    store.admit(get_adapter(micro_vit), _data(17), ClassItems(), 1, None, "uint8")
    assert store.seen_samples == 47 and store.budget_bytes == int(0.1 * 47 * 64)


def test_new_experience_refuses_a_repeated_id(micro_vit):
    store = _store(micro_vit, experience=3)
    assert store.experience_ids == [3]
    assert store.new_experience(SimpleNamespace(current_experience=4)) == 4
    assert store.new_experience(SimpleNamespace()) == 1  # no id: the count stored so far
    with pytest.raises(ValueError, match=r"experience 3 is already in the memory .*stored: \[3\]"):
        store.new_experience(SimpleNamespace(current_experience=3))


def test_admit_refuses_other_items_than_before_and_non_image_items(micro_vit):
    store = _store(micro_vit)
    text = TextItems(VLCollator(TextSpec(pad=0, cls=101, sep=102, bos=30522), "vqa"))
    with pytest.raises(TypeError, match="holds ClassItems records; this experience has TextItems"):
        store.admit(get_adapter(micro_vit), _data(2), text, 1, None, "uint8")
    with pytest.raises(ValueError, match="do not fit the model"):
        store.admit(get_adapter(micro_vit), [(torch.zeros(1, 6, 6), 0)], ClassItems(), 1, None,
                    "uint8")
    with pytest.raises(TypeError, match=r"\(C, H, W\) float image tensor"):
        store.admit(get_adapter(micro_vit), [(torch.zeros(8, 8), 0)], ClassItems(), 1, None, None)
    assert store.experience_ids == [0] and store.seen_samples == 10  # nothing counted


def test_shrink_keeps_the_first_records_that_fit(micro_vit):
    store = _store(micro_vit)
    ks = [4, T, 1, 4, 2]
    g = _fill(store, (1, 0), ks)
    full = g.nbytes
    store.shrink((1, 0), full)  # fits: unchanged
    assert _record_ids(g) == [0, 1, 2, 3, 4]
    three = HEADER + sum(_record(k) for k in ks[:3])
    store.shrink((1, 0), three + _record(ks[3]) - 1)  # one byte short of a fourth record
    assert _record_ids(g) == [0, 1, 2] and g.nbytes == three
    store.shrink((1, 0), three - 1)
    assert _record_ids(g) == [0, 1] and g.nbytes == three - _record(ks[2])
    store.shrink((1, 0), HEADER)
    assert len(g) == 0 and g.nbytes == HEADER


def test_keep_records_is_class_balanced_by_priority(micro_vit):
    store = _store(micro_vit)
    sizes = {(0, 0): 5, (1, 0): 1, (2, 0): 3}
    for key, n in sizes.items():
        _fill(store, key, [4] * n, first=10 * key[0])
    # 6 records over 3 groups: 2 each, the 1-record group uses 1, its spare goes to the first
    store.keep_records(6)
    assert {k: _record_ids(g) for k, g in store.groups.items()} == {
        (0, 0): [0, 1, 2], (1, 0): [10], (2, 0): [20, 21]}
    store.keep_records(1)
    assert {k: _record_ids(g) for k, g in store.groups.items()} == {(0, 0): [0]}
    store.keep_records(0)
    assert store.groups == {}
    with pytest.raises(ValueError, match="new_size must be >= 0, got -1"):
        store.keep_records(-1)


def _filled(micro_vit, **kw):
    store = _store(micro_vit, **kw)
    _fill(store, (0, 0), [4, T, 2])
    _fill(store, (5, 2), [3], first=7)
    return store


def _assert_same_records(a, b):
    assert sorted(a.groups) == sorted(b.groups)
    for key, g in a.groups.items():
        h = b.groups[key]
        for name in ("values", "positions", "lengths", "weights"):
            x, y = getattr(g, name), getattr(h, name)
            assert (x is None and y is None) or (x.dtype == y.dtype and torch.equal(x, y)), name


def test_state_round_trip_restores_identical_records(micro_vit):
    store = _filled(micro_vit, weighted=True)
    store.admit(get_adapter(micro_vit), _data(5), ClassItems(), 4, None, "uint8")
    other = TokenStore(10_000, None, 0.25, weighted=True)
    other.load_store_state(copy.deepcopy(store.store_state()))
    _assert_same_records(store, other)
    assert other.nbytes == store.nbytes == 2 * HEADER + sum(
        _record(k, True) for k in [4, T, 2, 3])
    assert other.experience_ids == [0, 4] and other.seen_samples == 15
    assert other.layout == store.layout and other.codec.dtype == torch.uint8


def _tamper_positions(state):
    state["groups"][0]["positions"][0] = T  # outside the 4x4 grid


def _tamper_dtype(state):
    state["groups"][0]["values"] = state["groups"][0]["values"].float()


def _tamper_width(state):
    state["layout"]["token_dim"] = V + 1


def _tamper_codec(state):
    state["codec"] = "int4"


def _tamper_duplicate(state):
    state["groups"].append(copy.deepcopy(state["groups"][0]))


def _tamper_lengths(state):
    state["groups"][1]["lengths"][0] += 1


@pytest.mark.parametrize("tamper, message", [
    (_tamper_positions, r"positions must be in \[0, 16\)"),
    (_tamper_dtype, "stores torch.float32, the codec torch.uint8"),
    (_tamper_width, "tokens of width 4, the layout 16 of width 5"),
    (_tamper_codec, "unknown storage dtype 'int4'"),
    (_tamper_duplicate, "two groups for label 0, task 0"),
    (_tamper_lengths, "lengths sum to 4 tokens but 3 values"),
])
def test_load_refuses_a_tampered_state_and_changes_nothing(micro_vit, tamper, message):
    state = _filled(micro_vit).store_state()
    tamper(state)
    target = _filled(micro_vit, experience=9)
    with pytest.raises(ValueError, match=message):
        target.load_store_state(state)
    _assert_same_records(target, _filled(micro_vit))
    assert target.experience_ids == [9] and target.seen_samples == 10


def test_load_refuses_a_state_over_the_budget(micro_vit):
    store = _filled(micro_vit)
    small = TokenStore(store.nbytes - 1, None, 0.25)
    with pytest.raises(ValueError, match=f"holds {store.nbytes} B, over its budget of "
                                         f"{store.nbytes - 1} B"):
        small.load_store_state(store.store_state())
    assert small.groups == {} and small.layout is None
