"""Token utilities against explicit slicing references."""
import pytest
import torch

from avalanche_cts.tokens.patches import (
    check_patch_size,
    gather_tokens,
    keep_count,
    mask_to_pixels,
    patchify,
    place_tokens,
    random_keep_mask,
    rank_tokens,
    scatter_tokens,
    take_kept,
    take_tokens,
    unpatchify,
    zero_dropped,
)


def test_patchify_matches_explicit_patch_slices():
    x = torch.randn(2, 3, 8, 12)
    tok = patchify(x, 4)
    assert tok.shape == (2, 6, 48)
    for r in range(2):
        for c in range(3):
            ref = x[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(0, 2, 3, 1).reshape(2, -1)
            assert torch.equal(tok[:, r * 3 + c], ref)


def test_unpatchify_inverts_patchify_any_dtype():
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(unpatchify(patchify(x, 4), 4, 1, (7, 7)), x)


def test_patch_size_mismatch_names_problem_and_fix():
    with pytest.raises(ValueError, match="not divisible by the patch size 4.*24x24"):
        check_patch_size(27, 24, 4)
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 1, 10, 10), 4)


def test_scatter_places_tokens_and_ignores_padding():
    values = torch.arange(1, 7, dtype=torch.float32).reshape(1, 3, 2)
    pos = torch.tensor([[4, 0, 2]])
    valid = torch.tensor([[True, True, False]])
    out = scatter_tokens(values, pos, 5, valid)
    expected = torch.zeros(1, 5, 2)
    expected[0, 4] = torch.tensor([1.0, 2.0])
    expected[0, 0] = torch.tensor([3.0, 4.0])
    assert torch.equal(out, expected)


def test_keep_count_rounds_and_validates():
    assert keep_count(49, 0.1) == 5
    assert keep_count(49, 0.001) == 1
    assert keep_count(49, 1.0) == 49
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            keep_count(49, bad)


def test_random_keep_mask_exact_counts_and_uniform_positions():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 10, 1, 7] * 1000)
    m = random_keep_mask(counts, 10, generator=g)
    assert torch.equal(m.sum(1), counts)
    three = m[counts == 3].float().mean(0)  # each position kept with probability 3/10
    assert torch.allclose(three, torch.full((10,), 0.3), atol=0.05)


@pytest.mark.parametrize("seeded", [True, False])
def test_random_keep_mask_equals_the_double_argsort_reference_with_the_same_draws(seeded):
    """The mask ranks the noise once (a scatter of the sort order) instead of twice: the very
    same masks, from the same draws of the same generator."""
    counts = torch.tensor([1, 5, 16, 0, 9, 3])

    def reference(gen):
        noise = torch.rand(len(counts), 16, generator=gen)
        return noise.argsort(dim=1).argsort(dim=1) < counts[:, None]

    masks, after = [], []
    for fn in (random_keep_mask, lambda c, t, generator: reference(generator)):
        torch.manual_seed(7)
        gen = torch.Generator().manual_seed(7) if seeded else None
        masks.append(torch.cat([fn(counts, 16, generator=gen) for _ in range(3)]))
        after.append(torch.rand(4, generator=gen))  # the next draw: as many were taken
    assert torch.equal(masks[0], masks[1]) and torch.equal(after[0], after[1])
    assert torch.equal(masks[0][:6].sum(1), counts)


def test_gather_tokens_in_grid_order_with_padding_mask():
    tokens = torch.arange(2 * 5 * 2).reshape(2, 5, 2)
    keep = torch.tensor([[False, True, False, True, True], [True, False, False, False, False]])
    values, positions, valid = gather_tokens(tokens, keep)
    assert positions[0].tolist() == [1, 3, 4] and positions[1, 0] == 0
    assert valid.tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(values[0], tokens[0, [1, 3, 4]]) and torch.equal(values[1, 0], tokens[1, 0])
    _, _, none = gather_tokens(tokens, keep[[0, 0]])
    assert none is None  # equal counts need no mask


def test_scatter_tokens_fill_value_for_dropped_positions():
    values = torch.ones(1, 2, 3)
    fill = torch.full((1, 4, 3), 7.0)
    out = scatter_tokens(values, torch.tensor([[0, 2]]), 4, fill=fill)
    assert out[0, :, 0].tolist() == [1.0, 7.0, 1.0, 7.0]


