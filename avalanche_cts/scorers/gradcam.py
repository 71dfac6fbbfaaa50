"""Attention GradCam (Chefer et al.'s ``generate_cam_attn`` baseline), batched."""
from __future__ import annotations

import torch
from torch import Tensor

from ..models.attention import AttentionAccess
from .attribution import GradientScorer

__all__ = ["GradCamScorer"]


class GradCamScorer(GradientScorer):
    """``GC_j = max(0, mean_h w_h A_L^h[q, p + j])``, ``w_h = mean_j ∂y_c/∂A_L^h[q, p + j]``.

    Last block only; ``q`` weights the query rows (:meth:`AttentionAccess.readout_weights`: the
    class-token row, the patch mean for average pooling, per-sample token relevance for BLIP);
    ``y_c`` is the target evidence (logit, or answer log-likelihood).

    :param target: ``"label"`` (default) or ``"pred"``.
    """

    name = "gradcam"

    def relevance(self, access: AttentionAccess, images: Tensor, targets) -> Tensor:
        with torch.enable_grad():
            score, (attn,), q = self.target_objective(access, images, targets,
                                                      access.block_indices(-1))
            (grad,) = torch.autograd.grad(score, attn)
        p = access.num_prefix_tokens
        a_row = torch.einsum("bn,bhnk->bhk", q, attn.detach().float())[..., p:]
        g_row = torch.einsum("bn,bhnk->bhk", q, grad.float())[..., p:]
        weights = g_row.mean(dim=-1, keepdim=True)
        return (weights * a_row).mean(dim=1).clamp(min=0)
