"""GradLRP: the generic gradient-weighted attention rule of Chefer, Gur & Wolf (ICCV 2021)."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..models.attention import AttentionAccess
from .attribution import GradientScorer

__all__ = ["GradLRPScorer", "gradient_weighted_attention"]


def gradient_weighted_attention(grad: Tensor, attn: Tensor) -> Tensor:
    """``Ā = E_h[(∇A ⊙ A)^+]``: ``(B, H, N, N)`` gradient and attention to a float32 ``(B, N, N)`` map.

    The clamp comes before the head mean.
    """
    return (grad.float() * attn.float()).clamp_(min=0).mean(dim=1)


class GradLRPScorer(GradientScorer):
    """``R = (I + Ā_L) ⋯ (I + Ā_s)``, score ``qᵀ R[:, p + j]`` (``q``: class-token row, patch
    mean, or for BLIP the relevance of each output token, :meth:`AttentionAccess.readout_weights`).

    Row-vector form inside the backward pass: gradient hooks on the attention maps fire from
    block L down to s and update ``r <- r + r Ā_b``, so neither ``N x N`` products nor all
    blocks' gradients are stored. The target evidence (not a loss) is differentiated.

    :param start_layer: first block s of the product (negative counts from the end).
    :param target: ``"label"`` (default) or ``"pred"``.
    """

    name = "gradlrp"

    def __init__(self, start_layer: int = 0, target: str = "label"):
        super().__init__(target)
        self.start_layer = int(start_layer)

    def relevance(self, access: AttentionAccess, images: Tensor, targets) -> Tensor:
        blocks = access.block_indices(self.start_layer)
        state = {"r": None, "calls": 0}

        def make_hook(attn: Tensor):
            def hook(grad: Tensor) -> None:
                abar = gradient_weighted_attention(grad, attn.detach())
                r = state["r"]
                state["r"] = r + torch.bmm(r[:, None, :], abar)[:, 0]
                state["calls"] += 1

            return hook

        with torch.enable_grad(), contextlib.ExitStack() as stack:
            score, maps, state["r"] = self.target_objective(access, images, targets, blocks)
            for attn in maps:
                stack.callback(attn.register_hook(make_hook(attn)).remove)
            torch.autograd.grad(score, maps[0])
        if state["calls"] != len(maps):
            raise RuntimeError(f"gradients reached {state['calls']} of {len(maps)} attention maps")
        return state["r"][:, access.num_prefix_tokens:]
