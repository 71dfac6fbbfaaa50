"""Class-incremental streams (Avalanche benchmarks) and a registry to build them by name.

``make_benchmark(name, **kwargs)``: ``imagenet_r`` (:func:`SplitImageNetR`), ``imagenet100``
(:func:`SplitImageNet100`), ``fmnist`` (:func:`split_fashion_mnist`), ``synthetic``
(:func:`synthetic_benchmark`, generated images for tests), ``fmnist_pretrained`` (the
Fashion-MNIST stream without the pretraining images of :mod:`avalanche_cts.pretrain`).
"""

from typing import Callable, Dict

from .folders import DatasetLayoutError, ImageFiles, image_transforms
from .fmnist import split_fashion_mnist
from .imagenet100 import SplitImageNet100
from .imagenet_r import SplitImageNetR
from .synthetic import synthetic_benchmark

__all__ = [
    "BENCHMARKS",
    "DatasetLayoutError",
    "ImageFiles",
    "SplitImageNet100",
    "SplitImageNetR",
    "image_transforms",
    "make_benchmark",
    "split_fashion_mnist",
    "synthetic_benchmark",
]

BENCHMARKS: Dict[str, Callable] = {
    "imagenet_r": SplitImageNetR,
    "imagenet100": SplitImageNet100,
    "fmnist": split_fashion_mnist,
    "synthetic": synthetic_benchmark,
}


def _fmnist_pretrained(**kwargs):
    from ..pretrain import split_fashion_mnist_stream

    return split_fashion_mnist_stream(**kwargs)


BENCHMARKS["fmnist_pretrained"] = _fmnist_pretrained
"""The Fashion-MNIST stream without the held-out pretraining images (:mod:`..pretrain`)."""


def make_benchmark(name: str, **kwargs):
    """Build the benchmark registered as ``name`` with its keyword arguments."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name](**kwargs)
