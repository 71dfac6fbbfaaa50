"""The run harness: everything around the library that runs experiments.

* :mod:`.config` ``RunConfig`` (checked settings, fingerprints), :mod:`.methods` (methods by
  name), :mod:`.runner` (``run``: one method on one benchmark, resumable, with reuse checks);
* :mod:`.grid` (YAML experiment grids) and :mod:`.cli` (``avalanche-cts run`` / ``demo``);
* :mod:`.demo` (the main job), :mod:`.pretrain` (backbones for the embedded benchmarks);
* :mod:`.checkpoint` (backbones, fresh heads, run states), :mod:`.training_path` (bf16,
  gradient accumulation, cosine schedule, DDP), :mod:`.distributed`, :mod:`.report` (tables,
  plots).

Names are imported on first use (``--help`` stays fast).
"""
import importlib

_EXPORTS = {
    "RunConfig": "config",
    "register_method": "methods",
    "list_methods": "methods",
    "build_strategy": "methods",
    "run": "runner",
    "accuracy_summary": "runner",
    "save_result": "runner",
    "load_backbone": "checkpoint",
    "fresh_head": "checkpoint",
    "load_pretrained": "pretrain",
    "pretrain_backbone": "pretrain",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
