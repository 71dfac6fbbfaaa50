"""Uniform random selection per class (seeded)."""
from typing import Optional

import torch

from ..registry import Seeded
from .base import ClassFeatures, SampleSelector, Selection

__all__ = ["RandomSelector"]


class RandomSelector(Seeded, SampleSelector):
    """Uniform sample without replacement; the draw order is the priority order.

    :param seed: seed of the generator; successive calls continue the same stream.
    """

    name = "random"

    def _select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        k = max(0, min(int(k), int(n)))
        idx = torch.randperm(n, generator=self.generator)[:k]
        return Selection(idx, torch.ones(k, dtype=torch.float32))
