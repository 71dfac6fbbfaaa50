"""TokenMemoryDataset.__getitems__: a batch read with one gather per group, equal to the
per-item reads and their collation (values, positions, padding, labels, tasks, weights, text)."""
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from avalanche_cts.memory.records import (POSITION_DTYPE, TokenBatch, TokenGroup,
                                          TokenMemoryDataset, collate_tokens)

T, V = 16, 6


def _group(gen, label, task, lengths, dtype=torch.uint8, weighted=False, text_fields=(), t=T):
    """A group of records with the given token counts (``t``: a full-length record, stored
    without positions) out of ``t``, random values, positions, weights and text ids."""
    if dtype == torch.uint8:
        values = [torch.randint(0, 256, (k, V), dtype=dtype, generator=gen) for k in lengths]
    else:
        values = [torch.randn(k, V, generator=gen).to(dtype) for k in lengths]
    positions = [torch.randperm(t, generator=gen)[:k] for k in lengths]
    texts = {f: [torch.randint(0, 30000, (int(torch.randint(0, 5, (1,), generator=gen)),),
                               generator=gen) for _ in lengths] for f in text_fields}
    g = TokenGroup(label, task, t, V, dtype, weighted, text_fields=text_fields)
    g.append(values, positions, torch.rand(len(lengths), generator=gen).tolist(), texts=texts)
    return g


def _groups(case):
    gen = torch.Generator().manual_seed(0)
    if case == "one group, one length":
        return [_group(gen, 3, 0, [4] * 7)]
    if case == "groups of mixed lengths, full records, weights":
        return [_group(gen, 0, 0, [3, T, 1, 5]), _group(gen, 1, 0, [T, T], weighted=True),
                _group(gen, 2, 1, [2, 7, T, 4, 4], weighted=True), _group(gen, 5, 1, [9])]
    if case == "float values":
        return [_group(gen, 0, 0, [2, 5], dtype=torch.float32), _group(gen, 1, 2, [T, 3],
                                                                       dtype=torch.float32)]
    if case == "full records only":
        return [_group(gen, 0, 0, [T, T, T]), _group(gen, 4, 0, [T], weighted=True)]
    if case == "grids of different sizes":  # full 8-token records padded to 12
        return [_group(gen, 0, 0, [8, 3, 8], t=8), _group(gen, 1, 0, [12, 5], t=T)]
    raise KeyError(case)


CASES = ["one group, one length", "groups of mixed lengths, full records, weights",
         "float values", "full records only", "grids of different sizes"]


def _indices(n, gen):
    """A shuffled draw of every item, then some items again (repeats, any order)."""
    return torch.cat([torch.randperm(n, generator=gen),
                      torch.randint(0, n, (5,), generator=gen)]).tolist()


def _padded_reference(items):
    """Independent row loop: zero-padded values, int64 positions, int64 lengths."""
    ks = [len(it[1]) for it in items]
    values = items[0][0].new_zeros(len(items), max(ks), V)
    positions = torch.zeros(len(items), max(ks), dtype=torch.long)
    for i, (val, pos, *_rest) in enumerate(items):
        values[i, :ks[i]], positions[i, :ks[i]] = val, pos.long()
    return values, positions, torch.tensor(ks)


