"""Last-layer gradient features of a classifier, kept factored (kernel identity).

For a head ``z = W h + b`` and cross-entropy, the gradient of sample ``i`` w.r.t.
``(b, W)`` is ``g_i = [e_i, e_i ⊗ h_i]`` with ``e_i = softmax(z_i) - onehot(y_i)``.
Inner products use ``<g_i, g_j> = (e_i . e_j)(h_i . h_j + 1)``, i.e. the Gram matrix
``K = (E Eᵀ) ⊙ (H Hᵀ + 1)``: the ``C·(D+1)``-wide outer product is never built.

Modes (``mode=``): ``"last_layer"`` the exact ``[e, e ⊗ h]``; ``"bias"`` ``e`` only;
``"class_block"`` the own-class block ``[e_c, e_c h]`` (``c = y_i``, one column of ``E``).

:func:`extract_features` computes what they are built from: a classifier's pre-logits,
logits and labels over a dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .base import ClassFeatures

__all__ = ["GRADIENT_MODES", "CHUNK_BYTES", "GradientFeatures", "extract_features", "row_chunks"]

GRADIENT_MODES = ("last_layer", "bias", "class_block")
CHUNK_BYTES = 256 * 2**20  # temporary memory per chunk of a chunked computation

Index = Union[Tensor, slice, None]


def row_chunks(n: int, row_bytes: int, max_bytes: int = CHUNK_BYTES) -> Iterator[slice]:
    """Slices of ``range(n)`` whose rows take at most ``max_bytes`` (at least one row each)."""
    step = max(1, int(max_bytes // max(1, row_bytes)))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _take(x: Tensor, idx: Index) -> Tensor:
    return x if idx is None else x[idx]


@dataclass
class GradientFeatures:
    """Per-sample last-layer gradients of ``n`` samples in factored form.

    :ivar e: ``(n, m)`` output-side factor (``m = C``, or 1 for ``class_block``).
    :ivar h: ``(n, D)`` input-side factor, or ``None`` for ``bias`` (gradient = ``e``).
    """

    e: Tensor
    h: Optional[Tensor] = None

    @classmethod
    def from_class_features(
        cls,
        features: ClassFeatures,
        mode: str = "last_layer",
        dtype: Optional[torch.dtype] = None,
    ) -> "GradientFeatures":
        """Build from logits, targets and pre-logits (or the given ``errors``); ``dtype``
        defaults to at least float32."""
        if mode not in GRADIENT_MODES:
            raise ValueError(f"unknown gradient mode {mode!r}; choose one of {GRADIENT_MODES}")
        if features.errors is not None:
            if mode == "class_block":
                raise ValueError("class_block needs class logits; use last_layer or bias with "
                                 "precomputed gradient errors")
            dtype = dtype or torch.promote_types(features.errors.dtype, torch.float32)
            e = features.errors.to(dtype)
        else:
            logits = features.logits
            dtype = dtype or torch.promote_types(logits.dtype, torch.float32)
            y = features.targets.to(logits.device).long()
            e = torch.softmax(logits.to(dtype), dim=1)
            e[torch.arange(len(y), device=e.device), y] -= 1
            if mode == "class_block":
                e = e.gather(1, y[:, None])
        h = None if mode == "bias" else features.embeddings.to(device=e.device, dtype=dtype)
        return cls(e, h)

    def __len__(self) -> int:
        return int(self.e.shape[0])

    @property
    def dim(self) -> int:
        """Width of the (never materialised) gradient vector."""
        return self.e.shape[1] * (1 if self.h is None else self.h.shape[1] + 1)

    def kernel(self, rows: Index = None, cols: Index = None) -> Tensor:
        """Gram block ``K[rows][:, cols]`` of shape ``(len(rows), len(cols))``."""
        k = _take(self.e, rows) @ _take(self.e, cols).T
        if self.h is not None:
            k = k * (_take(self.h, rows) @ _take(self.h, cols).T + 1)
        return k

    def diag(self, idx: Index = None) -> Tensor:
        """Squared gradient norms ``K_ii``, shape ``(len(idx),)``."""
        d = _take(self.e, idx).square().sum(1)
        if self.h is not None:
            d = d * (_take(self.h, idx).square().sum(1) + 1)
        return d

    def distances(self, rows: Index = None, cols: Index = None, squared: bool = False) -> Tensor:
        """Euclidean gradient distances ``‖g_i - g_j‖`` (or squared) for a block."""
        d2 = self.diag(rows)[:, None] + self.diag(cols)[None, :] - 2 * self.kernel(rows, cols)
        d2 = d2.clamp_min_(0)
        return d2 if squared else d2.sqrt_()

    def target_correlations(self) -> Tuple[Tensor, Tensor]:
        """Correlations with the gradient sum ``b = Σ_i g_i``.

        :return: ``c`` of shape ``(n,)`` with ``c_j = <g_j, b>``, and the scalar ``‖b‖²``;
            O(n·m·D) time, row-chunked memory.
        """
        s = self.e.sum(0)
        c = self.e @ s
        bb = s.square().sum()
        if self.h is not None:
            m = self.e.T @ self.h  # (m, D): the weight part of b
            bb = bb + m.square().sum()
            row_bytes = self.h.shape[1] * self.h.element_size()
            for sl in row_chunks(len(self), row_bytes):
                c[sl] += ((self.e[sl] @ m) * self.h[sl]).sum(1)
        return c, bb


@torch.no_grad()
def extract_features(
    model: nn.Module, data, batch_size: int = 256, device=None
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(pre_logits (n, D), logits (n, C), targets (n,))`` of ``data`` (eval transforms).

    One pass in eval mode through :meth:`TimmViTAdapter.features`; every module's
    train/eval mode is restored afterwards. Outputs stay on ``device`` (default: the
    model's).
    """
    from ..models import get_adapter

    adapter = get_adapter(model)
    device = device or next(model.parameters()).device
    data = data.eval() if hasattr(data, "eval") else data
    collate = getattr(data, "collate_fn", None)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
    modes = [m.training for m in model.modules()]
    model.eval()
    pres, logits, targets = [], [], []
    try:
        for x, y, *_ in loader:
            pre, z = adapter.features(x.to(device))
            pres.append(pre)
            logits.append(z)
            targets.append(torch.as_tensor(y).to(device))
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
    return torch.cat(pres), torch.cat(logits), torch.cat(targets).long()
