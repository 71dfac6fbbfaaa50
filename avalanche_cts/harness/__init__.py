"""The run harness: everything around the library that runs experiments.

* :mod:`.config` ``RunConfig`` (checked settings, fingerprints), :mod:`.methods` (the
  builders of :data:`METHODS`), :mod:`.runner` (``run``: one method on one benchmark,
  resumable, with reuse checks), :mod:`.options` (the ``options`` keys each method reads),
  :mod:`.identity` (fingerprints of a given model's weights and of undescribed data);
* :mod:`.grid` (YAML experiment grids), :mod:`.execute` (cells in worker processes) and
  :mod:`.cli` (``avalanche-cts run`` / ``demo`` / ``demo-vl`` / ``pretrain``);
* :mod:`.demo`, :mod:`.demo_vl` (the embedded jobs), :mod:`.pretrain`, :mod:`.pretrain_vl`
  (backbones of the embedded benchmarks);
* :mod:`.checkpoint` (backbones, fresh heads, run states), :mod:`.report` (tables, plots),
  :mod:`.diagnostics` (where stored tokens fall), :mod:`.viz` (relevance maps, memory figures).

Names are imported on first use (``--help`` stays fast).
"""
from .._lazy import lazy_exports
from ..registry import Registry

_M = "avalanche_cts.harness.methods:"
METHODS: Registry = Registry("method", {
    "naive": _M + "naive",
    "cumulative": _M + "cumulative",
    "replay": _M + "replay_class_balanced",
    "replay_class_balanced": _M + "replay_class_balanced",
    "replay_reservoir": _M + "replay_reservoir",
    "replay_herding": _M + "replay_herding",
    "coreset": _M + "token_memory",
    "core_tokens": _M + "token_memory",
    "core_tokenset": _M + "token_memory",
    "inflora": _M + "inflora",
    "coda_prompt": _M + "coda_prompt",
})
"""Continual-learning methods by name: ``fn(cfg, model, evaluator) -> strategy`` builders
(:mod:`.methods`)."""
register_method = METHODS.register
"""``@register_method("name")`` on ``fn(cfg, model, evaluator) -> strategy`` adds a method."""
list_methods = METHODS.names

_EXPORTS = {
    "config": ("RunConfig",),
    "methods": ("build_strategy",),
    "runner": ("accuracy_summary", "run", "save_result"),
    "checkpoint": ("fresh_head", "load_backbone"),
    "pretrain": ("load_pretrained", "pretrain_backbone"),
}

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, _EXPORTS, ("METHODS", "list_methods", "register_method"))
