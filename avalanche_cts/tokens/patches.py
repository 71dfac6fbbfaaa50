"""Patch tokens: cutting images into tokens, putting them back, and random keep masks.

Token layout follows MAE: an image ``(B, C, H, W)`` becomes ``(B, T, P*P*C)`` with
``T = (H/P) * (W/P)`` tokens in row-major grid order and the values of one token in
``(row, col, channel)`` order. Positions are integer indices into that grid.
"""
from __future__ import annotations

import functools
import math

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "check_patch_size",
    "compact_order",
    "composite_records",
    "gather_tokens",
    "keep_count",
    "kept_positions",
    "mask_to_pixels",
    "mirror_tokens",
    "patchify",
    "place_tokens",
    "random_keep_mask",
    "rank_tokens",
    "scatter_tokens",
    "shift_positions",
    "take_kept",
    "take_tokens",
    "unpatchify",
    "zero_dropped",
]


def check_patch_size(height: int, width: int, patch_size: int) -> Tuple[int, int]:
    """Return the token grid ``(H/P, W/P)``; raise if ``P`` does not divide ``H`` and ``W``."""
    if patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the patch size {patch_size}: "
            f"resize or crop the images to a multiple of {patch_size} (e.g. "
            f"{(height // patch_size) * patch_size}x{(width // patch_size) * patch_size}) "
            f"or use a model whose patch size divides the image size"
        )
    return height // patch_size, width // patch_size


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut ``(B, C, H, W)`` images into ``(B, T, P*P*C)`` tokens (any dtype)."""
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    gh, gw = check_patch_size(h, w, patch_size)
    p = patch_size
    x = images.reshape(b, c, gh, p, gw, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # B, gh, gw, p, p, C
    return x.reshape(b, gh * gw, p * p * c)


def unpatchify(tokens: Tensor, patch_size: int, channels: int, grid: Tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, T, P*P*C)`` tokens to ``(B, C, H, W)`` images."""
    b, t, v = tokens.shape
    gh, gw = grid
    p = patch_size
    if t != gh * gw or v != p * p * channels:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not match grid {grid}, "
            f"patch size {p} and {channels} channels"
        )
    x = tokens.reshape(b, gh, gw, p, p, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # B, C, gh, p, gw, p
    return x.reshape(b, channels, gh * p, gw * p)


def scatter_tokens(
    values: Tensor, positions: Tensor, num_tokens: int, valid: Optional[Tensor] = None,
    fill: Optional[Tensor] = None,
) -> Tensor:
    """Place kept tokens at their positions in a ``(B, T, V)`` token grid.

    :param values: ``(B, K, V)`` kept token values.
    :param positions: ``(B, K)`` integer grid positions.
    :param valid: optional ``(B, K)`` bool mask; padded entries (False) are ignored.
    :param fill: ``(B, T, V)`` values of the other positions (default: 0).
    """
    b, k, v = values.shape
    if fill is None:
        out = values.new_zeros(b, num_tokens, v)
    else:
        out = fill.expand(b, num_tokens, v).to(values.dtype, memory_format=torch.contiguous_format,
                                               copy=True)  # written in place below
    pos = positions.long()
    if valid is None:
        return out.scatter_(1, pos[..., None].expand(-1, -1, v), values)
    rows = torch.arange(b, device=values.device)[:, None].expand(b, k)
    return out.index_put_((rows[valid], pos[valid]), values[valid])


def kept_positions(keep: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """Grid positions of the kept tokens of each sample, in grid order, padded to the largest
    count.

    :param keep: ``(B, T)`` bool, any number of True per sample (at least one).
    :return: positions ``(B, K)`` int64 and a ``(B, K)`` bool mask of real entries (``None``
        when every sample keeps K tokens; padding repeats dropped positions).
    """
    counts = keep.sum(1)
    least, k = torch.stack(torch.aminmax(counts)).tolist()  # one read of the device
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]
    if least == k:
        return order, None
    return order, torch.arange(k, device=keep.device)[None] < counts[:, None]


def gather_tokens(tokens: Tensor, keep: Tensor) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The kept tokens of each sample, in grid order, padded to the largest count.

    :param tokens: ``(B, T, V)``.
    :param keep: ``(B, T)`` bool, any number of True per sample (at least one).
    :return: values ``(B, K, V)``, positions ``(B, K)`` int64, and a ``(B, K)`` bool mask of
        real entries (``None`` when every sample keeps K tokens).
    """
    order, valid = kept_positions(keep)
    values = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
    return values, order, valid


def _token_view(images: Tensor, patch_size: int) -> Tensor:
    """``(B, H/P, W/P, P, P, C)`` view of ``(B, C, H, W)`` images (a view when they are
    contiguous): ``[b, r, c]`` is token ``r * W/P + c`` in :func:`patchify` layout."""
    b, c, h, w = images.shape
    gh, gw = check_patch_size(h, w, patch_size)
    p = patch_size
    return images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1)


@functools.lru_cache(maxsize=16)
def _run_offsets(p: int, c: int, h: int, gw: int, device: torch.device) -> Tensor:
    """``(P, C)`` int64 offsets, in ``P``-pixel runs, of row ``y`` of channel ``ch`` of a token
    from its first run, for images of ``C`` channels, ``H`` rows and ``gw`` tokens a row (made
    once per device; shared, read only; ordinary tensors even under ``torch.inference_mode``)."""
    with torch.inference_mode(False):
        return (torch.arange(c, device=device) * h + torch.arange(p, device=device)[:, None]) * gw


def take_tokens(images: Tensor, positions: Tensor, patch_size: int) -> Tensor:
    """``(B, K, P*P*C)`` tokens at the ``(B, K)`` grid ``positions`` of ``(B, C, H, W)``
    ``images``: ``patchify(images).gather(1, positions)`` without cutting the whole images.

    Reads the ``P`` contiguous pixels of each token's rows (one ``index_select`` of
    ``B*K*P*C`` runs), then interleaves the channels into the ``(P, P, C)`` token layout."""
    b, c, h, w = images.shape
    gh, gw = check_patch_size(h, w, patch_size)
    p, k = patch_size, positions.shape[1]
    pos = positions.long()
    # run (b, k, y, ch) of P-pixel runs: pixels [x0, x0 + P) of row r*P + y of channel ch
    first = (pos // gw * p) * gw + pos % gw  # (B, K): the token's first run in its image
    first += (torch.arange(b, device=images.device) * (c * h * gw))[:, None]
    run = first[..., None, None] + _run_offsets(p, c, h, gw, images.device)
    runs = images.reshape(-1, p).index_select(0, run.flatten()).view(b * k * p, c, p)
    # (y, ch, x) -> (y, x, ch): stacking the channels is ~3x faster than a strided copy
    return torch.stack(runs.unbind(1), dim=2).view(b, k, -1)


def take_kept(images: Tensor, keep: Tensor, patch_size: int) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """:func:`gather_tokens` of ``patchify(images)`` (the same values, positions and mask),
    reading the kept tokens only."""
    positions, valid = kept_positions(keep)
    return take_tokens(images, positions, patch_size), positions, valid


def place_tokens(values: Tensor, positions: Tensor, patch_size: int, channels: int,
                 grid: Tuple[int, int], valid: Optional[Tensor] = None) -> Tensor:
    """``(B, C, H, W)`` images holding ``(B, K, P*P*C)`` token ``values`` at their ``(B, K)``
    grid ``positions`` and 0 elsewhere (padded entries, ``valid`` False, are ignored):
    ``unpatchify(scatter_tokens(...))`` writing the kept tokens only."""
    images = values.new_zeros(values.shape[0], channels, grid[0] * patch_size,
                              grid[1] * patch_size)
    _write_tokens(images, values, positions, valid, patch_size)
    return images


def _write_tokens(images: Tensor, values: Tensor, positions: Tensor, valid: Optional[Tensor],
                  patch_size: int) -> Tuple[Tensor, Tensor]:
    """Write ``(B, K, P*P*C)`` token ``values`` into ``(B, C, H, W)`` ``images`` in place at
    their ``(B, K)`` grid ``positions`` (entries with ``valid`` False are skipped); returns
    the ``(B, K)`` rows and positions written, as two flat tensors."""
    b, k, _ = values.shape
    view = _token_view(images, patch_size)
    gw = view.shape[2]
    rows = torch.arange(b, device=values.device)[:, None].expand(b, k)
    pos = positions.long()
    tokens = values.reshape(b, k, patch_size, patch_size, images.shape[1])
    if valid is not None:
        rows, pos, tokens = rows[valid], pos[valid], tokens[valid]
    view[rows, pos // gw, pos % gw] = tokens.to(images.dtype)
    return rows, pos


def composite_records(scene_images: Tensor, values: Tensor, positions: Tensor,
                      valid: Optional[Tensor], remove: Tensor,
                      patch_size: int) -> Tuple[Tensor, Tensor]:
    """Memory records written into scenes: the input of a replayed sample that looks whole.

    :param scene_images: ``(B, C, H, W)`` scenes (normalised model inputs, one per record;
        not modified).
    :param values: ``(B, K, P*P*C)`` the records' token values (normalised model inputs).
    :param positions: ``(B, K)`` their grid positions in ``[0, T)``.
    :param valid: optional ``(B, K)`` bool mask; padded entries (False) are not written.
    :param remove: ``(B, T)`` bool, the scene tokens to remove (fed as absent).
    :param patch_size: ``P`` in pixels.
    :return: ``images`` ``(B, C, H, W)``: the scene with each record's tokens written at
        their positions (over whatever the scene held there); ``keep`` ``(B, T)`` bool:
        False exactly at the removed tokens no record token overwrote, the tokens a replay
        mode feeds as absent (``forward_partial(images, keep, mode)``).
    """
    images = scene_images.clone()
    rows, pos = _write_tokens(images, values, positions, valid, patch_size)
    keep = ~remove.to(torch.bool)
    keep[rows, pos] = True
    return images, keep


def zero_dropped(images: Tensor, keep: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W)`` images with the tokens outside the ``(B, T)`` bool mask ``keep`` set
    to 0: ``images * mask_to_pixels(keep)`` (the same products) without the pixel mask."""
    b, c, h, w = images.shape
    gh, gw = check_patch_size(h, w, patch_size)
    p = patch_size
    # the mask of one pixel row per token row, (B, 1, H/P, 1, W): whole image rows multiply at once
    rows = keep.reshape(b, 1, gh, 1, gw, 1).to(images.dtype).expand(b, 1, gh, 1, gw, p)
    return (images.reshape(b, c, gh, p, w) * rows.reshape(b, 1, gh, 1, w)).reshape(b, c, h, w)


