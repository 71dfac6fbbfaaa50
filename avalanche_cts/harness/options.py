"""The keys ``RunConfig.options`` accepts for a method, from what its registration declares
(``MethodFacts.options``: :data:`~avalanche_cts.harness.facts.OPTION_PARTS` and strategies
whose keywords it takes), checked when a config is made (so a typo such as ``bufer`` or an
option the method does not read fails before any run, naming the key, the method and the
valid keys). The built-in methods declare:

* ``coreset``, ``core_tokens``, ``core_tokenset``: ``buffer`` (the
  :class:`~avalanche_cts.memory.settings.MemorySettings` fields ``RunConfig`` does not set,
  and the stream's ``normalization``), ``plugin`` (of
  :class:`~avalanche_cts.CoreTokensetReplayPlugin`) and ``template`` (of the VL templates,
  BLIP models);
* ``naive``, ``cumulative``: ``template``;
* ``inflora``, ``coda_prompt``: the keywords of their strategy (``rank``, ``pool_size``, ...);
* Avalanche's sample buffers (``replay*``): none;
* every memory method also takes ``base`` and ``base_options`` (part ``base``: the PEFT
  strategy the memory is added to and its keywords,
  :func:`~avalanche_cts.harness.methods._base_strategy`); ``base_options`` are checked against
  the keywords of the strategy that the base method declares (CODA-Prompt's ``query`` is
  refused on InfLoRA) and need ``base``.

Keywords that ``RunConfig`` fields already set (the budget, seed, learning rate, ...) are not
options. A method registered with ``register_method`` without ``options`` reads its options
itself (not checked), but for a token memory (``memory="tokens"``) ``buffer``, which
``RunConfig.memory()`` reads.
"""
from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Dict, List, Mapping, Optional, Tuple

from ..registry import resolve
from . import METHODS
from .facts import OPTION_PARTS

__all__ = ["buffer_keys", "check_options", "option_keys"]

_SET_BY_RUN = {
    "buffer": {"budget_bytes", "budget_fraction", "token_retention", "retention_rule",
               "selector", "scorer", "seed", "recipe", "token_choice"},
    "plugin": {"storage_policy", "recipe", "batch_size_mem", "replay_mode", "dropout", "dropout_schedule",
               "dropout_fraction", "dropout_tokens", "dropout_refresh", "seed"},
    "template": {"tokenizer"},
    "peft": {"model", "lr", "weight_decay"},
}
"""Keywords each part gets from ``RunConfig`` fields (set them there, not in ``options``);
``buffer``: the :class:`~avalanche_cts.memory.settings.MemorySettings` fields that
``RunConfig.memory()`` sets (and ``token_choice``, a recipe field)."""


def buffer_keys() -> List[str]:
    """The ``options["buffer"]`` keys: the memory settings ``RunConfig`` does not set, and
    ``normalization`` (the stream's, given to the buffer)."""
    from ..memory.settings import MemorySettings

    return sorted({f.name for f in fields(MemorySettings)} - _SET_BY_RUN["buffer"]
                  | {"normalization"})


