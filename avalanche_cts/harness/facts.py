"""``MethodFacts``: what the harness needs to know about a continual-learning method.

Declared when a method is registered (:func:`avalanche_cts.harness.register_method`) and read
by ``RunConfig`` (which settings matter, the run's name, which ``options`` keys it reads:
:mod:`.options`), the runner, the reports and the demos, so that a new method is one builder
plus one registration. Imports nothing heavy (a strategy named in ``options`` is imported when
its keywords are first read).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .._checks import check
from ..memory.settings import RETENTION_RULES

__all__ = ["MEMORY_KINDS", "MethodFacts", "OPTION_PARTS"]

MEMORY_KINDS = ("none", "samples", "tokens")
"""``none``: no memory (the budget is ignored); ``samples``: whole samples held to the bytes of
the budget (Avalanche's buffers); ``tokens``: a core tokenset memory
(:class:`~avalanche_cts.CoreTokensetBuffer`) built from ``RunConfig.memory()``."""

OPTION_PARTS = ("template", "buffer", "plugin", "base")
"""The ``RunConfig.options`` parts a method can declare it reads (``MethodFacts.options``):
``template``: keywords of the VL templates (:class:`~avalanche_cts.strategies.vl.VLTemplate`,
BLIP models); ``buffer``: the memory settings ``RunConfig`` does not set, and
``normalization``; ``plugin``: keywords of :class:`~avalanche_cts.CoreTokensetReplayPlugin`;
``base``: ``base`` and ``base_options`` (the PEFT strategy a memory is added to, and its
keywords)."""

_STRATEGY_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
"""A ``"module:Class"`` entry of ``MethodFacts.options``."""


@dataclass(frozen=True)
class MethodFacts:
    """What a method declares when it is registered.

    :ivar memory: one of :data:`MEMORY_KINDS`.
    :ivar retention: for ``tokens``: the rule that gives the token retention t from the budget
        when ``RunConfig.token_retention`` is ``None`` (a key of
        :data:`~avalanche_cts.memory.settings.RETENTION_RULES`).
    :ivar label: the method's line in reports, a format string over the run's settings
        (e.g. ``"{method} {selector}+{scorer}"``).
    :ivar title: the method's name in the demos' tables (default: its name).
    :ivar key_fields: settings that name a run besides method, budget and seed (``RunConfig.key``;
        ``token_retention`` is written ``t<value>`` when given).
    :ivar options: what the method reads from ``RunConfig.options``, checked when a config is
        made: a tuple of :data:`OPTION_PARTS` and ``"module:Class"`` strategies whose keyword
        arguments are plain options (e.g. InfLoRA's ``avalanche_cts.strategies.inflora:InfLoRA``,
        imported when first checked; a memory's ``options["base_options"]`` are checked
        against the one strategy that its base method declares); ``()``: reads none;
        ``None`` (default): not declared, not checked (but ``buffer`` for a token memory).
    """

    memory: str = "none"
    retention: Optional[str] = None
    label: str = "{method}"
    title: Optional[str] = None
    key_fields: Tuple[str, ...] = ()
    options: Optional[Tuple[str, ...]] = None

    def __post_init__(self):
        check(self.memory in MEMORY_KINDS, "memory", self.memory, f"one of {list(MEMORY_KINDS)}")
        wanted = f"one of {list(RETENTION_RULES)} for a token memory, else None"
        check((self.retention in RETENTION_RULES) == (self.memory == "tokens"), "retention",
              self.retention, wanted)
        check(self.options is None or (isinstance(self.options, tuple)
                                       and all(map(_is_option_source, self.options))),
              "options", self.options, f"None (not checked) or a tuple of {list(OPTION_PARTS)} "
              f"and 'module:Class' strategies whose keywords the method takes")

    @property
    def uses_memory(self) -> bool:
        """Whether the method's results depend on the budget."""
        return self.memory != "none"

    def report_label(self, cfg: Dict) -> str:
        """The method's line in reports for the run settings ``cfg``."""
        return self.label.format(**cfg)


def _is_option_source(entry) -> bool:
    """Whether ``entry`` of ``MethodFacts.options`` is a part or a ``"module:Class"`` path."""
    return isinstance(entry, str) and (entry in OPTION_PARTS
                                       or _STRATEGY_PATH.fullmatch(entry) is not None)
