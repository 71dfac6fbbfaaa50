"""Attention Rollout (Abnar & Zuidema, ACL 2020): class-agnostic attention flow to the readout."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ..models.attention import AttentionAccess
from .attribution import AttributionScorer

__all__ = ["RolloutScorer", "fuse_heads", "discard_lowest", "residual_rownorm", "rollout_row"]

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(probs: Tensor, mode: str = "mean") -> Tensor:
    """``(B, H, N, N)`` attention to a float32 ``(B, N, N)`` map by the mean, max or min over heads."""
    probs = probs.float()
    if mode == "mean":
        return probs.mean(dim=1)
    if mode == "max":
        return probs.amax(dim=1)
    return probs.amin(dim=1)


def discard_lowest(a: Tensor, ratio: float) -> Tensor:
    """Zero the lowest ``ratio`` fraction of the entries of each sample's ``(B, N, N)`` map."""
    k = int(a[0].numel() * ratio)
    if k == 0:
        return a
    flat = a.flatten(1)
    low = flat.topk(k, dim=1, largest=False).indices
    return flat.scatter(1, low, 0.0).view_as(a)


def residual_rownorm(a: Tensor) -> Tensor:
    """``rownorm(a + I)`` for ``(B, N, N)`` maps: attention mixed with the residual path."""
    a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    return a / a.sum(dim=-1, keepdim=True)


def rollout_row(maps: Sequence[Tensor], query: Tensor) -> Tensor:
    """``qᵀ M_L ⋯ M_s`` for maps ``[M_s, ..., M_L]`` of shape ``(B, N, N)`` and query weights ``(N,)``.

    Row-vector form: carries ``(B, N)`` instead of an ``(B, N, N)`` product. Returns ``(B, N)``.
    """
    r = query.to(maps[0].dtype).expand(maps[0].shape[0], -1)
    for m in reversed(maps):
        r = torch.bmm(r[:, None, :], m)[:, 0]
    return r


class RolloutScorer(AttributionScorer):
    """Rollout: ``r = qᵀ Ã_L ⋯ Ã_s``, ``Ã_b = rownorm(fuse_h(A_b) + I)``; score ``r[p + j]``.

    ``q`` is the class-token row (or the patch mean for average-pooled models). Class-agnostic:
    targets are ignored.

    :param start_layer: first block s of the product (negative counts from the end).
    :param head_fusion: ``"mean"`` (default), ``"max"`` or ``"min"`` over heads.
    :param discard_ratio: fraction of the lowest fused attention entries zeroed per sample before
        the identity is added (0 keeps all).
    """

    name = "rollout"

    def __init__(self, start_layer: int = 0, head_fusion: str = "mean", discard_ratio: float = 0.0):
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.start_layer = int(start_layer)
        self.head_fusion = head_fusion
        self.discard_ratio = float(discard_ratio)

    def relevance(self, access: AttentionAccess, images: Tensor, targets: Optional[Tensor]) -> Tensor:
        blocks = access.block_indices(self.start_layer)
        with torch.no_grad():
            _, maps = access.forward_with_attention(
                images, blocks, reduce=lambda a: fuse_heads(a, self.head_fusion)
            )
            maps = [residual_rownorm(discard_lowest(a, self.discard_ratio)) for a in maps]
            r = rollout_row(maps, access.query_weights(images.device))
        return r[:, access.num_prefix_tokens:]
