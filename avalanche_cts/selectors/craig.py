"""CRAIG (Mirzasoleiman et al., ICML 2020): facility location on gradient features.

Greedy maximisation of ``F(S) = Σ_i (c - min_{j∈S} d_ij)`` (``c ≥ max d``), i.e. the
facility location of the similarity ``c - d``, with ``d`` the distance between
last-layer gradients. Any ``c ≥ max d`` gives the same greedy order and weights.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .base import ClassFeatures, SampleSelector, Selection
from .features import CHUNK_BYTES, GRADIENT_MODES, GradientFeatures, row_chunks

__all__ = ["FL_METHODS", "facility_location", "CraigSelector"]

FL_METHODS = ("lazy", "naive", "stochastic")

DistanceRows = Callable[[Tensor], Tensor]


def facility_location(
    rows: DistanceRows,
    n: int,
    k: int,
    bound: float,
    *,
    method: str = "lazy",
    batch: int = 64,
    epsilon: float = 0.01,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    block_bytes: int = CHUNK_BYTES,
) -> Tuple[Tensor, Tensor]:
    """Greedy facility location over ``n`` points; picks ``min(k, n)`` in greedy order.

    :param rows: ``idx (m,) -> (m, n)`` distances ``d[idx, :]`` of candidates to all points
        (symmetric ``d``, all ``≤ bound``).
    :param bound: ``c``; the gain of ``j`` is ``Σ_i max(cur_i - d_ij, 0)``, ``cur_i``
        the distance of ``i`` to the chosen set (``c`` when empty).
    :param method: ``"naive"`` (all gains each step), ``"lazy"`` (batched lazy greedy:
        re-evaluates the ``batch`` largest stale upper bounds until the argmax is fresh;
        the exact naive order, ties to the lowest index) or ``"stochastic"``
        (``⌈n/k·ln(1/ε)⌉`` random candidates per step, ``1 - 1/e - ε`` in expectation).
    :param block_bytes: at most this many bytes of distance rows at once.
    :return: ``(k,)`` int64 order and ``(k,)`` float32 weights = cluster sizes (points
        nearest to each chosen one, first chosen on ties; they sum to ``n``).
    """
    if method not in FL_METHODS:
        raise ValueError(f"unknown facility-location method {method!r}; choose one of {FL_METHODS}")
    k = max(0, min(int(k), n))
    g = _Greedy(rows, n, bound, device, dtype, block_bytes)
    order = torch.empty(k, dtype=torch.long, device=device)
    if method == "lazy":
        g.ub = g.gains(g.everyone)  # exact gains of the empty set
        g.fresh = torch.ones(n, dtype=torch.bool, device=device)
    per_step = max(1, math.ceil(n / max(k, 1) * math.log(1 / epsilon)))
    for t in range(k):
        if method == "naive":
            j = g.best_of_all()
        elif method == "stochastic":
            j = g.best_of_sample(per_step, generator)
        else:
            j = g.best_lazily(batch)
        g.add(j, t)
        order[t] = j
    weights = torch.bincount(g.assign, minlength=k)[:k].to(torch.float32)
    return order, weights


class _Greedy:
    """State of a greedy facility-location run: each point's distance to the chosen set
    (``cur``), the chosen point it is nearest to (``assign``), and for the lazy method the
    gains' upper bounds (``ub``) and which of them are exact for this step (``fresh``)."""

    def __init__(self, rows: DistanceRows, n: int, bound: float, device, dtype, block_bytes: int):
        self.rows, self.n, self.dtype, self.block_bytes = rows, n, dtype, block_bytes
        self.cur = torch.full((n,), float(bound), device=device, dtype=dtype)
        self.assign = torch.zeros(n, dtype=torch.long, device=device)
        self.chosen = torch.zeros(n, dtype=torch.bool, device=device)
        self.everyone = torch.arange(n, device=device)
        self.ub: Optional[Tensor] = None
        self.fresh: Optional[Tensor] = None

    def gains(self, idx: Tensor) -> Tensor:
        """Gains of candidates ``idx``, computed in row blocks of at most ``block_bytes``."""
        parts = [(self.cur - self.rows(idx[sl])).clamp_min_(0).sum(1)
                 for sl in row_chunks(len(idx), self.n * self.dtype.itemsize, self.block_bytes)]
        return torch.cat(parts) if parts else self.cur.new_empty(0)

    def best_of_all(self) -> Tensor:
        g = torch.full((self.n,), float("-inf"), device=self.cur.device, dtype=self.dtype)
        rest = self.everyone[~self.chosen]
        g[rest] = self.gains(rest)
        return g.argmax()

    def best_of_sample(self, size: int, generator) -> Tensor:
        rest = self.everyone[~self.chosen]
        cand = rest[torch.randperm(len(rest), generator=generator)[:size].to(rest.device)]
        cand = cand.sort().values
        return cand[self.gains(cand).argmax()]

    def best_lazily(self, batch: int) -> Tensor:
        """The argmax of the gains: re-evaluate the ``batch`` largest stale bounds until the
        largest bound is exact (gains only shrink as the set grows)."""
        ninf = float("-inf")
        while True:
            masked = self.ub.masked_fill(self.chosen, ninf)
            j = masked.argmax()
            if self.fresh[j]:
                break
            stale = masked.masked_fill(self.fresh, ninf)
            m = min(batch, int((~(self.fresh | self.chosen)).sum()))
            cand = stale.topk(m).indices
            self.ub[cand] = self.gains(cand)
            self.fresh[cand] = True
        self.fresh.zero_()
        return j

    def add(self, j: Tensor, t: int) -> None:
        """Choose point ``j`` as the ``t``-th facility."""
        d = self.rows(j.reshape(1))[0]
        self.assign[d < self.cur] = t
        self.cur = torch.minimum(self.cur, d)
        self.chosen[j] = True


