"""The token scorer interface.

Every scorer shares one call, ``score(model, images, targets) -> (B, T)`` float32
relevance of the patch tokens (prefix tokens excluded), higher = more relevant.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import torch
from torch import Tensor, nn


__all__ = ["TokenScorer", "check_inputs", "checked_scores"]


def check_inputs(access, images: Tensor, targets) -> Tensor:
    """Refuse, before any work, images the model cannot take (wrong shape, NaN or infinite
    values) and labels outside its head (``targets``: ``(B,)`` class indices, a BLIP text
    batch or None). Returns the images, float64 ones as float32 (the models' dtype)."""
    if not torch.is_tensor(images) or not images.is_floating_point() or images.dim() != 4:
        raise TypeError(
            f"images must be a float tensor (B, C, H, W) of normalised model inputs, got "
            f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))} "
            f"{getattr(images, 'dtype', '')}"
        )
    access.check_images(images)
    bad = ~torch.isfinite(images.detach().flatten(1)).all(1)
    if bool(bad.any()):
        raise ValueError(f"image {int(bad.nonzero()[0])} has NaN or infinite values: its scores "
                         f"would be meaningless; fix or drop that image")
    if images.dtype == torch.float64:
        images = images.float()
    if targets is None or isinstance(targets, dict):
        return images  # a collated text batch (BLIP): its adapter reads and checks it
    targets = torch.as_tensor(targets)
    if targets.dim() != 1 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be (B,) class indices, one per image: got shape "
                         f"{tuple(targets.shape)} for {images.shape[0]} images")
    if hasattr(access, "check_targets"):
        access.check_targets(targets)
    return images


def checked_scores(scorer, model: nn.Module, images: Tensor, targets, num_tokens: int) -> Tensor:
    """``scorer.score(model, images, targets)`` as ``(B, T)`` float32 CPU scores, after
    checking what a user-supplied scorer returned: a real tensor of ``(B, num_tokens)``
    finite scores (one per patch token of each image, prefix tokens excluded).

    :raises TypeError, ValueError: naming the scorer class and what was expected.
    """
    scores = scorer.score(model, images, targets)
    name, expected = type(scorer).__name__, (len(images), num_tokens)
    if not torch.is_tensor(scores) or scores.dtype == torch.bool or scores.is_complex():
        raise TypeError(f"{name}.score returned {type(scores).__name__} "
                        f"{getattr(scores, 'dtype', '')}, expected a real tensor of shape "
                        f"(B, T) = {expected}: one score per patch token")
    if tuple(scores.shape) != expected:
        raise ValueError(f"{name}.score returned shape {tuple(scores.shape)} for {len(images)} "
                         f"images of {num_tokens} patch tokens, expected (B, T) = {expected}: "
                         f"one score per patch token, prefix (CLS) tokens excluded")
    bad = ~torch.isfinite(scores.detach()).all(1)
    if bool(bad.any()):
        raise ValueError(f"{name}.score returned NaN or infinite scores for image "
                         f"{int(bad.nonzero()[0])} of the batch: token ranks would be "
                         f"arbitrary; return finite scores")
    return scores.float().cpu()

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
