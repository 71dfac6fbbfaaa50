"""Generated class-incremental images for tests and smoke runs (no files, no downloads)."""

from __future__ import annotations

import torch

from ..tokens.normalization import NormalizationLike
from .fmnist import UInt8ImageDataset, check_count, check_seed, class_incremental_stream

__all__ = ["synthetic_benchmark"]


def _images(n_classes: int, per_class: int, image_size: int, channels: int, g: torch.Generator):
    y = torch.arange(n_classes).repeat_interleave(per_class)
    level = (180 * y // max(1, n_classes - 1)).to(torch.uint8)
    x = torch.randint(
        0, 60, (len(y), channels, image_size, image_size), dtype=torch.uint8, generator=g
    )
    return x + level[:, None, None, None], y


def synthetic_benchmark(
    n_experiences: int = 2,
    *,
    n_classes: int = 4,
    train_per_class: int = 16,
    test_per_class: int = 8,
    image_size: int = 16,
    channels: int = 3,
    seed: int = 0,
    normalization: NormalizationLike = None,
):
    """Avalanche ``nc_benchmark`` of uint8 noise images (0-59) raised by a class-specific
    level (``180 * c / (n_classes - 1)``), so every token carries the class."""
    n_classes, train_per_class, test_per_class, image_size, channels = (
        check_count(name, v, allow_none=False) for name, v in (
            ("n_classes", n_classes), ("train_per_class", train_per_class),
            ("test_per_class", test_per_class), ("image_size", image_size),
            ("channels", channels)))
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train = UInt8ImageDataset(*_images(n_classes, train_per_class, image_size, channels, g),
                              normalization)
    test = UInt8ImageDataset(*_images(n_classes, test_per_class, image_size, channels, g),
                             normalization)
    info = dict(name="synthetic", n_experiences=n_experiences, seed=seed,
                train_per_class=train_per_class, test_per_class=test_per_class,
                image_size=image_size, channels=channels)
    return class_incremental_stream(train, test, n_experiences, seed, None, info)
