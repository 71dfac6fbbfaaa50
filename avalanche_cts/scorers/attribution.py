"""Shared frame of the attribution scorers: eval mode, target choice, float32 output."""
from __future__ import annotations

from abc import abstractmethod
from typing import List, Sequence, Tuple

from torch import Tensor, nn

from ..models import attention_access
from ..models.attention import AttentionAccess, eval_mode
from .base import TokenScorer, check_inputs

__all__ = ["AttributionScorer", "GradientScorer", "TARGETS"]

TARGETS = ("label", "pred")


class AttributionScorer(TokenScorer):
    """A scorer that reads a model through :class:`~.attention.AttentionAccess`.

    ``score`` switches the model to eval mode (restored afterwards) and returns ``(B, P)``
    float32 scores; subclasses implement :meth:`relevance`. ``targets`` are class indices for
    classifiers and the collated text batch for BLIP (each sample's answer or caption).
    """

    def score(self, model: nn.Module, images: Tensor, targets=None) -> Tensor:
        access = attention_access(model)
        images = check_inputs(access, images, targets)
        with eval_mode(access.eval_scope()):
            return self.relevance(access, images, targets).float()

    @abstractmethod
    def relevance(self, access: AttentionAccess, images: Tensor, targets) -> Tensor:
        """``(B, P)`` relevance of the patch tokens of ``images`` (model already in eval mode)."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


class GradientScorer(AttributionScorer):
    """Attribution from gradients of the target evidence w.r.t. attention probabilities.

    The evidence is :meth:`AttentionAccess.evidence` (a classifier's target logit, BLIP's answer
    log-likelihood). Gradients are taken with ``torch.autograd.grad``: nothing accumulates in
    ``.grad``.

    :param target: ``"label"`` explains the given labels, ``"pred"`` the predicted class.
    """

    needs_grad = True

    def __init__(self, target: str = "label"):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target

    def target_objective(
        self, access: AttentionAccess, images: Tensor, targets, blocks: Sequence[int]
    ) -> Tuple[Tensor, List[Tensor], Tensor]:
        """Forward with the attention of ``blocks`` captured; returns (summed evidence, maps,
        ``(B, N)`` query weights from :meth:`AttentionAccess.readout_weights`).

        Call under ``torch.enable_grad()``. The input gets ``requires_grad`` so a graph exists
        even when every parameter is frozen. The summed evidence is differentiated (not a
        loss): samples are independent, so one gradient gives every sample's maps.
        """
        x = images.detach().requires_grad_(True)
        y = access.resolve_targets(x, targets, self.target)
        with access.capture_attention(blocks) as maps:
            evidence, states = access.evidence(x, y)
        if len(maps) != len(blocks):
            raise RuntimeError(
                f"captured {len(maps)} attention maps for {len(blocks)} blocks: the model's "
                f"attention did not run through the hooked modules (fused or replaced attention?)"
            )
        score = evidence.float().sum()
        return score, maps, access.readout_weights(score, states, images.shape[0])
