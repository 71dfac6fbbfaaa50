"""The sample selector interface.

A selector picks ``k`` samples of one class, in priority order (the last ones are the
first to be dropped when the memory shrinks), with a weight each.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


__all__ = [
    "ClassFeatures",
    "Selection",
    "SampleSelector",
]

@dataclass
class ClassFeatures:
    """Per-sample features of the ``n`` samples of one class (eval transforms, no grad).

    :ivar embeddings: ``(n, D)`` pre-logit features (final-norm CLS or pooled token).
    :ivar logits: ``(n, C)`` logits of the model's head (``None`` when ``errors`` are given).
    :ivar targets: ``(n,)`` class indices.
    :ivar errors: optional ``(n, m)`` output-side factor of each sample's last-layer gradient
        for models that are not classifiers (BLIP: the LM head's ``softmax - onehot`` of the
        answer or caption tokens); replaces ``softmax(logits) - onehot(targets)``.
    """

    embeddings: Tensor
    logits: Optional[Tensor]
    targets: Tensor
    errors: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class Selection:
    """Selected samples of one class.

    :ivar indices: ``(k,)`` int64 positions in ``[0, n)``, unique, most important first.
    :ivar weights: ``(k,)`` float32 weights (1 for unweighted selectors).
    """

    indices: Tensor
    weights: Tensor

    def __post_init__(self):
        if self.indices.shape != self.weights.shape:
            raise ValueError("indices and weights must have the same shape")


class SampleSelector(ABC):
    """Chooses which samples of a class enter the memory.

    Subclasses set ``needs_features`` when :meth:`select` reads ``features``.
    """

    name: str = ""
    needs_features: bool = False

    def select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        """Select ``min(k, n)`` of ``n`` samples of one class, in priority order.

        :raises ValueError: for a negative or non-integer ``k`` or ``n``, missing or
            mismatched features, or non-finite features.
        """
        for name, v in (("k", k), ("n", n)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{type(self).__name__}.select: {name} must be an integer >= 0, "
                                 f"got {v!r}")
        if features is not None:
            if not isinstance(features, ClassFeatures):
                raise TypeError(f"features must be ClassFeatures, got {type(features).__name__}")
            bad = [f for f in ("embeddings", "logits") if getattr(features, f) is not None
                   and not torch.isfinite(getattr(features, f)).all()]
            if bad:
                raise ValueError(f"{type(self).__name__}.select: non-finite {bad[0]}: check the "
                                 f"images and the model for NaN/inf")
        if self.needs_features:
            self._features(n, features)
        return self._select(min(k, n), n, features)

    @abstractmethod
    def _select(self, k: int, n: int, features: Optional[ClassFeatures]) -> Selection:
        """Select ``k <= n`` samples (arguments already checked)."""

    def _features(self, n: int, features: Optional[ClassFeatures]) -> ClassFeatures:
        """Return ``features`` after checking they are given and describe ``n`` samples."""
        if features is None:
            raise ValueError(f"{type(self).__name__} needs the class's features (ClassFeatures)")
        if len(features) != n:
            raise ValueError(f"features describe {len(features)} samples, expected n={n}")
        return features

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
