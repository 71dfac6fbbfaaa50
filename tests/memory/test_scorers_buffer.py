"""The replay buffer accepts every attribution scorer, by name or as an object."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from avalanche_cts import CoreTokensetBuffer
from avalanche_cts.scorers import AtManScorer, GradLRPScorer


@pytest.mark.parametrize(
    "scorer",
    ["rollout", "gradcam", "gradlrp", "atman", GradLRPScorer(start_layer=1, target="pred"), AtManScorer(chunk_size=16)],
    ids=["rollout", "gradcam", "gradlrp", "atman", "gradlrp-object", "atman-object"],
)
def test_buffer_fills_with_scorer(scorer, digits_benchmark, micro_vit):
    micro_vit.train()
    buf = CoreTokensetBuffer(budget_fraction=0.05, token_retention=0.25, scorer=scorer)
    buf.post_adapt(SimpleNamespace(model=micro_vit, device="cpu"), digits_benchmark.train_stream[0])
    assert buf.num_records > 0
    assert all((g.lengths == 4).all() for g in buf.groups.values())  # round(0.25 * 16) tokens
    assert micro_vit.training and all(p.grad is None for p in micro_vit.parameters())
    if not isinstance(scorer, str):
        assert buf.scorer is scorer
