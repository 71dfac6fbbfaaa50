"""composite_records: memory records written into scenes, against a loop over tokens."""
import pytest
import torch

from avalanche_cts.tokens.patches import composite_records, patchify


def _records(b, t, v, ks, gen):
    """Records of ``ks[i]`` distinct random positions each, padded to ``max(ks)``; padding
    entries point at positions no record of the row uses and hold values of their own."""
    k = max(ks)
    values = torch.rand(b, k, v, generator=gen) + 2.0  # apart from the scenes' values
    positions = torch.zeros(b, k, dtype=torch.long)
    valid = torch.zeros(b, k, dtype=torch.bool)
    for i, ki in enumerate(ks):
        perm = torch.randperm(t, generator=gen)
        positions[i] = perm[:k]
        valid[i, :ki] = True
    return values, positions, valid


def _reference(scenes, values, positions, valid, remove, patch):
    """Token by token: the scene's tokens, the valid record tokens over them; keep is False
    where a token was removed and no record token was written."""
    tokens = patchify(scenes, patch).clone()
    keep = ~remove.clone()
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if valid is None or valid[i, j]:
                tokens[i, positions[i, j]] = values[i, j]
                keep[i, positions[i, j]] = True
    return tokens, keep


@pytest.mark.parametrize("ks", [[1, 1, 1], [3, 5, 2, 5], [8, 1, 16, 4]])
@pytest.mark.parametrize("channels", [1, 3])
def test_composite_matches_a_loop_over_tokens(ks, channels):
    gen = torch.Generator().manual_seed(sum(ks) + channels)
    patch, side = 2, 8
    t, v = (side // patch) ** 2, patch * patch * channels
    b = len(ks)
    scenes = torch.rand(b, channels, side, side, generator=gen)
    original = scenes.clone()
    values, positions, valid = _records(b, t, v, ks, gen)
    remove = torch.rand(b, t, generator=gen) < 0.4
    images, keep = composite_records(scenes, values, positions, valid, remove, patch)
    tokens, expected_keep = _reference(scenes, values, positions, valid, remove, patch)
    assert torch.equal(patchify(images, patch), tokens)
    assert torch.equal(keep, expected_keep)
    assert torch.equal(scenes, original)  # the scenes are not modified
    assert images.shape == scenes.shape and keep.dtype == torch.bool
    if min(ks) < max(ks):  # padded entries were not written: their values appear nowhere
        pads = values[~valid]
        assert not (patchify(images, patch)[:, :, None, :] == pads[None, None]).all(-1).any()


def test_composite_without_padding_mask_writes_every_entry():
    gen = torch.Generator().manual_seed(5)
    scenes = torch.rand(3, 1, 8, 8, generator=gen)
    values, positions, _ = _records(3, 16, 4, [4, 4, 4], gen)
    remove = torch.ones(3, 16, dtype=torch.bool)  # every scene token removed
    images, keep = composite_records(scenes, values, positions, None, remove, 2)
    tokens, expected_keep = _reference(scenes, values, positions, None, remove, 2)
    assert torch.equal(patchify(images, 2), tokens) and torch.equal(keep, expected_keep)
    assert (keep.sum(1) == 4).all()  # only the record's own tokens are fed