class CraigSelector(SampleSelector):
    """Per-class CRAIG: facility location on last-layer gradients, weights = cluster sizes.

    :param features: gradient mode, one of ``GRADIENT_MODES``.
    :param method: ``"auto"`` (``"lazy"`` on a dense distance matrix when it takes at most
        ``max_matrix_bytes``, else ``"stochastic"`` on distance rows computed on the fly)
        or one of ``FL_METHODS``.
    :param squared: use squared distances (cords) instead of Euclidean (original).
    :param epsilon: stochastic greedy accuracy.
    :param batch: candidates re-evaluated at once by lazy greedy.
    :param max_matrix_bytes: largest dense ``n×n`` distance matrix to build.
    :param dtype: working dtype (float32 default; features are cast once).
    :param seed: seed of the stochastic-greedy generator.
    """

    name = "craig"

    needs_features = True

    def __init__(
        self,
        features: str = "last_layer",
        method: str = "auto",
        squared: bool = False,
        epsilon: float = 0.01,
        batch: int = 64,
        max_matrix_bytes: int = 2 * 2**30,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ):
        if features not in GRADIENT_MODES:
            raise ValueError(f"unknown gradient mode {features!r}; choose one of {GRADIENT_MODES}")
        if method != "auto" and method not in FL_METHODS:
            raise ValueError(f"unknown method {method!r}; choose 'auto' or one of {FL_METHODS}")
        self.features, self.method, self.squared = features, method, bool(squared)
        self.epsilon, self.batch = float(epsilon), int(batch)
        self.max_matrix_bytes = int(max_matrix_bytes)
        self.dtype, self.seed = dtype, int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        feats = self._features(n, features)
        g = GradientFeatures.from_class_features(feats, self.features, self.dtype)
        itemsize = self.dtype.itemsize
        dense = n * n * itemsize <= self.max_matrix_bytes
        if dense:
            dist = torch.empty(n, n, dtype=self.dtype, device=g.e.device)
            for sl in row_chunks(n, 3 * n * itemsize):
                dist[sl] = g.distances(sl, None, self.squared)
            bound = float(dist.max()) if n else 0.0

            def rows(idx: Tensor) -> Tensor:
                return dist[idx]
        else:
            top = float(g.diag().max().sqrt()) if n else 0.0
            bound = (2 * top) ** 2 if self.squared else 2 * top

            def rows(idx: Tensor) -> Tensor:
                return g.distances(idx, None, self.squared)
        method = self.method if self.method != "auto" else ("lazy" if dense else "stochastic")
        order, weights = facility_location(
            rows, n, k, bound, method=method, batch=self.batch, epsilon=self.epsilon,
            generator=self.generator, device=g.e.device, dtype=self.dtype,
        )
        return Selection(order.cpu(), weights.cpu())

    def __repr__(self) -> str:
        return (
            f"CraigSelector(features={self.features!r}, method={self.method!r}, "
            f"squared={self.squared}, seed={self.seed})"
        )