def _assert_same_batch(a: TokenBatch, b: TokenBatch):
    for f in ("values", "positions", "labels", "tasks", "weights"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and torch.equal(x, y), f
    assert (a.valid is None) == (b.valid is None)
    assert a.valid is None or torch.equal(a.valid, b.valid)
    assert (a.text is None) == (b.text is None)
    if a.text is not None:
        assert a.text.keys() == b.text.keys()
        assert all(torch.equal(a.text[k], b.text[k]) for k in a.text)


@pytest.mark.parametrize("case", CASES)
def test_batch_read_gathers_what_the_item_reads_give(case):
    ds = TokenMemoryDataset(_groups(case))
    idx = _indices(len(ds), torch.Generator().manual_seed(1))
    items = [ds[i] for i in idx]
    rows = ds.__getitems__(idx)
    values, positions, lengths = _padded_reference(items)
    assert rows.values.dtype == values.dtype and torch.equal(rows.values, values)
    assert rows.positions.dtype == torch.long and torch.equal(rows.positions, positions)
    assert torch.equal(rows.lengths, lengths)
    assert rows.labels.tolist() == [it[2] for it in items]
    assert rows.tasks.tolist() == [it[3] for it in items]
    assert rows.weights.dtype == torch.float32 and rows.weights.tolist() == [it[4] for it in items]
    _assert_same_batch(collate_tokens(rows), collate_tokens(items))


def test_successive_batch_reads_of_one_dataset_stay_exact():
    """Batches of other sizes and lengths after one another (the gather's scratch rows are
    reused: a longer batch first leaves tokens where a shorter one pads)."""
    ds = TokenMemoryDataset(_groups("groups of mixed lengths, full records, weights"))
    gen = torch.Generator().manual_seed(4)
    for idx in ([1, 4, 5, 9, 2, 3, 0, 11], [2], [0, 10, 8], list(range(12)), [7, 2, 10, 9]):
        idx = torch.tensor(idx)[torch.randperm(len(idx), generator=gen)].tolist()
        _assert_same_batch(collate_tokens(ds.__getitems__(idx)),
                           collate_tokens([ds[i] for i in idx]))


@pytest.mark.parametrize("case", CASES)
def test_batch_rows_read_as_the_items(case):
    """Any collate function, torch's Subset and StackDataset see the items themselves."""
    ds = TokenMemoryDataset(_groups(case))
    idx = _indices(len(ds), torch.Generator().manual_seed(2))
    rows = ds.__getitems__(idx)
    assert len(rows) == len(idx)
    for got, i in zip(rows, idx):
        want = ds[i]
        assert len(got) == 5 and got[2:] == want[2:]
        assert torch.equal(got[0], want[0]) and got[1].dtype == POSITION_DTYPE
        assert torch.equal(got[1], want[1])


def _text_collate(texts):
    """A stand-in text collation: ids padded with -1, per field."""
    pad = torch.nn.utils.rnn.pad_sequence
    return {f: pad([t[f] for t in texts], batch_first=True, padding_value=-1)
            for f in texts[0]}


def test_batch_read_of_image_text_records():
    gen = torch.Generator().manual_seed(3)
    fields = ("question", "target")
    ds = TokenMemoryDataset([_group(gen, 0, 0, [3, T, 2], text_fields=fields),
                             _group(gen, 0, 1, [5, 5], text_fields=fields)])
    idx = _indices(len(ds), gen)
    items = [ds[i] for i in idx]
    rows = ds.__getitems__(idx)
    for got, want in zip(rows, items):
        assert got[5].keys() == want[5].keys()
        assert all(torch.equal(got[5][f], want[5][f]) for f in fields)
    _assert_same_batch(collate_tokens(rows, _text_collate), collate_tokens(items, _text_collate))
    with pytest.raises(ValueError, match="hold text: pass the collate function"):
        collate_tokens(rows)


class _ItemsOnly(Dataset):
    """The memory read item by item (what a DataLoader did before ``__getitems__``)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_batches_equal_item_by_item_loading(num_workers, monkeypatch):
    """Same sampler draws (seeded shuffling), same batches, in-process and in workers; the
    loader reads each batch with ``__getitems__``."""
    ds = TokenMemoryDataset(_groups("groups of mixed lengths, full records, weights"))
    reads = []
    batch_read = TokenMemoryDataset.__getitems__
    monkeypatch.setattr(TokenMemoryDataset, "__getitems__",
                        lambda self, idx: reads.append(idx) or batch_read(self, idx))

    def batches(data):
        loader = DataLoader(data, batch_size=4, shuffle=True, collate_fn=collate_tokens,
                            num_workers=num_workers, generator=torch.Generator().manual_seed(7))
        return [b for _ in range(2) for b in loader]

    got, want = batches(ds), batches(_ItemsOnly(ds))
    assert len(got) == len(want) == 2 * 3
    assert len(reads) == (6 if num_workers == 0 else 0)  # workers read in their own process
    for a, b in zip(got, want):
        _assert_same_batch(a, b)
    sub = list(DataLoader(Subset(ds, [5, 0, 2]), batch_size=3, collate_fn=collate_tokens))
    _assert_same_batch(sub[0], collate_tokens([ds[5], ds[0], ds[2]]))


def test_batch_read_of_no_indices_is_refused():
    with pytest.raises(ValueError, match="at least one record"):
        TokenMemoryDataset(_groups("float values")).__getitems__([])

