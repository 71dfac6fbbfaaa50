"""benchmarks/token_choice.py: its token rules do what the diagnostic says they do."""
import importlib
import sys
from pathlib import Path

import pytest
import torch

from avalanche_cts.scorers import TokenScorer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def tc():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("token_choice")
    finally:
        sys.path.remove(str(BENCHMARKS))


class Planted(TokenScorer):
    """Fixed scores: token j of every image scores j (so the ranking is T-1, ..., 0)."""

    def score(self, model, images, targets=None):
        return torch.arange(9, dtype=torch.float32).expand(len(images), 9).clone()


def top(scores, k):
    return scores.argsort(dim=1, descending=True)[:, :k]


def test_negated_scores_rank_least_relevant_first(tc):
    s = tc.StandardisedScorer(Planted(), negate=True).score(None, torch.zeros(2, 1, 6, 6))
    assert top(s, 3).tolist() == [[0, 1, 2]] * 2
    assert torch.allclose(s.mean(1), torch.zeros(2), atol=1e-6)


def test_gumbel_sampling_interpolates_between_top_k_and_uniform(tc):
    torch.manual_seed(0)
    images = torch.zeros(4000, 1, 6, 6)
    cold = tc.StandardisedScorer(Planted(), temperature=1e-4).score(None, images)
    assert (top(cold, 3).sort(dim=1).values == torch.tensor([6, 7, 8])).all()
    hot = tc.StandardisedScorer(Planted(), temperature=1e4).score(None, images)
    freq = torch.bincount(top(hot, 3).flatten(), minlength=9).float() / (4000 * 3)
    assert torch.allclose(freq, torch.full((9,), 1 / 9), atol=0.015)
    mid = tc.StandardisedScorer(Planted(), temperature=1.0).score(None, images)
    counts = torch.bincount(top(mid, 3).flatten(), minlength=9)
    assert (counts.diff() > 0).all() and counts[0] > 0  # favours relevance, keeps every token


def test_object_first_dropout_keeps_non_blank_tokens_first(tc):
    b, t, d, prefix = 64, 10, 4, 1
    x = torch.arange(b * (prefix + t) * d, dtype=torch.float32).reshape(b, prefix + t, d)
    blank = torch.rand(b, t) < 0.5
    drop = tc.ObjectFirstDropout(keep=3, num_prefix_tokens=prefix).train()
    drop.blank = blank
    out = drop(x)
    assert out.shape == (b, prefix + 3, d)
    assert torch.equal(out[:, 0], x[:, 0])
    kept = (out[:, prefix:, None, :] == x[:, None, prefix:, :]).all(-1).float().argmax(-1)
    n_obj = (~blank).sum(1)
    kept_obj = (~blank).gather(1, kept).sum(1)
    assert torch.equal(kept_obj, n_obj.clamp(max=3))
    assert torch.equal(drop.eval()(x), x)
