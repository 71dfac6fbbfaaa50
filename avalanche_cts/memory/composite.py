"""Replayed samples that look whole: memory records composited into new-data scenes.

A memory record holds a few tokens of an old sample; fed alone it is a partial input, while
new data is whole, and the model can learn "partial means old class". Compositing removes
that shape gap from the memory's side: each record of a replay batch is paired with an image
of the current new-data mini-batch (its *scene*); the scene's own ``K`` most relevant tokens
(``K``: the record's count of stored tokens; scores of a scorer run on the current model
without label) are removed, so that the scene's object does not contradict the record's
label, and the record's tokens are written at their stored positions. The rest of the scene
stays, so the composite looks whole; it keeps the record's label.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..tokens.patches import composite_records, rank_tokens
from .inference import label_free_scores

__all__ = ["SceneCompositor", "pair_scenes", "step_generator", "top_count_mask"]


def step_generator(seed: Optional[int], step: int, stream: int = 0
                   ) -> Optional[torch.Generator]:
    """A CPU generator seeded from ``(seed, step)`` (NumPy's ``SeedSequence`` mixing, so
    nearby seeds and steps give unrelated streams), and ``stream`` when not 0 (another use
    of the same step draws apart); ``None`` (torch's global RNG) when ``seed`` is ``None``."""
    if seed is None:
        return None
    entropy = [int(seed), int(step)] + ([int(stream)] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def pair_scenes(num_records: int, num_scenes: int,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """``(num_records,)`` int64 scene index of each record: a random permutation of the
    scenes, cycled when there are more records than scenes (each scene then serves
    ``ceil`` or ``floor`` of ``num_records / num_scenes`` records)."""
    if num_scenes < 1:
        raise ValueError("compositing needs at least one new-data image per step, got none")
    order = torch.randperm(num_scenes, generator=generator)
    return order[torch.arange(num_records) % num_scenes]


def top_count_mask(scores: Tensor, counts: Tensor) -> Tensor:
    """``(B, T)`` bool mask of the ``counts[i]`` highest of row i of ``(B, T)`` ``scores``
    (ties broken by position, as the memory's top-k)."""
    rank = rank_tokens(scores.float(), "topk").argsort(1)
    return rank < counts.to(rank.device)[:, None]


class SceneCompositor:
    """Builds the composite inputs of a memory batch from the current new-data batch.

    :param scorer: the :class:`~avalanche_cts.scorers.base.TokenScorer` whose top tokens of
        each scene are removed, run on the current model with no label (its ``score`` is
        checked by :func:`~avalanche_cts.scorers.base.checked_scores`); a ``random`` scorer
        is not called: its scores are drawn from the step's generator, so the memory's
        stream is not touched.
    """

    def __init__(self, scorer):
        self.scorer = scorer

    @property
    def random(self) -> bool:
        """Whether scene tokens are removed at random."""
        return getattr(self.scorer, "name", "") == "random"

    def scene_scores(self, model: nn.Module, scenes: Tensor, num_tokens: int,
                     generator: Optional[torch.Generator] = None) -> Tensor:
        """``(B, T)`` float32 CPU relevance of the scenes' tokens under ``model`` (uniform
        draws from ``generator`` for a random scorer)."""
        if self.random:
            return torch.rand(len(scenes), num_tokens, generator=generator)
        return label_free_scores(self.scorer, model, scenes, num_tokens)

    def compose(self, model: nn.Module, scenes: Tensor, values: Tensor, positions: Tensor,
                valid: Optional[Tensor], patch_size: int, num_tokens: int,
                generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """Composite inputs of a memory batch: each record paired with a scene, the scene's
        top tokens (as many as the record's valid ones) removed, the record written in
        (:func:`~avalanche_cts.tokens.patches.composite_records`).

        :param scenes: ``(N, C, H, W)`` the new-data images (normalised model inputs).
        :param values: ``(B, K, P*P*C)`` the records' decoded token values.
        :param positions: ``(B, K)`` their grid positions; ``valid``: ``(B, K)`` bool or None.
        :param patch_size: ``P`` in pixels; ``num_tokens``: ``T``.
        :param generator: draws the pairing (then the random scores), ``None``: torch's
            global RNG.
        :return: ``images`` ``(B, C, H, W)`` and ``keep`` ``(B, T)`` bool.
        """
        pair = pair_scenes(len(values), len(scenes), generator).to(scenes.device)
        chosen = scenes[pair]
        counts = torch.full((len(values),), values.shape[1]) if valid is None \
            else valid.sum(1).cpu()
        remove = top_count_mask(self.scene_scores(model, chosen, num_tokens, generator), counts)
        return composite_records(chosen, values, positions, valid, remove.to(scenes.device),
                                 patch_size)

