"""``MethodFacts``: what the harness needs to know about a continual-learning method.

Declared when a method is registered (:func:`avalanche_cts.harness.register_method`) and read
by ``RunConfig`` (which settings matter, the run's name), the runner, the reports and the
demos, so that a new method is one builder plus one registration. Imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .._checks import check
from ..memory.settings import RETENTION_RULES

__all__ = ["MEMORY_KINDS", "MethodFacts"]

MEMORY_KINDS = ("none", "samples", "tokens")
"""``none``: no memory (the budget is ignored); ``samples``: whole samples held to the bytes of
the budget (Avalanche's buffers); ``tokens``: a core tokenset memory
(:class:`~avalanche_cts.CoreTokensetBuffer`) built from ``RunConfig.memory()``."""


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
    """

    memory: str = "none"
    retention: Optional[str] = None
    label: str = "{method}"
    title: Optional[str] = None
    key_fields: Tuple[str, ...] = ()

    def __post_init__(self):
        check(self.memory in MEMORY_KINDS, "memory", self.memory, f"one of {list(MEMORY_KINDS)}")
        wanted = f"one of {list(RETENTION_RULES)} for a token memory, else None"
        check((self.retention in RETENTION_RULES) == (self.memory == "tokens"), "retention",
              self.retention, wanted)

    @property
    def uses_memory(self) -> bool:
        """Whether the method's results depend on the budget."""
        return self.memory != "none"

    def report_label(self, cfg: Dict) -> str:
        """The method's line in reports for the run settings ``cfg``."""
        return self.label.format(**cfg)
