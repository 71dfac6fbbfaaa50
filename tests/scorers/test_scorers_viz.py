"""Relevance-map rendering: kept-token masks and the PNG figure."""
from __future__ import annotations

import torch

from avalanche_cts.models import create_model
from avalanche_cts.harness.viz import render_relevance_maps, top_tokens_mask

torch.set_num_threads(1)


def test_top_tokens_mask_counts_and_ties():
    scores = torch.tensor([[0.0, 3.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    mask = top_tokens_mask(scores, 0.6)  # round(0.6 * 5) = 3 tokens
    assert mask.tolist() == [[False, True, True, False, True], [True, True, True, False, False]]
    assert top_tokens_mask(scores, 0.01).sum(1).tolist() == [1, 1]


def test_render_relevance_maps_png(tmp_path):
    torch.manual_seed(0)
    model = create_model("vit_digits_micro")
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 4])
    path = tmp_path / "maps.png"
    fig, scores = render_relevance_maps(model, x, y, scorers=["random", "rollout", "gradlrp"],
                                        retentions=(0.5, 0.25), path=path, titles=["a", "b"])
    assert list(scores) == ["random", "rollout", "gradlrp"]
    assert all(s.shape == (2, 16) for s in scores.values())
    assert len(fig.axes) == 2 * 3 * 4 and path.stat().st_size > 5_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
