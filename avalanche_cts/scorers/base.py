"""The token scorer interface and its registry.

Every scorer shares one call, ``score(model, images, targets) -> (B, T)`` float32
relevance of the patch tokens (prefix tokens excluded), higher = more relevant.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

from torch import Tensor, nn

from ..registry import Registry

__all__ = ["TokenScorer", "register_scorer", "get_scorer", "list_scorers"]

class TokenScorer(ABC):
    """Ranks the patch tokens of images by relevance for a model's prediction.

    Subclasses set ``name`` and ``needs_grad`` and implement :meth:`score`.
    """

    name: str = ""
    needs_grad: bool = False

    @abstractmethod
    def score(self, model: nn.Module, images: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        """Relevance of each patch token.

        :param model: the vision transformer (left in the mode it was found in).
        :param images: ``(B, C, H, W)`` model inputs.
        :param targets: ``(B,)`` class indices; ``None`` lets the scorer use its default.
        :return: ``(B, T)`` float32 scores on ``images.device``.
        """

    def __call__(self, model: nn.Module, images: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        return self.score(model, images, targets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_REGISTRY: Registry[TokenScorer] = Registry("token scorer", TokenScorer)
register_scorer = _REGISTRY.register
"""Class decorator adding a scorer to the registry under a name."""
list_scorers = _REGISTRY.names
get_scorer = _REGISTRY.get
"""A scorer object from a registered name (with options), or the scorer passed in."""
