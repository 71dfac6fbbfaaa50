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
from .._lazy import lazy_attributes

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
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
