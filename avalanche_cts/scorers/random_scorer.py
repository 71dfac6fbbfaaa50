"""Random token relevance: the baseline every attribution scorer must beat."""
from typing import Optional

import torch
from torch import Tensor, nn

from .attention import AttentionAccess
from .base import TokenScorer, register_scorer

__all__ = ["RandomScorer"]


@register_scorer("random")
class RandomScorer(TokenScorer):
    """Uniform random scores from a seeded generator, so selections are reproducible.

    :param seed: seed of the generator; successive calls continue the same stream.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def score(self, model: nn.Module, images: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        from ..models import get_adapter

        source = model if isinstance(model, AttentionAccess) else get_adapter(model)
        scores = torch.rand(images.shape[0], source.num_tokens, generator=self.generator)
        return scores.to(images.device)

    def __repr__(self) -> str:
        return f"RandomScorer(seed={self.seed})"
