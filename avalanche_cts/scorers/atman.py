"""AtMan (Deiseroth et al., NeurIPS 2023): relevance by suppressing attention to tokens.

Written from the paper. Explaining token i multiplies the pre-softmax attention scores of every
query toward key i, and toward keys k of conceptually similar tokens, by ``m_ik`` in all blocks
and heads; since scores are ``q · k / √d`` this is done by scaling the key vectors, which works
with fused attention. Relevance of i = loss(suppressed) - loss(plain).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.attention import AttentionAccess
from .attribution import TARGETS, AttributionScorer

__all__ = ["AtManScorer", "suppression_multipliers"]


def suppression_multipliers(
    embeddings: Tensor, factor: float = 0.9, threshold: float = 0.7, num_prefix_tokens: int = 1
) -> Tensor:
    """Key multipliers for suppressing each patch token in turn.

    ``M[b, i, p + k] = 1 - factor * s_ik`` where the cosine similarity ``s_ik`` of patch
    embeddings i and k is at least ``threshold``, else 1; ``M[b, i, p + i] = 1 - factor``;
    prefix columns are 1 (never suppressed).

    :param embeddings: ``(B, P, D)`` patch embeddings (before position embeddings).
    :return: ``(B, P, p + P)`` float32 multipliers.
    """
    e = F.normalize(embeddings.float(), dim=-1)
    sim = e @ e.transpose(1, 2)
    m = torch.where(sim >= threshold, 1.0 - factor * sim, torch.ones_like(sim))
    m.diagonal(dim1=1, dim2=2).fill_(1.0 - factor)
    b, p_tok, _ = m.shape
    return torch.cat([m.new_ones(b, p_tok, num_prefix_tokens), m], dim=2)


class AtManScorer(AttributionScorer):
    """``rel_i = L(x with token i suppressed, y) - L(x, y)``; higher = suppressing i hurts more.

    ``L`` is :meth:`AttentionAccess.losses`: the cross-entropy of the target class, or for BLIP
    the NLL of the sample's answer or caption.

    The P suppressed copies of every image run as batches of at most ``chunk_size`` copies
    (images of a batch are mixed within a chunk); no gradients, fused attention is kept.

    :param factor: suppression f (paper: 0.9); multiplier ``1 - f * s``.
    :param threshold: cosine-similarity threshold κ of conceptual suppression (paper: 0.7);
        above 1 only the token itself is suppressed.
    :param chunk_size: most perturbed copies per forward pass.
    :param max_memory_mb: optional cap on a chunk's activation memory; the chunk size is
        lowered to fit a rough per-copy estimate ``4 B * N * (H * N + 8 * D)``.
    :param target: ``"label"`` (default) or ``"pred"``.
    """

    name = "atman"

    def __init__(
        self,
        factor: float = 0.9,
        threshold: float = 0.7,
        chunk_size: int = 128,
        max_memory_mb: Optional[float] = None,
        target: str = "label",
    ):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        if not 0.0 <= factor <= 1.0:
            raise ValueError(
                f"factor (suppression strength) must be in [0, 1] (0 suppresses nothing), "
                f"got {factor!r}"
            )
        if not -1.0 <= threshold:
            raise ValueError(f"threshold (cosine similarity) must be >= -1, got {threshold!r}")
        if max_memory_mb is not None and not max_memory_mb > 0:
            raise ValueError(f"max_memory_mb must be positive or None, got {max_memory_mb!r}")
        self.factor = float(factor)
        self.threshold = float(threshold)
        self.chunk_size = int(chunk_size)
        self.max_memory_mb = max_memory_mb
        self.target = target

    def copies_per_chunk(self, access: AttentionAccess) -> int:
        """Perturbed copies per forward pass under ``chunk_size`` and ``max_memory_mb``."""
        if self.max_memory_mb is None:
            return self.chunk_size
        n = access.seq_len
        per_copy = 4 * n * (access.num_heads * n + 8 * access.embed_dim)
        return max(1, min(self.chunk_size, int(self.max_memory_mb * 2**20 // per_copy)))

    def relevance(self, access: AttentionAccess, images: Tensor, targets) -> Tensor:
        with torch.no_grad():
            y = access.resolve_targets(images, targets, self.target)
            ce0 = access.losses(images, y)
            mult = suppression_multipliers(
                access.patch_embeddings(images), self.factor, self.threshold, access.num_prefix_tokens
            )
            b, p_tok, n = mult.shape
            mult = mult.reshape(b * p_tok, n)
            owner = torch.arange(b, device=images.device).repeat_interleave(p_tok)
            ce = torch.empty(b * p_tok, device=images.device)
            step = self.copies_per_chunk(access)
            for start in range(0, b * p_tok, step):
                rows = slice(start, start + step)
                idx = owner[rows]
                with access.scale_keys(mult[rows]):
                    ce[rows] = access.losses(images[idx], access.take_targets(y, idx))
        return ce.view(b, p_tok) - ce0[:, None]
