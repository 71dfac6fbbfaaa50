"""Class-incremental streams (Avalanche benchmarks) and a registry to build them by name.

``make_benchmark(name, **kwargs)`` (:data:`BENCHMARKS`): ``fmnist``
(:func:`split_fashion_mnist`, without the images reserved for pretraining unless
``heldout_per_class=0``), ``fmnist_pretrained`` (the same builder, the name stored results use), ``cluttered_fmnist`` (:func:`cluttered_fashion_mnist`, the paper's regime
on CPU), ``imagenet_r`` (:func:`SplitImageNetR`), ``imagenet100`` (:func:`SplitImageNet100`)
and ``synthetic`` (:func:`synthetic_benchmark`, generated images for tests). Every builder
takes ``normalization`` (a model, ``Normalization`` or ``(mean, std)``): the stream feeds the
model normalised inputs, as its own pre-processing does.

Vision-language streams (dict items for BLIP, :mod:`.vl`): ``scene_vqa`` and
``scene_captions`` (generated), ``vqa_sequence`` (VQA v2 -> CLEVR -> Visual Genome) and
``coco_class_captions`` (MS-COCO in five class tasks) from local files. Names are imported on
first use.
"""
from pathlib import Path, PurePath
from typing import Dict

from .._checks import is_int, is_seed, plain_number
from .._lazy import lazy_exports
from ..registry import Registry

BENCHMARKS: Registry = Registry("benchmark", {
    "fmnist": "avalanche_cts.benchmarks.fmnist:split_fashion_mnist",
    "fmnist_pretrained": "avalanche_cts.benchmarks.fmnist:split_fashion_mnist",
    "cluttered_fmnist": "avalanche_cts.benchmarks.cluttered:cluttered_fashion_mnist",
    "imagenet_r": "avalanche_cts.benchmarks.imagenet_r:SplitImageNetR",
    "imagenet100": "avalanche_cts.benchmarks.imagenet100:SplitImageNet100",
    "synthetic": "avalanche_cts.benchmarks.synthetic:synthetic_benchmark",
    "scene_vqa": "avalanche_cts.benchmarks.vl.scenes:scene_vqa",
    "scene_captions": "avalanche_cts.benchmarks.vl.scenes:scene_captions",
    "vqa_sequence": "avalanche_cts.benchmarks.vl.real:vqa_sequence",
    "coco_class_captions": "avalanche_cts.benchmarks.vl.real:coco_class_captions",
})
"""Stream builders by name."""


def make_benchmark(name: str, **kwargs):
    """Build the benchmark registered as ``name`` with its keyword arguments (unknown ones
    refused first; the builder checks their values)."""
    _check_names(name, kwargs)
    return BENCHMARKS.load(name)(**kwargs)


def check_benchmark_arguments(name: str, kwargs: Dict) -> None:
    """Refuse, without loading any data, arguments of the builder ``name`` that it would
    refuse later: unknown or missing ones, an ``n_experiences`` or ``*_per_class`` count that
    is not a positive integer, a seed outside ``SEED_RANGE``, a dataset folder (``root``,
    ``data_root``) that does not exist. ``ValueError`` / ``FileNotFoundError`` naming them."""
    _check_names(name, kwargs)
    for key, value in kwargs.items():
        _check_argument(name, key, plain_number(value))


def _check_names(name: str, kwargs: Dict) -> None:
    """Unknown or missing arguments of the builder ``name``."""
    import inspect

    builder = BENCHMARKS.load(name)
    sig = inspect.signature(builder)
    params = sig.parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(f"benchmark {name!r} has no settings {unknown}; valid: "
                             f"{sorted(k for k in params if k not in ('args', 'kwargs'))}")
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        raise ValueError(f"benchmark {name!r}: {e}") from None


def _check_argument(benchmark: str, key: str, value) -> None:
    """One argument by the convention of its name (others are left to the builder)."""
    counts = key == "n_experiences" or (key.endswith("_per_class") and key != "heldout_per_class")
    if counts and not (value is None and key != "n_experiences") and not (
            is_int(value) and value >= 1):
        raise ValueError(f"benchmark {benchmark!r}: {key} must be a positive integer, got "
                         f"{value!r}")
    if key == "heldout_per_class" and not (is_int(value) and value >= 0):
        raise ValueError(f"benchmark {benchmark!r}: heldout_per_class must be an integer >= 0, "
                         f"got {value!r}")
    if key == "seed" and not is_seed(value):
        raise ValueError(f"benchmark {benchmark!r}: seed must be an integer in [0, 2**32 - 1], "
                         f"got {value!r}")
    if key in ("root", "data_root") and isinstance(value, (str, PurePath)) and not (
            str(value).strip() and Path(value).expanduser().is_dir()):
        raise FileNotFoundError(f"benchmark {benchmark!r}: {key} {str(value)!r} is not a "
                                f"folder: give the dataset folder")


_EXPORTS = {
    "cluttered": ("ClutterStyle", "cluttered_fashion_mnist"),
    "fmnist": ("DEFAULT_HELDOUT", "split_fashion_mnist"),
    "folders": ("DatasetLayoutError", "ImageFiles", "image_transforms"),
    "imagenet100": ("SplitImageNet100",),
    "imagenet_r": ("SplitImageNetR",),
    "synthetic": ("synthetic_benchmark",),
}

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, _EXPORTS, ("BENCHMARKS", "check_benchmark_arguments", "make_benchmark"))
