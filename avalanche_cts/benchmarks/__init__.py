"""Class-incremental streams (Avalanche benchmarks) and a registry to build them by name.

``make_benchmark(name, **kwargs)``: ``fmnist`` (:func:`split_fashion_mnist`),
``fmnist_pretrained`` (the same without the images reserved for pretraining),
``cluttered_fmnist`` (:func:`cluttered_fashion_mnist`, the paper's regime on CPU),
``imagenet_r`` (:func:`SplitImageNetR`), ``imagenet100`` (:func:`SplitImageNet100`) and
``synthetic`` (:func:`synthetic_benchmark`, generated images for tests). Every builder takes
``normalization`` (a model, ``Normalization`` or ``(mean, std)``): the stream feeds the model
normalised inputs, as its own pre-processing does.

Vision-language streams (dict items for BLIP, :mod:`avalanche_cts.vl`): ``scene_vqa`` and
``scene_captions`` (generated), ``vqa_sequence`` (VQA v2 -> CLEVR -> Visual Genome) and
``coco_class_captions`` (MS-COCO in five class tasks) from local files.
"""

from typing import Callable, Dict

from .cluttered import ClutterStyle, cluttered_fashion_mnist
from .fmnist import DEFAULT_HELDOUT, split_fashion_mnist
from .folders import DatasetLayoutError, ImageFiles, image_transforms
from .imagenet100 import SplitImageNet100
from .imagenet_r import SplitImageNetR
from .synthetic import synthetic_benchmark

__all__ = [
    "BENCHMARKS",
    "ClutterStyle",
    "DatasetLayoutError",
    "ImageFiles",
    "SplitImageNet100",
    "SplitImageNetR",
    "cluttered_fashion_mnist",
    "image_transforms",
    "make_benchmark",
    "split_fashion_mnist",
    "synthetic_benchmark",
]


def _fmnist_pretrained(**kwargs):
    """Split Fashion-MNIST without the ``DEFAULT_HELDOUT`` pretraining images per class."""
    return split_fashion_mnist(**{"heldout_per_class": DEFAULT_HELDOUT, **kwargs})


class _Deferred:
    """A stream builder of another package, imported when called or inspected."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    @property
    def target(self) -> Callable:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(self.target)

    def __call__(self, *args, **kwargs):
        return self.target(*args, **kwargs)


BENCHMARKS: Dict[str, Callable] = {
    "fmnist": split_fashion_mnist,
    "fmnist_pretrained": _fmnist_pretrained,
    "cluttered_fmnist": cluttered_fashion_mnist,
    "imagenet_r": SplitImageNetR,
    "imagenet100": SplitImageNet100,
    "synthetic": synthetic_benchmark,
    "scene_vqa": _Deferred("avalanche_cts.vl.scenes", "scene_vqa"),
    "scene_captions": _Deferred("avalanche_cts.vl.scenes", "scene_captions"),
    "vqa_sequence": _Deferred("avalanche_cts.vl.real", "vqa_sequence"),
    "coco_class_captions": _Deferred("avalanche_cts.vl.real", "coco_class_captions"),
}


def make_benchmark(name: str, **kwargs):
    """Build the benchmark registered as ``name`` with its keyword arguments."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}")
    import inspect

    params = inspect.signature(BENCHMARKS[name]).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(f"benchmark {name!r} has no settings {unknown}; valid: "
                             f"{sorted(k for k in params if k not in ('args', 'kwargs'))}")
    return BENCHMARKS[name](**kwargs)
