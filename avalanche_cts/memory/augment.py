"""Memory records varied each time they are replayed: mirrored, and moved on the token grid.

A small memory is replayed many times; the same few records seen over and over are learned
by heart. Replay can vary them at no cost in bytes, as image augmentation varies whole
samples: a record is mirrored left to right (its positions and each token's pixels), and all
its tokens move together by a few whole tokens along each grid axis, never past the grid's
edge (so a record keeps every token: a whole-image record, which fills the grid, only
mirrors). Moving an object's tokens suits scenes whose objects sit anywhere (Cluttered
Fashion-MNIST), mirroring suits classes without a left and a right.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._checks import check, is_int, is_real
from ..tokens.patches import mirror_tokens, shift_positions

__all__ = ["RecordAugmentation"]


class RecordAugmentation:
    """Random mirroring and moving of a batch of records, drawn per record.

    :param flip: probability in [0, 1] that a record is mirrored left to right.
    :param shift: most whole tokens (>= 0) a record moves along each grid axis; each record
        draws its rows and columns uniformly among the moves that keep all its tokens on the
        grid.
    """

    def __init__(self, flip: float = 0.0, shift: int = 0):
        check(is_real(flip) and 0.0 <= flip <= 1.0, "replay_flip", flip, "a number in [0, 1]")
        check(is_int(shift) and shift >= 0, "replay_shift", shift, "an integer >= 0")
        self.flip = float(flip)
        self.shift = int(shift)

    @property
    def active(self) -> bool:
        """Whether it changes records at all."""
        return self.flip > 0 or self.shift > 0

    def __call__(self, values: Tensor, positions: Tensor, valid: Optional[Tensor],
                 patch_size: int, channels: int, grid: Tuple[int, int],
                 generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """``(B, K, P*P*C)`` values and ``(B, K)`` positions of the varied records (padding,
        ``valid`` False, keeps its position)."""
        b, device = values.shape[0], values.device
        gh, gw = grid
        if self.flip > 0:
            chosen = (torch.rand(b, generator=generator) < self.flip).to(device)
            mirrored, moved = mirror_tokens(values, positions, patch_size, channels, gw)
            values = torch.where(chosen[:, None, None], mirrored, values)
            positions = torch.where(chosen[:, None], moved, positions)
        if self.shift > 0:
            rows = self._moves(positions // gw, valid, gh, generator)
            cols = self._moves(positions % gw, valid, gw, generator)
            shifted = shift_positions(positions, rows, cols, gw)
            positions = shifted if valid is None else torch.where(valid, shifted, positions)
        return values, positions

    def _moves(self, coord: Tensor, valid: Optional[Tensor], size: int,
               generator: Optional[torch.Generator]) -> Tensor:
        """``(B,)`` moves along one axis, uniform over those in [-shift, shift] that keep
        every valid ``coord`` (``(B, K)``) in [0, size)."""
        if valid is None:
            valid = torch.ones_like(coord, dtype=torch.bool)
        low = torch.where(valid, coord, size).amin(1)
        high = torch.where(valid, coord, -1).amax(1)
        lo = torch.clamp(-low, min=-self.shift)
        hi = torch.clamp(size - 1 - high, max=self.shift)
        u = torch.rand(coord.shape[0], generator=generator).to(coord.device)
        return lo + (u * (hi - lo + 1).to(u.dtype)).long().clamp_max(hi - lo)

    def __repr__(self) -> str:
        return f"RecordAugmentation(flip={self.flip:g}, shift={self.shift})"
