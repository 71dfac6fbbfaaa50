"""Random token relevance: the baseline every attribution scorer must beat."""
from typing import Optional

import torch
from torch import Tensor, nn

from ..models import get_adapter
from ..models.attention import AttentionAccess
from ..registry import Seeded
from .base import TokenScorer, check_inputs

__all__ = ["RandomScorer"]


class RandomScorer(Seeded, TokenScorer):
    """Uniform random scores from a seeded generator, so selections are reproducible.

    :param seed: seed of the generator; successive calls continue the same stream.
    """

    name = "random"

    def score(self, model: nn.Module, images: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        source = model if isinstance(model, AttentionAccess) else get_adapter(model)
        images = check_inputs(source, images, targets)
        scores = torch.rand(images.shape[0], source.num_tokens, generator=self.generator)
        return scores.to(images.device)
