"""The token scorer interface and its registry.

Every scorer shares one call, ``score(model, images, targets) -> (B, T)`` float32
relevance of the patch tokens (prefix tokens excluded), higher = more relevant.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Dict, Optional, Type, Union

import torch
from torch import Tensor, nn

__all__ = ["TokenScorer", "register_scorer", "get_scorer", "list_scorers"]

_SCORERS: Dict[str, Type["TokenScorer"]] = {}


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


def register_scorer(name: str) -> Callable[[Type[TokenScorer]], Type[TokenScorer]]:
    """Class decorator adding a scorer to the registry under ``name``."""

    def deco(cls: Type[TokenScorer]) -> Type[TokenScorer]:
        cls.name = name
        _SCORERS[name] = cls
        return cls

    return deco


def list_scorers():
    """Registered scorer names."""
    return sorted(_SCORERS)


def get_scorer(scorer: Union[str, TokenScorer], **options) -> TokenScorer:
    """Return a scorer object from a registered name (with ``options``) or pass one through."""
    if isinstance(scorer, TokenScorer):
        if options:
            raise ValueError("options can only be given together with a scorer name")
        return scorer
    if not isinstance(scorer, str) or scorer.lower() not in _SCORERS:
        raise ValueError(f"unknown token scorer {scorer!r}; choose one of {list_scorers()}")
    return _SCORERS[scorer.lower()](**options)
