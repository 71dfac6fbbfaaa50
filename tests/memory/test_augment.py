"""Replayed records mirrored and moved on the token grid (replay_flip, replay_shift)."""
import pytest
import torch
from avalanche.training import Naive

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.memory.augment import RecordAugmentation
from avalanche_cts.memory.plugin import augment_refusal
from avalanche_cts.tokens.patches import mirror_tokens, patchify, place_tokens, shift_positions

P, C, GRID = 4, 3, (5, 6)  # a non-square grid: rows and columns must not be confused


def _record(k=7, seed=0):
    """An image and a record of k of its tokens (values, positions), rows 1-3, cols 1-3."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, C, GRID[0] * P, GRID[1] * P, generator=gen)
    cells = [r * GRID[1] + c for r in (1, 2, 3) for c in (1, 2, 3)]
    pos = torch.tensor(cells)[torch.randperm(9, generator=gen)[:k]][None]
    values = patchify(image, P).gather(1, pos[..., None].expand(-1, -1, P * P * C))
    return image, values, pos


def test_mirrored_record_places_as_the_mirrored_image():
    image, values, pos = _record()
    placed = place_tokens(values, pos, P, C, GRID)
    v, p = mirror_tokens(values, pos, P, C, GRID[1])
    assert torch.equal(place_tokens(v, p, P, C, GRID), placed.flip(-1))
    whole = patchify(image, P)  # every token: the whole image mirrors
    v, p = mirror_tokens(whole, torch.arange(30)[None], P, C, GRID[1])
    assert torch.equal(place_tokens(v, p, P, C, GRID), image.flip(-1))


@pytest.mark.parametrize("rows, cols", [(1, 2), (-1, -1), (0, 2)])
def test_shifted_record_places_as_the_rolled_image(rows, cols):
    _, values, pos = _record()
    placed = place_tokens(values, pos, P, C, GRID)
    moved = shift_positions(pos, torch.tensor([rows]), torch.tensor([cols]), GRID[1])
    expect = placed.roll((rows * P, cols * P), dims=(-2, -1))  # no token crosses an edge
    assert torch.equal(place_tokens(values, moved, P, C, GRID), expect)


def test_moves_stay_on_the_grid_and_cover_every_allowed_move():
    aug = RecordAugmentation(shift=2)
    # record 0 sits in the top-left corner (moves 0..2 down and right), record 1 fills the
    # grid (cannot move), record 2 is padded: its padding keeps its position
    pos = torch.tensor([[0, 1, 6, 7], [0, 5, 24, 29], [13, 14, 0, 0]])
    valid = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]])
    values = torch.zeros(3, 4, P * P * C)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        _, p = aug(values, pos, valid, P, C, GRID, gen)
        assert torch.equal(p[1], pos[1]) and torch.equal(p[2, 2:], pos[2, 2:])
        assert bool((p[valid] >= 0).all()) and bool((p[valid] < 30).all())
        d = p[0] - pos[0]
        assert len(set(d.tolist())) == 1  # the record moves as one piece
        rows, cols = divmod(int(p[0, 0]), 6)
        seen.add((rows, cols))
    assert seen == {(r, c) for r in range(3) for c in range(3)}  # its first token's cell


def test_flip_probability_and_no_op():
    _, values, pos = _record()
    values, pos = values.expand(400, -1, -1), pos.expand(400, -1)
    gen = torch.Generator().manual_seed(1)
    v, p = RecordAugmentation(flip=0.5)(values, pos, None, P, C, GRID, gen)
    flipped = (p != pos).any(1)
    assert 150 < int(flipped.sum()) < 250
    ref_v, ref_p = mirror_tokens(values, pos, P, C, GRID[1])
    assert torch.equal(p[flipped], ref_p[flipped]) and torch.equal(v[~flipped], values[~flipped])
    assert not RecordAugmentation().active
    with pytest.raises(ValueError, match="replay_flip"):
        RecordAugmentation(flip=1.5)
    with pytest.raises(ValueError, match="replay_shift"):
        RecordAugmentation(shift=-1)


@pytest.mark.parametrize("shift, retention, moves", [(2, 0.25, True), (0, 0.25, False),
                                                     (2, 1.0, False)])
def test_replay_moves_partial_records_only(digits_benchmark, micro_vit, monkeypatch, shift,
                                           retention, moves):
    """In a Naive run the memory's forward sees moved positions for partial records; records
    of every token (a whole-sample coreset) cannot move, and shift 0 moves nothing."""
    from avalanche_cts.models.timm_vit import TimmViTAdapter

    fed, inner = [], TimmViTAdapter.forward_record

    def spy(self, values, positions, valid, mode):
        fed.extend(tuple(sorted(p.tolist())) for p in positions)
        return inner(self, values, positions, valid, mode)

    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=retention)
    plugin = CoreTokensetReplayPlugin(buf, dropout=1.0, replay_shift=shift, seed=0,
                                      replay_mode="sparse")
    s = Naive(model=micro_vit, optimizer=torch.optim.SGD(micro_vit.parameters(), 1e-2),
              train_mb_size=32, train_epochs=1, plugins=[plugin], evaluator=None)
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    data = buf.dataset()
    stored = {tuple(sorted(data[i][1].tolist())) for i in range(len(data))}
    monkeypatch.setattr(TimmViTAdapter, "forward_record", spy)
    s.train(exps[1])
    assert len(fed) > len(stored)
    assert any(f not in stored for f in fed) == moves


def test_augmentation_refused_for_a_model_without_a_token_grid():
    class TextRecords:
        patch_size, grid, in_chans = 16, (14, 14), 3

        def record_loss(self, *a):
            pass

    assert "image-text" in augment_refusal(TextRecords())
    assert "has none" in augment_refusal(object())
    assert augment_refusal(type("Grid", (), dict(patch_size=2, grid=(4, 4), in_chans=1))()) \
        is None