def test_mask_to_pixels_marks_whole_patches():
    mask = torch.tensor([[True, False, False, True]])
    pix = mask_to_pixels(mask, 2, (2, 2))
    assert pix.shape == (1, 1, 4, 4)
    assert pix[0, 0, :2, :2].all() and pix[0, 0, 2:, 2:].all()
    assert not pix[0, 0, :2, 2:].any() and not pix[0, 0, 2:, :2].any()


def _dropout_batch(gen, b=5, c=3, size=12, p=4):
    images = torch.randn(b, c, size, size, generator=gen)  # negative values: signs of zero count
    counts = torch.tensor([1, 3, 9, 4, 9])[:b]
    keep = random_keep_mask(counts, (size // p) ** 2, generator=gen)
    return images, keep, p


def test_take_kept_equals_gather_of_patchify_bit_for_bit():
    gen = torch.Generator().manual_seed(3)
    images, keep, p = _dropout_batch(gen)
    values, positions, valid = take_kept(images, keep, p)
    ref_values, ref_positions, ref_valid = gather_tokens(patchify(images, p), keep)
    assert torch.equal(positions, ref_positions) and torch.equal(valid, ref_valid)
    assert torch.equal(values, ref_values)
    assert torch.equal(take_tokens(images, positions, p), ref_values)
    same = take_kept(images, torch.ones_like(keep), p)  # every sample whole: no padding mask
    assert same[2] is None and torch.equal(same[0], patchify(images, p))
    # a wide grid, channels-last memory, uint8: the same tokens as patchify's
    wide = torch.randint(0, 256, (3, 2, 8, 20), generator=gen, dtype=torch.uint8)
    wide = wide.to(memory_format=torch.channels_last)
    pos = torch.randperm(10, generator=gen)[:4].repeat(3, 1)
    assert torch.equal(take_tokens(wide, pos, p), patchify(wide, p).gather(
        1, pos[..., None].expand(-1, -1, p * p * 2)))


def test_place_tokens_equals_unpatchify_of_scatter_bit_for_bit():
    gen = torch.Generator().manual_seed(4)
    images, keep, p = _dropout_batch(gen)
    values, positions, valid = gather_tokens(patchify(images, p), keep)
    grid = (images.shape[2] // p, images.shape[3] // p)
    ref = unpatchify(scatter_tokens(values, positions, grid[0] * grid[1], valid), p, 3, grid)
    placed = place_tokens(values, positions, p, 3, grid, valid)
    assert torch.equal(placed, ref)
    assert torch.equal(placed, images * mask_to_pixels(keep, p, grid))  # kept pixels exactly
    ones = torch.ones_like(keep)
    whole = place_tokens(patchify(images, p), ones.nonzero()[:, 1].reshape(len(keep), -1), p, 3, grid)
    assert torch.equal(whole, images)


def test_zero_dropped_equals_pixel_mask_product_bit_for_bit():
    gen = torch.Generator().manual_seed(5)
    images, keep, p = _dropout_batch(gen)
    grid = (images.shape[2] // p, images.shape[3] // p)
    images.requires_grad_(True)
    ref = images * mask_to_pixels(keep, p, grid).to(images.dtype)
    out = zero_dropped(images, keep, p)
    assert out.shape == images.shape
    assert torch.equal(out, ref) and torch.equal(out.signbit(), ref.signbit())
    assert int((out != 0).sum()) == int(keep.sum()) * p * p * 3  # planted: kept patches only
    weights = torch.randn(out.shape, generator=gen)
    grads = [torch.autograd.grad((y * weights).sum(), images)[0] for y in (out, ref)]
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0].signbit(), grads[1].signbit())


def _scatter_reference(values, positions, num_tokens, valid, fill):
    """Scatter through a spare slot that collects padded entries (values and gradients)."""
    b, _, v = values.shape
    out = values.new_zeros(b, num_tokens + 1, v)
    out[:, :num_tokens] = fill
    pos = torch.where(valid, positions, torch.full_like(positions, num_tokens))
    return out.scatter(1, pos[..., None].expand(-1, -1, v), values)[:, :num_tokens]


@pytest.mark.parametrize("padded", [False, True])
def test_scatter_tokens_with_fill_values_and_gradients_match_a_spare_slot_reference(padded):
    gen = torch.Generator().manual_seed(6)
    images, keep, p = _dropout_batch(gen)
    if not padded:
        keep = random_keep_mask(torch.full((len(keep),), 4), keep.shape[1], generator=gen)
    values, positions, valid = gather_tokens(patchify(images, p), keep)
    grads = []
    for fn in (scatter_tokens, _scatter_reference):
        kept = values.clone().requires_grad_(True)
        token = torch.randn(1, 1, values.shape[2], generator=torch.Generator().manual_seed(7))
        token.requires_grad_(True)
        fill = token.expand(len(values), keep.shape[1], -1)
        mask = torch.ones_like(positions, dtype=torch.bool) if valid is None else valid
        out = fn(kept, positions, keep.shape[1], valid if fn is scatter_tokens else mask, fill)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
        (out * weights).sum().backward()
        grads.append((out.detach(), kept.grad, token.grad))
    assert (valid is not None) == padded
    for ours, ref in zip(*grads):
        assert torch.equal(ours, ref)


def _compact_reference(scores, side):
    """Keep order of ``compact`` by loops: the peak is the grid cell whose in-grid 3 x 3
    neighbours have the highest mean score, then cells by
    squared distance to it, then by score (higher first), then by position."""
    out = []
    for row in scores.tolist():
        def local(r, c):
            vals = [row[i * side + j] for i in range(r - 1, r + 2) for j in range(c - 1, c + 2)
                    if 0 <= i < side and 0 <= j < side]
            return sum(vals) / len(vals)
        cells = [(r, c) for r in range(side) for c in range(side)]
        pr, pc = max(cells, key=lambda rc: local(*rc))
        out.append(sorted(range(side * side), key=lambda p: (
            (p // side - pr) ** 2 + (p % side - pc) ** 2, -row[p], p)))
    return torch.tensor(out)


def test_compact_choice_keeps_the_disc_around_the_object_not_the_brighter_clutter():
    """A planted 3 x 3 object of high scores and one brighter isolated clutter token: top-k
    takes the clutter token first, ``compact`` takes the object, nearest to its centre first."""
    side = 8
    scores = torch.zeros(1, side, side)
    scores[0, 1:4, 4:7] = 1.0  # the object, centred at (2, 5)
    scores[0, 2, 5] = 1.5
    scores[0, 6, 1] = 3.0  # clutter: the single highest score
    scores = scores.reshape(1, -1)
    top = rank_tokens(scores, "topk")[0, :9].tolist()
    disc = rank_tokens(scores, "compact")[0, :9].tolist()
    assert 6 * side + 1 in top
    assert disc[0] == 2 * side + 5
    assert sorted(disc) == sorted(r * side + c for r in range(1, 4) for c in range(4, 7))


@pytest.mark.parametrize("tied", [False, True])
def test_compact_choice_equals_the_loop_reference(tied):
    """Random scores (and scores rounded to many ties, with a planted block that makes the
    peak unique): the order equals the loop reference."""
    g = torch.Generator().manual_seed(4)
    scores = torch.rand(20, 36, generator=g)
    if tied:
        scores = (scores * 3).round().reshape(20, 6, 6)
        for i, (r, c) in enumerate(torch.randint(1, 5, (20, 2), generator=g).tolist()):
            scores[i, r - 1:r + 2, c - 1:c + 2] = 4.0  # the only neighbourhood of mean 4
        scores = scores.reshape(20, 36)
    assert torch.equal(rank_tokens(scores, "compact"), _compact_reference(scores, 6))


def test_compact_choice_needs_a_square_grid():
    with pytest.raises(ValueError, match="square token grid, got 12 tokens.*use 'topk'"):
        rank_tokens(torch.rand(2, 12), "compact")
    with pytest.raises(ValueError, match="'topk', 'gumbel' or 'compact'"):
        rank_tokens(torch.rand(2, 16), "disc")
