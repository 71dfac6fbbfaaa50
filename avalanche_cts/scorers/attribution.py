"""Shared frame of the attribution scorers: eval mode, target choice, float32 output."""
from __future__ import annotations

from abc import abstractmethod
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..models import attention_access
from ..models.attention import AttentionAccess, eval_mode
from .base import TokenScorer, check_inputs

__all__ = ["AttributionScorer", "GradientScorer", "TARGETS", "resolve_targets"]

TARGETS = ("label", "pred")


def resolve_targets(logits: Tensor, targets: Optional[Tensor], mode: str) -> Tensor:
    """``(B,)`` class indices to explain: the labels (``mode="label"``) or the argmax (``"pred"``).

    Without labels the prediction is used.
    """
    if mode not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {mode!r}")
    if mode == "pred" or targets is None:
        return logits.detach().argmax(dim=1)
    targets = torch.as_tensor(targets, device=logits.device).long().reshape(-1)
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"{targets.shape[0]} targets for {logits.shape[0]} images")
    return targets


class AttributionScorer(TokenScorer):
    """A scorer that reads a model through :class:`~.attention.AttentionAccess`.

    ``score`` switches the model to eval mode (restored afterwards) and returns ``(B, P)``
    float32 scores; subclasses implement :meth:`relevance`.
    """

    def score(self, model: nn.Module, images: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        access = attention_access(model)
        check_inputs(access, images, targets)
        with eval_mode(access.module):
            return self.relevance(access, images, targets).float()

    @abstractmethod
    def relevance(self, access: AttentionAccess, images: Tensor, targets: Optional[Tensor]) -> Tensor:
        """``(B, P)`` relevance of the patch tokens of ``images`` (model already in eval mode)."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


class GradientScorer(AttributionScorer):
    """Attribution from gradients of the target logit w.r.t. attention probabilities.

    Gradients are taken with ``torch.autograd.grad``: nothing accumulates in ``.grad``.

    :param target: ``"label"`` explains the given labels, ``"pred"`` the predicted class.
    """

    needs_grad = True

    def __init__(self, target: str = "label"):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target

    def target_logit(
        self, access: AttentionAccess, images: Tensor, targets: Optional[Tensor], blocks: Sequence[int]
    ) -> Tuple[Tensor, List[Tensor]]:
        """Forward with the attention of ``blocks`` captured; returns (sum of target logits, maps).

        Call under ``torch.enable_grad()``. The input gets ``requires_grad`` so a graph exists
        even when every parameter is frozen. The summed logit is differentiated (not a loss):
        samples are independent, so one gradient gives every sample's maps.
        """
        x = images.detach().requires_grad_(True)
        logits, maps = access.forward_with_attention(x, blocks)
        y = resolve_targets(logits, targets, self.target)
        return logits.gather(1, y[:, None]).float().sum(), maps
