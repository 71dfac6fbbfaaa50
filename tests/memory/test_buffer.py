"""CoreTokensetBuffer: byte budget, class balance, shrinking, exact storage, persistence."""
from types import SimpleNamespace

import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, create_model
from avalanche_cts.memory.budget import water_fill
from avalanche_cts.memory.records import GROUP_HEADER_BYTES, TokenGroup
from avalanche_cts.memory.codec import PixelCodec
from avalanche_cts.tokens.patches import patchify


def _agent(model):
    return SimpleNamespace(model=model, device="cpu")


def _fill(buf, bm, model, n=None):
    for exp in list(bm.train_stream)[:n]:
        buf.post_adapt(_agent(model), exp)
        yield exp


def _expected_nbytes(buf):
    """Independent count: uint8 values, int16 positions and lengths, 16-byte group headers."""
    t, v = buf.layout["num_tokens"], buf.layout["token_dim"]
    total = 0
    for g in buf.groups.values():
        for k in g.lengths.tolist():
            total += k * v + (2 * k if k < t else 0) + 2
        total += 16
    return total


@pytest.mark.parametrize("t", [1.0, 0.25])
def test_budget_fraction_never_exceeded_and_class_balanced(digits_benchmark, micro_vit, t):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=t)
    seen = 0
    for exp in _fill(buf, digits_benchmark, micro_vit):
        seen += len(exp.dataset)
        budget = int(0.1 * seen * 64)  # 8x8 grey uint8 images
        assert buf.budget_bytes == budget
        assert buf.nbytes <= budget
        assert buf.nbytes == _expected_nbytes(buf)
        new = [len(g) for (c, _), g in buf.groups.items() if c in exp.classes_in_this_experience]
        assert max(new) - min(new) <= 1  # classes that have data are balanced
        assert max(len(g) for g in buf.groups.values()) <= max(new) + 1  # old ones cannot grow
        assert buf.budget_bytes - buf.nbytes < len(buf.groups) * (buf.record_bytes() + 16)
    assert all(g.values.dtype == torch.uint8 for g in buf.groups.values())
    k = round(t * 16)
    assert all((g.lengths == k).all() for g in buf.groups.values())


def test_fixed_budget_shrinks_old_classes_and_frees_memory(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_bytes=6000, token_retention=0.5)
    exps = list(digits_benchmark.train_stream)
    buf.post_adapt(_agent(micro_vit), exps[0])
    old = {k: (g.values.clone(), g.positions.clone(), g.values.untyped_storage().nbytes())
           for k, g in buf.groups.items()}
    n_before = {k: len(g) for k, g in buf.groups.items()}
    buf.post_adapt(_agent(micro_vit), exps[1])
    assert buf.nbytes <= 6000 and len(buf.groups) == 4
    for key, (vals, pos, storage) in old.items():
        g = buf.groups[key]
        assert len(g) < n_before[key]
        # lowest-priority records went: what remains is a prefix of the old records
        assert torch.equal(g.values, vals[: g.values.shape[0]])
        assert torch.equal(g.positions, pos[: g.positions.shape[0]])
        assert g.values.untyped_storage().nbytes() < storage  # really released


def test_stored_tokens_rebuild_original_patches(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.2, token_retention=0.25)
    exp = next(_fill(buf, digits_benchmark, micro_vit, 1))
    data = exp.dataset.eval()
    originals = {}
    for x, y, _ in data:
        originals.setdefault(int(y), []).append(patchify(x[None], 2)[0])
    ds = buf.dataset()
    assert len(ds) == buf.num_records > 0
    for i in range(len(ds)):
        values, positions, label, task, _ = ds[i]
        decoded = buf.codec.decode(values)
        tokens = torch.stack(originals[label])[:, positions.long()]
        # exactly one training image of that class has these patches at these positions
        matches = (tokens == decoded).all(-1).all(-1)
        assert matches.any(), f"record {i} matches no original image"
    # zero-filled rebuild: kept patches in place, the rest zero
    from avalanche_cts.memory.records import collate_tokens

    batch = collate_tokens([ds[0]])
    img = batch.images(buf.codec, 2, 1, (4, 4))
    tok = patchify(img, 2)[0]
    kept = set(batch.positions[0].tolist())
    assert all(tok[j].abs().sum() == 0 for j in range(16) if j not in kept)


def test_pixel_codec_exact_for_8bit_and_infers_dtype():
    x = torch.randint(0, 256, (5, 1, 4, 4)).float() / 255
    c = PixelCodec.infer(x)
    assert c.dtype == torch.uint8
    assert torch.equal(c.decode(c.encode(x)), x)
    assert PixelCodec.infer(torch.rand(5, 1, 4, 4)).dtype == torch.float32


