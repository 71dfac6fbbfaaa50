"""The keys ``RunConfig.options`` accepts for each built-in method, checked when a config is
made (so a typo such as ``bufer`` or an option the method does not read fails before any run,
naming the key, the method and the valid keys).

* ``coreset``, ``core_tokens``, ``core_tokenset``: ``buffer`` (the
  :class:`~avalanche_cts.memory.settings.MemorySettings` fields ``RunConfig`` does not set,
  and the stream's ``normalization``), ``plugin`` (of
  :class:`~avalanche_cts.CoreTokensetReplayPlugin`) and ``template`` (of the VL templates,
  BLIP models);
* ``naive``, ``cumulative``: ``template``;
* ``inflora``, ``coda_prompt``: their own keywords (``rank``, ``pool_size``, ...);
* Avalanche's sample buffers (``replay*``): none;
* every memory method also takes ``base`` and ``base_options`` (the PEFT strategy the memory
  is added to and its keywords, :func:`~avalanche_cts.harness.methods._base_strategy`);
  ``base_options`` are checked against the keywords of that strategy (CODA-Prompt's
  ``query`` is refused on InfLoRA) and need ``base``.

Keywords that ``RunConfig`` fields already set (the budget, seed, learning rate, ...) are not
options. Methods added with ``register_method`` read their options themselves (not checked),
but for a token memory (``memory="tokens"``) ``buffer``, which ``RunConfig.memory()`` reads.
"""
from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Dict, List, Mapping, Optional

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


def option_keys(method: str) -> Optional[Dict[str, Optional[List[str]]]]:
    """``{option key: its valid sub-keys, or None for a plain keyword}`` of a built-in
    ``method``; ``None`` for a method this module does not know (registered by a user)."""
    from ..memory.plugin import CoreTokensetReplayPlugin
    from ..strategies.vl import VLTemplate

    template = {"template": _keywords(VLTemplate, "template")}
    token = dict(template, buffer=buffer_keys(),
                 plugin=_keywords(CoreTokensetReplayPlugin, "plugin"))
    base = {"base": None, "base_options": None}  # the strategy a memory is added to
    if method in ("coreset", "core_tokens", "core_tokenset"):
        return dict(token, **base)
    if method in ("naive", "cumulative"):
        return template
    if method in _peft():
        return dict.fromkeys(_keywords(_peft()[method], "peft"))
    if method in ("replay", "replay_class_balanced", "replay_reservoir", "replay_herding"):
        return base
    return None


def _peft() -> Dict[str, type]:
    """The rehearsal-free strategies by method name (also the bases a memory runs on)."""
    from ..strategies.inflora import InfLoRA
    from ..strategies.prompt import CODAPrompt

    return {"inflora": InfLoRA, "coda_prompt": CODAPrompt}


def _base_option_keys(options: Mapping) -> Optional[List[str]]:
    """The keywords ``options["base_options"]`` may set: those of the strategy
    ``options["base"]`` names; ``None`` for a base that is not built in (refused when the
    strategy is built). ``ValueError`` when ``base`` is missing."""
    base = options.get("base")
    if base is None:
        raise ValueError("RunConfig.options.base_options are keywords of the strategy a memory "
                         "is added to: set options.base too ('coda_prompt' or 'inflora'), or "
                         "leave base_options out")
    return _keywords(_peft()[base], "peft") if base in _peft() else None


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
