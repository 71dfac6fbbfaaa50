"""Names the command line and ``RunConfig`` accept, without importing torch or Avalanche.

The built-in names are listed here so that ``--help`` and settings checks stay fast; a test
keeps them equal to the registries. Names registered at run time (``register_method``,
``register_selector``, ``register_scorer``) are accepted too, once their module is imported.
"""
import sys
from typing import Tuple

__all__ = [
    "BENCHMARK_NAMES",
    "LOGGERS",
    "LR_SCHEDULES",
    "METHODS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCORERS",
    "SELECTORS",
    "is_known",
]

METHODS: Tuple[str, ...] = (
    "naive", "cumulative", "replay", "coreset", "core_tokens", "core_tokenset",
    "replay_reservoir", "replay_class_balanced", "replay_herding", "inflora", "coda_prompt",
)
SELECTORS: Tuple[str, ...] = ("random", "herding", "craig", "gradmatch")
SCORERS: Tuple[str, ...] = ("random", "rollout", "gradcam", "gradlrp", "atman")
BENCHMARK_NAMES: Tuple[str, ...] = (
    "fmnist", "fmnist_pretrained", "cluttered_fmnist", "imagenet_r", "imagenet100", "synthetic",
    "scene_vqa", "scene_captions", "vqa_sequence", "coco_class_captions",
)
OPTIMIZERS: Tuple[str, ...] = ("adam", "adamw", "sgd")
LR_SCHEDULES: Tuple[str, ...] = ("constant", "cosine")
PRECISIONS: Tuple[str, ...] = ("fp32", "bf16")
LOGGERS: Tuple[str, ...] = ("progress", "text", "csv", "tensorboard")

_REGISTRIES = {
    "method": ("avalanche_cts.harness.methods", "list_methods"),
    "selector": ("avalanche_cts.selectors", "list_selectors"),
    "scorer": ("avalanche_cts.scorers", "list_scorers"),
}


def is_known(kind: str, name: str, builtin: Tuple[str, ...]) -> bool:
    """``name`` is built in or registered in an already imported registry of ``kind``."""
    if name in builtin:
        return True
    module, fn = _REGISTRIES[kind]
    mod = sys.modules.get(module)
    return mod is not None and name in getattr(mod, fn)()