def test_pixel_codec_decode_constants_made_once_serve_autograd_after_inference_mode():
    """The per-channel constants are made once per device, as ordinary tensors even when the
    first decode ran under inference mode (a later encode with gradients saves them)."""
    from avalanche_cts.memory.codec import _per_value
    from avalanche_cts.tokens.normalization import Normalization

    norm = Normalization((0.2, 0.5, 0.7), (0.3, 0.25, 0.2))
    c = PixelCodec(torch.uint8, norm)
    stored = torch.randint(0, 256, (2, 5, 12), dtype=torch.uint8)
    _per_value.cache_clear()
    with torch.inference_mode():
        out = c.decode(stored)
    mean = torch.tensor([0.2, 0.5, 0.7]).repeat(4)  # the reference, made here
    std = torch.tensor([0.3, 0.25, 0.2]).repeat(4)
    assert torch.equal(out, (stored.float() / 255.0 - mean) / std)
    assert torch.equal(c.decode(stored), out) and _per_value.cache_info().hits >= 2
    x = torch.rand(2, 5, 12, requires_grad=True)
    PixelCodec(torch.float16, norm).pixels(x).sum().backward()  # saves std for the gradient
    assert torch.equal(x.grad, std.expand(2, 5, 12))


def _collate_reference(items):
    """The per-row padding loop of collation (its values, positions and mask)."""
    ks = [len(it[1]) for it in items]
    kmax, b, v = max(ks), len(items), items[0][0].shape[1]
    values = items[0][0].new_zeros(b, kmax, v)
    positions = torch.zeros(b, kmax, dtype=torch.long)
    valid = torch.zeros(b, kmax, dtype=torch.bool)
    for i, (val, pos, *_rest) in enumerate(items):
        values[i, :ks[i]], positions[i, :ks[i]], valid[i, :ks[i]] = val, pos.long(), True
    return values, positions, None if min(ks) == kmax else valid


@pytest.mark.parametrize("lengths", [[3, 5, 1, 5], [4, 4, 4]])
def test_collate_tokens_pads_like_the_per_row_reference(lengths):
    from avalanche_cts.memory.records import collate_tokens

    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(0, 256, (k, 6), dtype=torch.uint8, generator=g),
              torch.randperm(16, generator=g)[:k].short(), i, 7 - i, 0.5 * i)
             for i, k in enumerate(lengths)]
    batch = collate_tokens(items)
    values, positions, valid = _collate_reference(items)
    assert batch.values.dtype == torch.uint8 and torch.equal(batch.values, values)
    assert batch.positions.dtype == torch.long and torch.equal(batch.positions, positions)
    assert (batch.valid is None) == (valid is None)  # same counts: no padding mask at all
    assert valid is None or torch.equal(batch.valid, valid)
    n = len(lengths)
    assert batch.labels.tolist() == list(range(n)) and batch.tasks.tolist() == [7 - i for i in range(n)]
    assert batch.weights.tolist() == [0.5 * i for i in range(n)]


def test_token_batch_is_pinned_by_a_pinning_loader(monkeypatch):
    """A ``DataLoader(pin_memory=True)`` (the plugin's on CUDA) pins every tensor of a memory
    batch, so that its copy to the device does not block the host."""
    from torch.utils.data._utils.pin_memory import pin_memory
    from avalanche_cts.memory.records import collate_tokens

    items = [(torch.zeros(k, 6, dtype=torch.uint8), torch.arange(k).short(), 0, 0, 1.0)
             for k in (2, 3)]
    batch = collate_tokens(items)
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory",
                        lambda t, *a, **kw: pinned.append(t) or t.clone())  # no CUDA here
    out = pin_memory(batch)
    assert type(out).__name__ == "TokenBatch" and len(pinned) == 6  # valid included
    for f in ("values", "positions", "valid", "labels", "tasks", "weights"):
        assert torch.equal(getattr(out, f), getattr(batch, f))
        assert getattr(out, f) is not getattr(batch, f)
    assert pin_memory(collate_tokens(items[1:])).valid is None


def test_state_dict_round_trip_resumes_identically(digits_benchmark, micro_vit, tmp_path):
    exps = list(digits_benchmark.train_stream)
    a = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5, seed=3)
    for e in exps[:2]:
        a.post_adapt(_agent(micro_vit), e)
    torch.save(a.state_dict(), tmp_path / "buf.pt")
    b = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5, seed=99)
    b.load_state_dict(torch.load(tmp_path / "buf.pt", weights_only=True))
    for e in exps[2:4]:  # random selector/scorer streams must continue identically
        a.post_adapt(_agent(micro_vit), e)
        b.post_adapt(_agent(micro_vit), e)
    assert a.nbytes == b.nbytes and sorted(a.groups) == sorted(b.groups)
    for k in a.groups:
        for f in ("values", "positions", "lengths"):
            assert torch.equal(getattr(a.groups[k], f), getattr(b.groups[k], f))
    with pytest.raises(ValueError, match="configuration differs"):
        CoreTokensetBuffer(budget_fraction=0.2).load_state_dict(a.state_dict())


