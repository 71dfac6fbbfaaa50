"""Cluttered Fashion-MNIST: the paper's regime (object = a minority of the tokens) on CPU.

Each 64 x 64 grey scene holds one Fashion-MNIST item (28 x 28) pasted at a random
place on a smooth random texture, with fragments of other, randomly chosen items as clutter.
With 8 x 8 patches (T = 64) the item covers 18% of the tokens on average (90% of scenes: at
most 23%); the clutter carries no class information but looks like parts of objects, so a
token choice has to find the object. Scenes are composed in memory from a seed (milliseconds per thousand),
from images already on the machine (Fashion-MNIST IDX files, see :mod:`.fmnist`).

Image pools are disjoint: the last ``heldout_per_class`` training images of every class are
reserved for pretraining (:mod:`avalanche_cts.harness.pretrain`); the stream draws its training and
validation images from the rest, its test images from the official test set.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tokens.normalization import NormalizationLike
from .fmnist import (
    DEFAULT_HELDOUT,
    PathLike,
    UInt8ImageDataset,
    check_count,
    check_seed,
    class_incremental_stream,
    stream_images,
)

__all__ = [
    "CLUTTER_CANVAS",
    "CLUTTER_ITEM",
    "ClutterStyle",
    "cluttered_fashion_mnist",
    "compose_scenes",
    "object_token_mask",
]

CLUTTER_CANVAS = 64
CLUTTER_ITEM = 28
_OBJECT_LEVEL = 40
"""Item pixels above this grey level (of 255) count as the object."""


class ClutterStyle:
    """Scene settings (defaults: the benchmark's).

    :param canvas: scene side in pixels.
    :param item: side of the pasted item in pixels.
    :param fragments: (min, max) clutter fragments per scene.
    :param fragment_size: (min, max) side of a fragment in pixels.
    :param texture: peak grey level of the smooth background texture (of 255).
    :param grain: peak grey level of the pixel noise (of 255).
    """

    def __init__(self, canvas: int = CLUTTER_CANVAS, item: int = CLUTTER_ITEM,
                 fragments: Tuple[int, int] = (3, 5), fragment_size: Tuple[int, int] = (8, 14),
                 texture: int = 48, grain: int = 16):
        if not 0 < item <= canvas:
            raise ValueError(f"item size must be in (0, canvas={canvas}], got {item}")
        if not 0 <= fragments[0] <= fragments[1]:
            raise ValueError(f"fragments must be (min, max) with 0 <= min <= max, got {fragments}")
        if not 1 <= fragment_size[0] <= fragment_size[1] <= item:
            raise ValueError(f"fragment_size must be (min, max) within [1, {item}], got {fragment_size}")
        self.canvas, self.item = int(canvas), int(item)
        self.fragments, self.fragment_size = tuple(fragments), tuple(fragment_size)
        self.texture, self.grain = int(texture), int(grain)

    def settings(self) -> Dict:
        """The keywords that rebuild this style."""
        return dict(canvas=self.canvas, item=self.item, fragments=list(self.fragments),
                    fragment_size=list(self.fragment_size), texture=self.texture, grain=self.grain)


def _shrink(images: Tensor, size: int) -> Tensor:
    """``(N, 28, 28)`` uint8 items to ``(N, size, size)`` float grey levels (area average)."""
    return F.interpolate(images.float()[:, None], size=(size, size), mode="area")[:, 0]


def compose_scenes(items: Tensor, clutter: Tensor, generator: torch.Generator,
                   style: Optional[ClutterStyle] = None) -> Tuple[Tensor, Tensor]:
    """Compose one scene per item.

    :param items: ``(N, 28, 28)`` uint8 Fashion-MNIST images, the objects.
    :param clutter: ``(M, 28, 28)`` uint8 images whose fragments become clutter.
    :return: ``(N, 1, S, S)`` uint8 scenes and ``(N, S, S)`` bool object masks.
    """
    style = style or ClutterStyle()
    n, s, it = len(items), style.canvas, style.item
    g = generator
    low = torch.rand(n, 1, 8, 8, generator=g) * style.texture
    scenes = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)[:, 0]
    scenes = scenes + torch.rand(n, s, s, generator=g) * style.grain
    obj = _shrink(items, it)
    pool = _shrink(clutter, it)
    oy, ox = torch.randint(0, s - it + 1, (2, n), generator=g).tolist()
    counts = torch.randint(style.fragments[0], style.fragments[1] + 1, (n,), generator=g).tolist()
    masks = torch.zeros(n, s, s, dtype=torch.bool)
    lo, hi = style.fragment_size
    for i in range(n):
        for _ in range(counts[i]):
            fs = int(torch.randint(lo, hi + 1, (1,), generator=g))
            src = pool[int(torch.randint(len(pool), (1,), generator=g))]
            sy, sx = torch.randint(0, it - fs + 1, (2,), generator=g).tolist()
            for _try in range(8):  # a place that does not touch the object
                py, px = torch.randint(0, s - fs + 1, (2,), generator=g).tolist()
                if py + fs <= oy[i] or py >= oy[i] + it or px + fs <= ox[i] or px >= ox[i] + it:
                    region = scenes[i, py:py + fs, px:px + fs]
                    torch.maximum(region, src[sy:sy + fs, sx:sx + fs], out=region)
                    break
        region = scenes[i, oy[i]:oy[i] + it, ox[i]:ox[i] + it]
        torch.maximum(region, obj[i], out=region)
        masks[i, oy[i]:oy[i] + it, ox[i]:ox[i] + it] = obj[i] > _OBJECT_LEVEL
    return scenes.round().clamp(0, 255).to(torch.uint8)[:, None], masks


def object_token_mask(masks: Tensor, patch_size: int) -> Tensor:
    """``(N, S, S)`` bool object masks to ``(N, T)``: tokens holding any object pixel."""
    n, h, w = masks.shape
    p = patch_size
    return masks.reshape(n, h // p, p, w // p, p).any(dim=4).any(dim=2).reshape(n, -1)


class SceneDataset(UInt8ImageDataset):
    """Scenes with their object masks (``object_masks``, ``(N, S, S)`` bool) for diagnostics."""

    def __init__(self, images: Tensor, targets: Tensor, object_masks: Tensor, normalization=None):
        super().__init__(images, targets, normalization=normalization)
        self.object_masks = object_masks


def cluttered_fashion_mnist(
    n_experiences: int = 5,
    *,
    seed: int = 0,
    data_root: Optional[PathLike] = None,
    train_per_class: int = 300,
    test_per_class: int = 200,
    validation: bool = False,
    heldout_per_class: int = DEFAULT_HELDOUT,
    normalization: NormalizationLike = None,
    fixed_class_order=None,
    style: Union[None, ClutterStyle, Dict] = None,
):
    """Class-incremental Cluttered Fashion-MNIST (Avalanche ``nc_benchmark``), 64 x 64 grey.

    :param train_per_class: training scenes per class (from the stream's image pool).
    :param test_per_class: evaluation scenes per class.
    :param validation: evaluate on validation scenes (from the stream's training pool,
        disjoint from its training images) instead of the test set; choose settings so.
    :param heldout_per_class: training images per class reserved for pretraining.
    :param normalization: model input normalisation (a model, ``Normalization``, ``(mean, std)``
        or ``None`` for [0, 1]).
    :param style: scene settings (:class:`ClutterStyle`, or its keywords as a mapping, as
        configs and recorded settings give them).
    """
    if isinstance(style, dict):
        style = ClutterStyle(**style)
    train_per_class = check_count("train_per_class", train_per_class, allow_none=False)
    test_per_class = check_count("test_per_class", test_per_class, allow_none=False)
    heldout_per_class = check_count("heldout_per_class", heldout_per_class, allow_none=False)
    seed = check_seed(seed)
    tr_x, tr_y, ev_x, ev_y, pool_x = stream_images(data_root, heldout_per_class, seed,
                                                   train_per_class, test_per_class, validation)
    gen = torch.Generator().manual_seed(seed + 7919)
    sets = []
    for x, y in ((tr_x, tr_y), (ev_x, ev_y)):
        scenes, masks = compose_scenes(x, pool_x, gen, style)
        sets.append(SceneDataset(scenes, y, masks, normalization=normalization))
    info = dict(name="cluttered_fmnist", n_experiences=n_experiences, seed=seed,
                train_per_class=train_per_class, test_per_class=test_per_class,
                validation=validation, heldout_per_class=heldout_per_class)
    if style is not None:
        info["style"] = style.settings()
    bm = class_incremental_stream(sets[0], sets[1], n_experiences, seed, fixed_class_order, info)
    bm.scenes = dict(train=sets[0], test=sets[1])
    """The scene datasets with their object masks (diagnostics: where stored tokens fall)."""
    return bm
