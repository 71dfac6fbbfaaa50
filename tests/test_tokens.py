"""Token utilities against explicit slicing references."""
import pytest
import torch

from avalanche_cts.tokens.patches import (
    check_patch_size,
    gather_tokens,
    keep_count,
    mask_to_pixels,
    patchify,
    random_keep_mask,
    scatter_tokens,
    unpatchify,
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
