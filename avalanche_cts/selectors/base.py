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

from .._checks import is_int


__all__ = [
    "ClassFeatures",
    "Selection",
    "SampleSelector",
    "check_selection",
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
            if not is_int(v) or v < 0:
                raise ValueError(f"{type(self).__name__}.select: {name} must be an integer >= 0, "
                                 f"got {v!r}")
        k, n = int(k), int(n)
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


def check_selection(selector, selection, k: int, n: int) -> Selection:
    """``selection`` (what ``selector.select(k, n, ...)`` returned) after checking it: a
    :class:`Selection` of at most ``min(k, n)`` distinct integer indices in ``[0, n)`` with
    finite weights.

    :raises TypeError, ValueError: naming the selector class and what was expected.
    """
    name = type(selector).__name__
    idx = getattr(selection, "indices", None)
    if not isinstance(selection, Selection) or not torch.is_tensor(idx) or idx.dim() != 1 \
            or idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise TypeError(f"{name}.select returned {type(selection).__name__} with indices "
                        f"{type(idx).__name__} {getattr(idx, 'dtype', '')}, expected a "
                        f"Selection of (k,) integer indices and (k,) weights")
    if len(idx) > min(k, n):
        raise ValueError(f"{name}.select returned {len(idx)} indices for k={k} of n={n} "
                         f"samples, expected at most {min(k, n)}")
    if len(idx) and not (0 <= int(idx.min()) and int(idx.max()) < n):
        raise ValueError(f"{name}.select returned indices {idx.tolist()} outside [0, {n}) "
                         f"(positions among the class's {n} samples)")
    if len(idx.unique()) != len(idx):
        raise ValueError(f"{name}.select returned an index twice ({idx.tolist()}): the sample "
                         f"would be stored twice; return distinct indices")
    weights = torch.as_tensor(selection.weights)
    if weights.shape != idx.shape or not bool(torch.isfinite(weights.float()).all()):
        raise ValueError(f"{name}.select returned weights {weights.tolist()}, expected "
                         f"{len(idx)} finite numbers, one per index")
    return selection
