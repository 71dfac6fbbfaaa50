"""Uniform random selection per class (seeded)."""
from typing import Optional

import torch

from .base import ClassFeatures, SampleSelector, Selection, register_selector

__all__ = ["RandomSelector"]


@register_selector("random")
class RandomSelector(SampleSelector):
    """Uniform sample without replacement; the draw order is the priority order.

    :param seed: seed of the generator; successive calls continue the same stream.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        k = max(0, min(int(k), int(n)))
        idx = torch.randperm(n, generator=self.generator)[:k]
        return Selection(idx, torch.ones(k, dtype=torch.float32))

    def __repr__(self) -> str:
        return f"RandomSelector(seed={self.seed})"
