"""Uniform random selection per class (seeded)."""
from typing import Optional

import torch

from ..registry import Seeded
from .base import ClassFeatures, SampleSelector, Selection, register_selector

__all__ = ["RandomSelector"]


@register_selector("random")
class RandomSelector(Seeded, SampleSelector):
    """Uniform sample without replacement; the draw order is the priority order.

    :param seed: seed of the generator; successive calls continue the same stream.
    """

    def _select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        k = max(0, min(int(k), int(n)))
        idx = torch.randperm(n, generator=self.generator)[:k]
        return Selection(idx, torch.ones(k, dtype=torch.float32))
