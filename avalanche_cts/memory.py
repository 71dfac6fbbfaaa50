"""Token memory storage: kept token values at their native dtype, with int16 positions.

A :class:`TokenGroup` holds the records of one (class, task) in priority order, packed
(ragged) so that records may keep different numbers of tokens:

* ``values``: ``(sum_k, V)`` token values (uint8 for 8-bit images);
* ``positions``: int16 grid positions of the partial records (a record keeping all T
  tokens stores none: its tokens are in grid order);
* ``lengths``: ``(n,)`` int16 tokens per record;
* ``weights``: ``(n,)`` float32 selector weights, only when kept.

Label and task id are stored once per group. ``nbytes`` is the exact size of all of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .tokens import scatter_tokens, unpatchify

__all__ = [
    "GROUP_HEADER_BYTES",
    "POSITION_DTYPE",
    "LENGTH_DTYPE",
    "PixelCodec",
    "TokenGroup",
    "TokenBatch",
    "collate_tokens",
]

POSITION_DTYPE = torch.int16
LENGTH_DTYPE = torch.int16
GROUP_HEADER_BYTES = 16
"""Label and task id of a group, stored as two int64."""


@dataclass(frozen=True)
class PixelCodec:
    """Converts model-input pixels in [0, 1] to the storage dtype and back.

    ``uint8`` stores ``round(255 x)``: exact for 8-bit images, error <= 1/510 otherwise.
    """

    dtype: torch.dtype

    @staticmethod
    def infer(images: Tensor) -> "PixelCodec":
        """uint8 when ``images`` are exactly 8-bit values in [0, 1], else their own dtype."""
        if images.dtype == torch.uint8:
            return PixelCodec(torch.uint8)
        x = images.detach().float()
        if x.numel() and x.min() >= 0 and x.max() <= 1:
            if (x * 255 - (x * 255).round()).abs().max() < 1e-3:
                return PixelCodec(torch.uint8)
        return PixelCodec(images.dtype)

    @property
    def itemsize(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def encode(self, x: Tensor) -> Tensor:
        if self.dtype == torch.uint8:
            if x.dtype == torch.uint8:
                return x
            return (x.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
        return x.to(self.dtype)

    def decode(self, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        if self.dtype == torch.uint8:
            return x.to(dtype) / 255.0
        return x.to(dtype)


class TokenGroup:
    """Records of one (class, task) in priority order: the last records are dropped first."""

    def __init__(self, label: int, task: int, num_tokens: int, token_dim: int, dtype: torch.dtype,
                 weighted: bool):
        self.label = int(label)
        self.task = int(task)
        self.full = int(num_tokens)
        self.values = torch.empty(0, token_dim, dtype=dtype)
        self.positions = torch.empty(0, dtype=POSITION_DTYPE)
        self.lengths = torch.empty(0, dtype=LENGTH_DTYPE)
        self.weights: Optional[Tensor] = torch.empty(0) if weighted else None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_tokens(self) -> int:
        """Tokens stored in the group."""
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        """Exact bytes held by the group (header included)."""
        n = self.values.nbytes + self.positions.nbytes + self.lengths.nbytes
        if self.weights is not None:
            n += self.weights.nbytes
        return n + GROUP_HEADER_BYTES

    def append(self, values: Sequence[Tensor], positions: Sequence[Tensor], weights: Sequence[float]):
        """Append records; ``values[i]`` is ``(k_i, V)`` in the storage dtype, ``positions[i]`` ``(k_i,)``."""
        if not values:
            return
        lengths = torch.tensor([len(p) for p in positions], dtype=LENGTH_DTYPE)
        self.values = torch.cat([self.values, *values])
        partial = [p.to(POSITION_DTYPE) for p in positions if len(p) < self.full]
        self.positions = torch.cat([self.positions, *partial])
        self.lengths = torch.cat([self.lengths, lengths])
        if self.weights is not None:
            self.weights = torch.cat([self.weights, torch.as_tensor(weights, dtype=torch.float32)])

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` records; the rest is released (copies, not views)."""
        if n >= len(self):
            return
        k = int(self.lengths[:n].long().sum())
        kp = int(self._partial_lengths()[:n].sum())
        self.values = self.values[:k].clone()
        self.positions = self.positions[:kp].clone()
        self.lengths = self.lengths[:n].clone()
        if self.weights is not None:
            self.weights = self.weights[:n].clone()

    def _partial_lengths(self) -> Tensor:
        lengths = self.lengths.long()
        return torch.where(lengths < self.full, lengths, torch.zeros_like(lengths))

    def offsets(self) -> Tuple[Tensor, Tensor]:
        """``(n + 1,)`` start offsets of the records in ``values`` and in ``positions``
        (derived, not stored)."""
        zero = torch.zeros(1, dtype=torch.long)
        return (torch.cat([zero, self.lengths.long().cumsum(0)]),
                torch.cat([zero, self._partial_lengths().cumsum(0)]))

    def record(self, i: int, offsets: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """``(values (k, V), positions (k,))`` of record ``i``."""
        vo, po = self.offsets() if offsets is None else offsets
        a, b = int(vo[i]), int(vo[i + 1])
        if b - a == self.full:
            return self.values[a:b], torch.arange(self.full, dtype=POSITION_DTYPE)
        return self.values[a:b], self.positions[int(po[i]):int(po[i + 1])]

    def state_dict(self) -> Dict:
        return {
            "label": self.label,
            "task": self.task,
            "num_tokens": self.full,
            "values": self.values,
            "positions": self.positions,
            "lengths": self.lengths,
            "weights": self.weights,
        }

    @classmethod
    def from_state(cls, state: Dict) -> "TokenGroup":
        g = cls(state["label"], state["task"], state["num_tokens"], state["values"].shape[1],
                state["values"].dtype, state["weights"] is not None)
        g.values = state["values"].clone()
        g.positions = state["positions"].clone()
        g.lengths = state["lengths"].clone()
        g.weights = None if state["weights"] is None else state["weights"].clone()
        return g


@dataclass
class TokenBatch:
    """A padded batch of memory records.

    :ivar values: ``(B, K, V)`` stored values (storage dtype).
    :ivar positions: ``(B, K)`` int64 positions.
    :ivar valid: ``(B, K)`` bool, False on padding (``None`` when all records have K tokens).
    :ivar labels: ``(B,)`` int64; ``tasks``: ``(B,)`` int64; ``weights``: ``(B,)`` float32.
    """

    values: Tensor
    positions: Tensor
    valid: Optional[Tensor]
    labels: Tensor
    tasks: Tensor
    weights: Tensor

    def to(self, device, non_blocking: bool = False) -> "TokenBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return TokenBatch(*(move(getattr(self, f)) for f in
                            ("values", "positions", "valid", "labels", "tasks", "weights")))

    def images(self, codec: PixelCodec, patch_size: int, channels: int, grid: Tuple[int, int],
               dtype: torch.dtype = torch.float32) -> Tensor:
        """Zero-filled ``(B, C, H, W)`` images with the kept tokens at their positions."""
        tokens = scatter_tokens(codec.decode(self.values, dtype), self.positions,
                                grid[0] * grid[1], self.valid)
        return unpatchify(tokens, patch_size, channels, grid)


def collate_tokens(items: List[Tuple[Tensor, Tensor, int, int, float]]) -> TokenBatch:
    """Collate ``(values (k,V), positions (k,), label, task, weight)`` items, padding to max k."""
    ks = [len(it[1]) for it in items]
    kmax = max(ks)
    b, v = len(items), items[0][0].shape[1]
    values = items[0][0].new_zeros(b, kmax, v)
    positions = torch.zeros(b, kmax, dtype=torch.long)
    valid = torch.zeros(b, kmax, dtype=torch.bool)
    for i, (val, pos, *_rest) in enumerate(items):
        values[i, : ks[i]] = val
        positions[i, : ks[i]] = pos.long()
        valid[i, : ks[i]] = True
    return TokenBatch(
        values,
        positions,
        None if min(ks) == kmax else valid,
        torch.tensor([it[2] for it in items], dtype=torch.long),
        torch.tensor([it[3] for it in items], dtype=torch.long),
        torch.tensor([it[4] for it in items], dtype=torch.float32),
    )
