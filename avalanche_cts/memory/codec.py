"""Exact storage of pixels: encode normalised model inputs as 8-bit (or float) pixels and back."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..tokens.normalization import Normalization

__all__ = ["PixelCodec", "STORAGE_DTYPES"]

STORAGE_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "bfloat16": torch.bfloat16,
                  "float32": torch.float32}
"""Storage dtypes of pixels by name."""


@dataclass(frozen=True)
class PixelCodec:
    """Converts model inputs (normalised pixels) to the storage dtype and back.

    Works on token values ``(..., V)`` in :func:`~avalanche_cts.tokens.patches.patchify` layout
    (channel fastest, ``V = P*P*C``). ``uint8`` stores ``round(255 p)`` of the pixel
    ``p = x * std + mean`` of a model input ``x``, so the bytes held do not depend on the
    normalisation and an 8-bit image round-trips exactly; other dtypes store ``x`` as is.

    :ivar dtype: storage dtype.
    :ivar normalization: the model's input normalisation (identity: inputs in [0, 1]).
    """

    dtype: torch.dtype
    normalization: Optional[Normalization] = None

    @staticmethod
    def infer(images: Tensor, normalization: Optional[Normalization] = None) -> "PixelCodec":
        """uint8 when ``images`` ``(B, C, H, W)`` are exactly 8-bit pixels in [0, 1] after
        undoing ``normalization``, else their own dtype."""
        if images.dtype == torch.uint8:
            return PixelCodec(torch.uint8, normalization)
        x = images.detach().float()
        if normalization is not None:
            x = normalization.for_channels(x.shape[-3]).denormalize(x)
        if x.numel() and x.min() >= -1e-4 and x.max() <= 1 + 1e-4:
            if (x * 255 - (x * 255).round()).abs().max() < 1e-3:
                return PixelCodec(torch.uint8, normalization)
        return PixelCodec(images.dtype, normalization)

    @property
    def itemsize(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def _affine(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(mean, std)`` broadcastable to token values ``x`` ``(..., V)``."""
        c = self.normalization.channels
        if x.shape[-1] % c:
            raise ValueError(f"token width {x.shape[-1]} is not a multiple of {c} channels")
        reps = x.shape[-1] // c
        return (_per_value(self.normalization.mean, reps, x.device),
                _per_value(self.normalization.std, reps, x.device))

    def encode(self, x: Tensor) -> Tensor:
        """Model-input token values ``(..., V)`` to the storage dtype."""
        if self.dtype != torch.uint8:
            return x.to(self.dtype)
        if x.dtype == torch.uint8:
            return x
        x = x.float()
        if self.normalization is not None:
            mean, std = self._affine(x)
            x = x * std + mean
        return (x * 255).round_().clamp_(0, 255).to(torch.uint8)

    def pixels(self, x: Tensor) -> Tensor:
        """Stored values as float pixels in [0, 1] (for display)."""
        if self.dtype == torch.uint8:
            return x.float() / 255.0
        out = x.float()
        if self.normalization is not None:
            mean, std = self._affine(out)
            out = out * std + mean
        return out

    def decode(self, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Stored values back to model inputs (normalised), as ``dtype``."""
        if self.dtype != torch.uint8:
            return x.to(dtype)
        out = x.float().div_(255.0)  # in place on the one new tensor: the same values
        if self.normalization is not None:
            mean, std = self._affine(out)
            out.sub_(mean).div_(std)
        return out.to(dtype)


@functools.lru_cache(maxsize=64)
def _per_value(channels: Tuple[float, ...], reps: int, device: torch.device) -> Tensor:
    """``(reps * C,)`` float32 per-channel constants repeated over a token's values, made
    once per device (a decode on an accelerator then copies nothing from the host; shared,
    read only; ordinary tensors even when first made under ``torch.inference_mode``)."""
    with torch.inference_mode(False):
        return torch.tensor(channels, device=device).repeat(reps)
