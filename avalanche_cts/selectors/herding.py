"""Herding (iCaRL, Rebuffi et al. 2017, Alg. 4) on L2-normalised embeddings."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ClassFeatures, SampleSelector, Selection

__all__ = ["herding_order", "HerdingSelector"]


def herding_order(x: Tensor, k: int) -> Tensor:
    """iCaRL herding order of ``k`` of the ``(n, D)`` rows of ``x``.

    Step ``t`` picks ``argmin_i ‖μ - (φ_i + Σ_{s<t} φ_{p_s}) / t‖`` over unpicked ``i``,
    with ``φ`` the L2-normalised rows and ``μ`` their mean; ties go to the lowest index.
    O(k·n·D) time, O(n) extra memory.

    :return: ``(k,)`` int64 indices on ``x.device``.
    """
    phi = F.normalize(x, dim=1)
    n = phi.shape[0]
    k = max(0, min(int(k), n))
    mu = phi.mean(0)
    sq = phi.square().sum(1)
    to_mean = phi @ mu
    to_sum = torch.zeros_like(sq)  # φ_i . Σ_{s<t} φ_{p_s}
    picked = torch.zeros(n, dtype=torch.bool, device=phi.device)
    order = torch.empty(k, dtype=torch.long, device=phi.device)
    for t in range(1, k + 1):
        # ‖(φ_i + s)/t - μ‖² up to terms constant in i
        dist = (sq + 2 * to_sum) / t**2 - 2 * to_mean / t
        j = dist.masked_fill(picked, float("inf")).argmin()
        order[t - 1] = j
        picked[j] = True
        to_sum += phi @ phi[j]
    return order


class HerdingSelector(SampleSelector):
    """iCaRL herding on the embeddings; weights 1.

    :param dtype: working dtype (default: the embeddings' dtype, at least float32).
    """

    name = "herding"

    needs_features = True

    def __init__(self, dtype: Optional[torch.dtype] = None):
        self.dtype = dtype

    def _select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        x = self._features(n, features).embeddings
        x = x.to(self.dtype or torch.promote_types(x.dtype, torch.float32))
        idx = herding_order(x, k).cpu()
        return Selection(idx, torch.ones(len(idx), dtype=torch.float32))

    def __repr__(self) -> str:
        return f"HerdingSelector(dtype={self.dtype})"