def test_resize_keeps_priority_prefix_per_class(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.2, token_retention=0.5)
    next(_fill(buf, digits_benchmark, micro_vit, 1))
    before = {k: g.values.clone() for k, g in buf.groups.items()}
    buf.resize(None, 7)
    assert buf.num_records == 7
    with pytest.raises(TypeError, match="byte budget"):  # no sample count to read
        buf.max_size
    assert sorted(len(g) for g in buf.groups.values()) == [3, 4]
    for k, g in buf.groups.items():
        assert torch.equal(g.values, before[k][: g.values.shape[0]])


def test_token_group_truncate_and_bytes():
    g = TokenGroup(label=1, task=0, num_tokens=4, token_dim=3, dtype=torch.uint8, weighted=False)
    g.append([torch.ones(2, 3, dtype=torch.uint8), torch.ones(4, 3, dtype=torch.uint8)],
             [torch.tensor([3, 1]), torch.arange(4)], [1.0, 1.0])
    # partial record: 2*3 values + 2*2 position bytes; full record: 12 values, no positions
    assert g.nbytes == (6 + 4) + 12 + 2 * 2 + GROUP_HEADER_BYTES
    assert torch.equal(g.record(1)[1].long(), torch.arange(4))
    assert g.record(0)[1].tolist() == [3, 1]
    g.truncate(1)
    assert len(g) == 1 and g.values.shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(budget_bytes=0), "budget_bytes must be a positive"),
        (dict(budget_bytes=-5), "budget_bytes must be a positive"),
        (dict(budget_fraction=0.0), r"budget_fraction must be a number in \(0, 1\]"),
        (dict(budget_fraction=1.5), r"budget_fraction must be a number in \(0, 1\]"),
        (dict(), "exactly one of budget_bytes or budget_fraction"),
        (dict(budget_fraction=0.1, token_retention=0.0), r"token_retention must be a number in \(0, 1\]"),
        (dict(budget_fraction=0.1, token_retention=1.2), r"token_retention must be a number in \(0, 1\]"),
        (dict(budget_fraction=0.1, selector="nope"), "unknown sample selector 'nope'"),
        (dict(budget_fraction=0.1, scorer="nope"), "unknown token scorer 'nope'"),
        (dict(budget_fraction=0.1, pixel_dtype="int4"), "pixel_dtype must be one of"),
    ],
)
def test_bad_configuration_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoreTokensetBuffer(**kwargs)


def test_bad_model_patch_size_and_empty_experience(digits_benchmark, micro_vit):
    exp = digits_benchmark.train_stream[0]
    buf = CoreTokensetBuffer(budget_fraction=0.1)
    with pytest.raises(TypeError, match="not a supported vision transformer"):
        buf.post_adapt(_agent(torch.nn.Linear(64, 10)), exp)
    wrong = create_model("vit_digits_micro", img_size=12)  # model expects 12x12, data is 8x8
    with pytest.raises(ValueError, match="do not fit the model"):
        buf.post_adapt(_agent(wrong), exp)
    empty = SimpleNamespace(dataset=exp.dataset.subset([]), current_experience=0)
    with pytest.raises(ValueError, match="has no samples"):
        buf.post_adapt(_agent(micro_vit), empty)
    assert buf.num_records == 0 and buf.seen_samples == 0  # nothing half-done


def test_water_fill_hand_examples():
    # equal shares of 9: group 0 (cap 1) takes all it can, the other two split 8
    assert water_fill(9, [1, 10, 10]) == [1, 4, 4]
    assert water_fill(3, [4, 0, 4]) == [2, 0, 1]  # remainder to the first open group
    assert water_fill(100, [3, 4]) == [3, 4]
    assert water_fill(5, []) == []


def test_water_fill_sums_exactly_caps_and_shares_equally():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        size = int(torch.randint(1, 12, (1,), generator=g))
        caps = torch.randint(0, 50, (size,), generator=g).tolist()
        total = int(torch.randint(0, sum(caps) + 20, (1,), generator=g))
        out = water_fill(total, caps)
        assert sum(out) == min(total, sum(caps))
        assert all(0 <= k <= n for k, n in zip(out, caps))
        open_ = [k for k, n in zip(out, caps) if k < n]
        if open_:  # equal shares; a full group holds no more than the open ones + 1
            assert max(open_) - min(open_) <= 1
            assert all(k <= max(open_) + 1 for k, n in zip(out, caps) if k == n)