def keep_count(num_tokens: int, retention: float) -> int:
    """Tokens kept per sample at ``retention`` in (0, 1]: ``round(t*T)``, at least 1."""
    if not 0.0 < retention <= 1.0:
        raise ValueError(f"token retention must be in (0, 1], got {retention}")
    return max(1, min(num_tokens, int(round(retention * num_tokens))))


def random_keep_mask(counts: Tensor, num_tokens: int, *, generator=None) -> Tensor:
    """``(B, T)`` bool mask keeping ``counts[i]`` tokens of sample i, uniformly at random
    (without replacement), on the device of ``counts``: the noise is drawn on the CPU (from
    ``generator`` or torch's global RNG, the same draws on every device) and ranked on that
    device."""
    noise = torch.rand(len(counts), num_tokens, generator=generator)
    order = noise.to(counts.device, non_blocking=True).argsort(dim=1)
    first = torch.arange(num_tokens, device=counts.device)[None] < counts[:, None]
    return torch.zeros_like(first).scatter_(1, order, first)  # token order[i, j] kept iff j < count


def rank_tokens(scores: Tensor, choice: str = "topk", temperature: float = 1.0, *,
                generator=None) -> Tensor:
    """``(B, T)`` token positions in keep order from ``(B, T)`` scores: by score (``"topk"``),
    a Gumbel top-k draw from softmax(standardised scores / ``temperature``) (``"gumbel"``,
    from ``generator`` or torch's global RNG, drawn on the CPU and moved to the device of
    ``scores``), or nearest first to the most relevant spot of the square token grid
    (``"compact"``, :func:`compact_order`). The first k are the tokens to keep."""
    if choice == "compact":
        return compact_order(scores)
    if choice == "gumbel":
        z = (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp_min(1e-8)
        u = torch.rand(scores.shape, generator=generator).clamp_(1e-10, 1 - 1e-10)
        u = u.to(scores.device, non_blocking=True)
        scores = z / temperature - torch.log(-torch.log(u))
    elif choice != "topk":
        raise ValueError(f"token choice must be 'topk', 'gumbel' or 'compact', got {choice!r}")
    return scores.argsort(dim=1, descending=True, stable=True)


def compact_order(scores: Tensor) -> Tensor:
    """``(B, T)`` token positions of a square ``sqrt(T) x sqrt(T)`` grid (row-major), nearest
    first (squared Euclidean distance in tokens, ties by score, then position) to each row's
    peak: the token whose 3 x 3 neighbourhood has the highest mean score (edges: the mean of
    the neighbours inside the grid). The first k tokens form a disc around the most relevant
    spot: an object is one piece, clutter that also scores high is elsewhere."""
    b, t = scores.shape
    side = math.isqrt(t)
    if side * side != t:
        raise ValueError(f"token choice 'compact' needs a square token grid, got {t} tokens "
                         "per image; use 'topk' for this model")
    local = F.avg_pool2d(scores.float().reshape(b, 1, side, side), 3, stride=1, padding=1,
                         count_include_pad=False).reshape(b, t)
    peak = local.argmax(dim=1)
    pos = torch.arange(t, device=scores.device)
    rows = pos // side - (peak // side)[:, None]
    cols = pos % side - (peak % side)[:, None]
    by_score = scores.argsort(dim=1, descending=True, stable=True)
    near = (rows * rows + cols * cols).gather(1, by_score).argsort(dim=1, stable=True)
    return by_score.gather(1, near)


def mask_to_pixels(mask: Tensor, patch_size: int, grid: Tuple[int, int]) -> Tensor:
    """Expand a ``(B, T)`` token mask to a ``(B, 1, H, W)`` pixel mask."""
    b = mask.shape[0]
    m = mask.reshape(b, 1, grid[0], 1, grid[1], 1)
    m = m.expand(b, 1, grid[0], patch_size, grid[1], patch_size)
    return m.reshape(b, 1, grid[0] * patch_size, grid[1] * patch_size)


def mirror_tokens(values: Tensor, positions: Tensor, patch_size: int, channels: int,
                  grid_width: int) -> Tuple[Tensor, Tensor]:
    """Records mirrored left to right: ``(..., K, P*P*C)`` token values with each token's
    pixels mirrored inside its patch, and ``(..., K)`` positions moved from grid column ``c``
    to ``grid_width - 1 - c`` (placed back, they give the mirrored image)."""
    p = patch_size
    mirrored = values.reshape(*values.shape[:-1], p, p, channels).flip(-2).reshape(values.shape)
    col = positions % grid_width
    return mirrored, positions + (grid_width - 1 - 2 * col)


def shift_positions(positions: Tensor, rows: Tensor, cols: Tensor, grid_width: int) -> Tensor:
    """``(B, K)`` grid positions moved by ``(B,)`` whole tokens down (``rows``) and right
    (``cols``); the caller keeps them on the grid."""
    return positions + rows[:, None] * grid_width + cols[:, None]
