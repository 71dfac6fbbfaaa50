"""The run harness: everything around the library that runs experiments.

* :mod:`.config` ``RunConfig`` (checked settings, fingerprints), :mod:`.methods` (the
  builders of :data:`METHODS`), :mod:`.runner` (``run``: one method on one benchmark,
  resumable, with reuse checks), :mod:`.options` (the ``options`` keys each method reads),
  :mod:`.identity` (fingerprints of a given model's weights and of undescribed data);
* :mod:`.grid` (YAML experiment grids), :mod:`.execute` (cells in worker processes) and
  :mod:`.cli` (``avalanche-cts run`` / ``demo`` / ``demo-vl`` / ``pretrain``);
* :mod:`.demo`, :mod:`.demo_vl` (the embedded jobs), :mod:`.pretrain`, :mod:`.pretrain_vl`
  (backbones of the embedded benchmarks);
* :mod:`.checkpoint` (run states), :mod:`.report` (tables, plots),
  :mod:`.diagnostics` (where stored tokens fall), :mod:`.viz` (relevance maps, memory figures).

Names are imported on first use (``--help`` stays fast).
"""
from .._lazy import lazy_exports
from ..registry import Registry
from .facts import MethodFacts

_M = "avalanche_cts.harness.methods:"
_TOKEN_KEY = ("selector", "scorer", "replay_mode", "token_retention")
_TOKEN_OPTIONS = ("template", "buffer", "plugin", "base")
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
}, facts={
    "naive": MethodFacts(options=("template",)),
    "cumulative": MethodFacts(options=("template",)),
    "replay": MethodFacts("samples", title="Avalanche replay", options=("base",)),
    "replay_class_balanced": MethodFacts("samples", options=("base",)),
    "replay_reservoir": MethodFacts("samples", options=("base",)),
    "replay_herding": MethodFacts("samples", key_fields=("selector",), options=("base",)),
    "coreset": MethodFacts("tokens", "whole", "{method} {selector}", "coreset (ours, t = 1)",
                           ("selector",), _TOKEN_OPTIONS),
    "core_tokens": MethodFacts("tokens", "budget", "{method} {selector}+{scorer}",
                               "core tokens (t = r)", _TOKEN_KEY, _TOKEN_OPTIONS),
    "core_tokenset": MethodFacts("tokens", "split", "{method} {selector}+{scorer}",
                                 "core tokenset", _TOKEN_KEY, _TOKEN_OPTIONS),
    "inflora": MethodFacts(title="InfLoRA", options=("avalanche_cts.strategies.inflora:InfLoRA",)),
    "coda_prompt": MethodFacts(title="CODA-Prompt",
                               options=("avalanche_cts.strategies.prompt:CODAPrompt",)),
}, default_facts=MethodFacts())
"""Continual-learning methods by name: ``fn(cfg, model, evaluator) -> strategy`` builders
(:mod:`.methods`), each with its :class:`~.facts.MethodFacts` (``METHODS.facts(name)``)."""
list_methods = METHODS.names


def register_method(name: str, fn=None, **facts):
    """``@register_method("name", memory=..., retention=..., label=..., options=...)`` on
    ``fn(cfg, model, evaluator) -> strategy`` adds a method; the keywords are its
    :class:`~.facts.MethodFacts` (default: no memory, options not checked), checked here.
    ``options`` declares what ``fn`` reads from ``cfg.options`` (e.g. ``("buffer", "plugin")``
    or ``("mypackage.strategies:MyStrategy",)`` for that strategy's keywords), so that
    ``RunConfig`` refuses any other key, naming the valid ones."""
    return METHODS.register(name, fn, MethodFacts(**facts))


_EXPORTS = {
    "config": ("RunConfig",),
    "methods": ("build_strategy",),
    "runner": ("accuracy_summary", "run", "save_result"),
    "pretrain": ("load_pretrained", "pretrain_backbone"),
}

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, _EXPORTS, ("METHODS", "list_methods", "register_method", "MethodFacts"))
