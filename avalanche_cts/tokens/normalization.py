"""Input normalisation: the per-channel mean and std a backbone was trained with.

Streams feed a model ``(x - mean) / std`` of pixels ``x`` in [0, 1], as its own pre-processing
does (timm: ``pretrained_cfg`` mean/std, as ``timm.data.resolve_data_config`` gives them;
Hugging Face: the image processor's constants). In that space 0 is the mean colour, an empty
token: zero fill, token dropout and replay put 0 there. The memory stores exact 8-bit pixels
and inverts the normalisation when encoding (:class:`~avalanche_cts.memory.records.PixelCodec`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalization",
    "NormalizationLike",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std`` (pixel units, [0, 1] scale) of a model's inputs.

    ``Normalization((0.5,) * 3, (0.5,) * 3)`` maps [0, 1] to [-1, 1]; a single number stands
    for one channel (``Normalization(0.5, 0.5)``).
    """

    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def __post_init__(self):
        mean, std = _values(self.mean, "mean"), _values(self.std, "std")
        if not mean or len(mean) != len(std):
            raise ValueError(
                f"normalisation needs one mean and one std per channel, got mean {self.mean} and "
                f"std {self.std}"
            )
        if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
            raise ValueError(
                f"normalisation mean must be finite and std positive, got mean {mean}, std {std}"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def identity(cls, channels: int) -> "Normalization":
        """No normalisation: inputs stay in [0, 1] (mean 0, std 1)."""
        return cls((0.0,) * channels, (1.0,) * channels)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def for_channels(self, channels: int) -> "Normalization":
        """The same constants for ``channels`` channels: a single value is repeated; three
        values average to one for grey inputs (what timm does for ``in_chans=1``)."""
        if channels == self.channels:
            return self
        if self.channels == 1:
            return Normalization(self.mean * channels, self.std * channels)
        if channels == 1:
            return Normalization((sum(self.mean) / self.channels,),
                                 (sum(self.std) / self.channels,))
        raise ValueError(
            f"normalisation has {self.channels} channels, the model {channels}: pass "
            f"Normalization(mean, std) with {channels} values"
        )

    def _shape(self, x: Tensor, channel_dim: int) -> Tuple[Tensor, Tensor]:
        shape = [1] * x.dim()
        shape[channel_dim] = self.channels
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        return mean, std

    def normalize(self, x: Tensor, channel_dim: int = -3) -> Tensor:
        """``(x - mean) / std`` of float pixels in [0, 1] (channels at ``channel_dim``)."""
        mean, std = self._shape(x, channel_dim)
        return (x.float() - mean) / std

    def denormalize(self, x: Tensor, channel_dim: int = -3) -> Tensor:
        """Back to pixels in [0, 1]: ``x * std + mean`` (float32)."""
        mean, std = self._shape(x, channel_dim)
        return x.float() * std + mean


def _values(v, name: str) -> Tuple[float, ...]:
    """Per-channel values from a number or a sequence of numbers."""
    try:
        return (float(v),) if isinstance(v, (int, float)) else tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"normalisation {name} must be a number or one number per channel, "
                         f"got {v!r}") from None


NormalizationLike = Union[Normalization, Tuple[Sequence[float], Sequence[float]], nn.Module, None]
"""What streams and the buffer accept: constants, a ``(mean, std)`` pair, a model (its own
constants, :func:`avalanche_cts.models.resolve_normalization`) or ``None`` ([0, 1] inputs)."""
