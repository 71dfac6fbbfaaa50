"""GRAD-MATCH (Killamsetty et al., ICML 2021): non-negative regularised OMP per class.

Minimises ``E_λ(S, w) = ‖Σ_{i∈S} w_i g_i - b‖² + λ‖w‖²`` with ``b = Σ_i g_i``
(the class's summed last-layer gradient) and ``w ≥ 0``, by Batch-OMP in kernel form with an
incremental Cholesky factor of ``K_SS + λI`` and a final non-negative re-fit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor

from .base import ClassFeatures, SampleSelector, Selection
from .features import GRADIENT_MODES, GradientFeatures

__all__ = ["OMPResult", "omp_select", "GradMatchSelector"]

log = logging.getLogger(__name__)


@dataclass
class OMPResult:
    """Output of :func:`omp_select`.

    :ivar order: ``(t,)`` int64 atoms in selection order (``t ≤ k``).
    :ivar weights: ``(t,)`` non-negative weights minimising ``E_λ`` on ``order``.
    :ivar objective: ``(t + 1,)`` ``E_λ`` of the in-loop (unconstrained) fits, from the
        empty set; non-increasing.
    """

    order: Tensor
    weights: Tensor
    objective: Tensor


def _nonneg_refit(chol: Tensor, y: Tensor) -> Tensor:
    """``argmin_{w ≥ 0} wᵀQw - 2wᵀc`` for ``Q = L Lᵀ``, ``y = L⁻¹c``: NNLS(Lᵀ, y)."""
    lt = chol.T.detach().cpu().double().numpy()
    w, _ = nnls(lt, y.detach().cpu().double().numpy(), maxiter=50 * max(1, lt.shape[1]))
    return torch.from_numpy(np.ascontiguousarray(w)).to(device=y.device, dtype=y.dtype)


def _grown(x: Tensor, rows: int, cols: int) -> Tensor:
    """``x`` zero-padded to ``(rows, cols)``."""
    out = x.new_zeros(rows, cols)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def omp_select(g: GradientFeatures, k: int, lam: float = 0.5, tol: float = 0.0) -> OMPResult:
    """Batch-OMP on the kernel of ``g`` matching the gradient sum; at most ``k`` atoms.

    Step ``t``: ``p = c - G w`` (correlations with the residual, ``G`` the cached kernel
    columns of the chosen atoms); pick ``argmax p`` among unchosen atoms, stop when it is
    ``≤ 0`` (only positively correlated atoms), when ``E_λ ≤ tol²·‖b‖²`` or when the
    factor loses rank; then ``w = (K_SS + λI)⁻¹ c_S``. O(k·n·(m+D) + k²·n) time,
    ``t·n`` cached values for ``t`` atoms.
    The returned weights are re-fitted under ``w ≥ 0`` when the fit has negative entries.
    """
    n = len(g)
    k = max(0, min(int(k), n))
    dev, dt = g.e.device, g.e.dtype
    c, bb = g.target_correlations()
    diag = g.diag()
    cache = c.new_zeros(0, n)  # row t = K[order[t], :]; grown by doubling up to (k, n)
    chol = c.new_zeros(0, 0)  # lower Cholesky factor of K_SS + λI, grown likewise
    y = torch.empty(k, device=dev, dtype=dt)  # L⁻¹ c_S, grows by one entry per step
    order = torch.empty(k, dtype=torch.long, device=dev)
    chosen = torch.zeros(n, dtype=torch.bool, device=dev)
    objective = [bb]
    w = c.new_empty(0)
    t = 0
    while t < k:
        if t == len(cache):
            cap = min(k, max(64, 2 * t))
            cache, chol = _grown(cache, cap, n), _grown(chol, cap, cap)
        p = c - w @ cache[:t]
        j = p.masked_fill(chosen, float("-inf")).argmax()
        if not p[j] > 0:
            break
        col = g.kernel(None, j.reshape(1))[:, 0]
        d2 = diag[j] + lam
        if t:
            row = torch.linalg.solve_triangular(
                chol[:t, :t], col[order[:t], None], upper=False
            )[:, 0]
            d2 = d2 - row.square().sum()
            chol[t, :t] = row
        if not d2 > 1e-10 * (diag[j] + lam):
            break  # atom (numerically) in the span of the chosen ones
        chol[t, t] = d2.sqrt()
        y[t] = (c[j] - (chol[t, :t] * y[:t]).sum()) / chol[t, t]
        cache[t] = col
        order[t] = j
        chosen[j] = True
        t += 1
        objective.append(bb - y[:t].square().sum())  # E_λ = ‖b‖² - c_Sᵀ w
        w = torch.linalg.solve_triangular(chol[:t, :t].T, y[:t, None], upper=True)[:, 0]
        if tol > 0 and objective[-1].clamp_min(0).sqrt() <= tol * bb.sqrt():
            break
    if t and bool((w < 0).any()):
        w = _nonneg_refit(chol[:t, :t], y[:t])
    return OMPResult(order[:t], w, torch.stack(objective))


class GradMatchSelector(SampleSelector):
    """Per-class GradMatch; an under-filled budget is filled at random with the mean weight.

    :param features: gradient mode, one of ``GRADIENT_MODES``.
    :param lam: ridge ``λ`` of ``E_λ``.
    :param tol: stop when ``E_λ ≤ tol²·‖b‖²`` (0: run to ``k`` atoms).
    :param dtype: working dtype (float64 default: Cholesky of ``K_SS + λI``).
    :param seed: seed of the fill generator.
    """

    name = "gradmatch"

    needs_features = True

    def __init__(
        self,
        features: str = "last_layer",
        lam: float = 0.5,
        tol: float = 0.0,
        dtype: torch.dtype = torch.float64,
        seed: int = 0,
    ):
        if features not in GRADIENT_MODES:
            raise ValueError(f"unknown gradient mode {features!r}; choose one of {GRADIENT_MODES}")
        if lam < 0 or tol < 0:
            raise ValueError(f"lam and tol must be non-negative, got {lam}, {tol}")
        self.features, self.lam, self.tol = features, float(lam), float(tol)
        self.dtype, self.seed = dtype, int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        feats = self._features(n, features)
        g = GradientFeatures.from_class_features(feats, self.features, self.dtype)
        k = max(0, min(int(k), n))
        res = omp_select(g, k, self.lam, self.tol)
        idx, w = res.order.cpu(), res.weights.cpu().float()
        missing = k - len(idx)
        if missing:
            log.info("GradMatch stopped at %d of %d samples; the rest is random", len(idx), k)
            free = torch.ones(n, dtype=torch.bool)
            free[idx] = False
            rest = free.nonzero()[:, 0]
            extra = rest[torch.randperm(len(rest), generator=self.generator)[:missing]]
            fill = float(w.mean()) if len(w) else 1.0
            idx = torch.cat([idx, extra])
            w = torch.cat([w, torch.full((missing,), fill)])
        return Selection(idx, w)

    def __repr__(self) -> str:
        return (
            f"GradMatchSelector(features={self.features!r}, lam={self.lam}, tol={self.tol}, "
            f"seed={self.seed})"
        )