def _keywords(cls, part: str) -> List[str]:
    """The keyword arguments of ``cls`` that ``options`` may set."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sorted(k for k, p in inspect.signature(cls.__init__).parameters.items()
                  if k != "self" and p.kind in kinds and k not in _SET_BY_RUN[part])


_PART_CLASSES = {"template": "avalanche_cts.strategies.vl:VLTemplate",
                 "plugin": "avalanche_cts.memory.plugin:CoreTokensetReplayPlugin"}
"""The classes whose keywords the ``template`` and ``plugin`` parts are."""


def option_keys(method: str) -> Optional[Dict[str, Optional[List[str]]]]:
    """``{option key: its valid sub-keys, or None for a plain keyword}`` of ``method``, from
    its declared ``MethodFacts.options``; ``None`` for a method that declares none (or is not
    registered)."""
    declared = _declared(method)
    if declared is None:
        return None
    keys: Dict[str, Optional[List[str]]] = {}
    for entry in declared:
        keys.update(_entry_keys(entry))
    return keys


def _entry_keys(entry: str) -> Dict[str, Optional[List[str]]]:
    """The option keys of one ``MethodFacts.options`` entry: a part of :data:`OPTION_PARTS`,
    or a ``"module:Class"`` strategy whose keywords are plain options."""
    if entry == "base":
        return {"base": None, "base_options": None}  # the strategy a memory is added to
    if entry == "buffer":
        return {"buffer": buffer_keys()}
    if entry in _PART_CLASSES:
        return {entry: _keywords(resolve(_PART_CLASSES[entry]), entry)}
    return dict.fromkeys(_keywords(_strategy(entry), "peft"))


def _strategy(path: str) -> type:
    """The strategy class a ``"module:Class"`` entry names; ``ValueError`` when it cannot be
    imported."""
    try:
        return resolve(path)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"MethodFacts.options names the strategy {path!r}, which cannot be "
                         f"imported ({e}); register the method with an importable "
                         f"'module:Class'") from None


def _declared(method) -> Optional[Tuple[str, ...]]:
    """``MethodFacts.options`` of ``method``; ``None`` when it declares none or is not
    registered."""
    return METHODS.facts(method).options if method in METHODS else None


def _strategy_keywords(method) -> Optional[List[str]]:
    """The keywords of the one strategy ``method`` declares as its options (a PEFT base's,
    e.g. ``inflora``); ``None`` for any other method or name."""
    declared = _declared(method)
    if declared is None or len(declared) != 1 or declared[0] in OPTION_PARTS:
        return None
    return list(_entry_keys(declared[0]))


def _base_option_keys(options: Mapping) -> Optional[List[str]]:
    """The keywords ``options["base_options"]`` may set: those of the strategy that the
    method ``options["base"]`` declares as its options; ``None`` for any other base (refused
    when the strategy is built). ``ValueError`` when ``base`` is missing."""
    base = options.get("base")
    if base is None:
        raise ValueError("RunConfig.options.base_options are keywords of the strategy a memory "
                         "is added to: set options.base too ('coda_prompt' or 'inflora'), or "
                         "leave base_options out")
    return _strategy_keywords(base)


def check_options(method: str, options: Mapping, memory: str = "none") -> None:
    """``ValueError`` naming an ``options`` key (or sub-key) that ``method`` does not read,
    with the valid ones; of a registered method (not built in) whose ``memory`` kind is
    ``tokens`` only ``buffer`` is checked."""
    valid = option_keys(method)
    if valid is None and memory == "tokens":
        valid = dict(dict.fromkeys(options), buffer=buffer_keys())
    if valid is None:
        return
    for key, value in options.items():
        if key not in valid:
            raise ValueError(
                f"RunConfig.options has {key!r}, which method {method!r} does not read; valid "
                f"keys: {sorted(valid)}")
        sub, reader = valid[key], f"method {method!r}"
        if key == "base_options" and sub is None:
            sub, reader = _base_option_keys(options), f"base {options['base']!r}"
        if sub is None:
            continue
        if not isinstance(value, Mapping):
            raise ValueError(f"RunConfig.options.{key} of {reader} must be a mapping "
                             f"of keywords, e.g. {{{sub[0]}: ...}}; got {value!r}")
        unknown = sorted(set(value) - set(sub), key=str)
        if unknown:
            raise ValueError(
                f"RunConfig.options.{key} has {unknown}, which {reader} does not read; "
                f"valid keys: {sub}" + _set_by_run_hint("peft" if key == "base_options" else key,
                                                       unknown))


def _set_by_run_hint(part: str, unknown: List) -> str:
    """`` (budget_fraction is set by RunConfig: ...)`` when a key is a RunConfig setting."""
    taken = [k for k in unknown if k in _SET_BY_RUN[part]]
    return (f" ({', '.join(taken)} {'is' if len(taken) == 1 else 'are'} set from the "
            f"RunConfig fields, not options)" if taken else "")
