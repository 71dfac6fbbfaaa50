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
    """Build the benchmark registered as ``name`` with its keyword arguments."""
    import inspect

    builder = BENCHMARKS.load(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(f"benchmark {name!r} has no settings {unknown}; valid: "
                             f"{sorted(k for k in params if k not in ('args', 'kwargs'))}")
    return builder(**kwargs)


_EXPORTS = {
    "cluttered": ("ClutterStyle", "cluttered_fashion_mnist"),
    "fmnist": ("DEFAULT_HELDOUT", "split_fashion_mnist"),
    "folders": ("DatasetLayoutError", "ImageFiles", "image_transforms"),
    "imagenet100": ("SplitImageNet100",),
    "imagenet_r": ("SplitImageNetR",),
    "synthetic": ("synthetic_benchmark",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, ("BENCHMARKS", "make_benchmark"))
