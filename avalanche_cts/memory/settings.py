"""``MemorySettings``: every setting of a core tokenset memory, declared and checked once.

:class:`~avalanche_cts.CoreTokensetBuffer` and
:class:`~avalanche_cts.CoreTokensetReplayPlugin` take one (their keyword arguments build it);
the harness's ``RunConfig`` builds one from its fields (:meth:`RunConfig.memory`). A bad value
raises :class:`~avalanche_cts._checks.SettingError` naming the setting, the value and what is
accepted. This module imports nothing heavy, so command-line help can read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from .._checks import SettingError, check, is_int, is_real
from .recipe import DEFAULT_RECIPE, Recipe

__all__ = ["RETENTION_RULES", "MemorySettings", "check_budget_fraction", "check_retention"]

RETENTION_RULES: Dict[str, Callable[[float, Recipe], float]] = {
    "whole": lambda r, recipe: 1.0,
    "budget": lambda r, recipe: r,
    "split": lambda r, recipe: recipe.retention(r),
}
"""Token retention t of a memory at budget fraction r when none is given: ``whole`` keeps
every token (a coreset, t = 1), ``budget`` t = r (core tokens), ``split`` t = r ** e
(a core tokenset, e = ``recipe.retention_exponent``)."""

_STORAGE_DTYPES = ("float16", "float32", "uint8")  # the keys of codec.STORAGE_DTYPES (torch-free)


def check_budget_fraction(value: Any, field: str = "budget_fraction") -> None:
    """A budget as a fraction in (0, 1] of the bytes of the data seen, or :class:`SettingError`."""
    check(is_real(value) and 0 < value <= 1, field, value,
          "a number in (0, 1] (e.g. 0.01 for 1% of the data)")


def check_retention(value: Any, field: str = "token_retention") -> None:
    """A token retention t in (0, 1], or :class:`SettingError`."""
    check(is_real(value) and 0 < value <= 1, field, value,
          "a number in (0, 1] (fraction of patch tokens kept per sample)")


def _check_component(value: Any, field: str, registry) -> None:
    """A registered name (any case) or an object (checked by the registry when built)."""
    if isinstance(value, str) and value not in registry and value.lower() not in registry:
        raise SettingError(field, value, f"one of {registry.names()}",
                           f"unknown {registry.kind} {value!r}; choose one of {registry.names()}")


@dataclass(frozen=True)
class MemorySettings:
    """The settings of one core tokenset memory and its replay (checked when made).

    :ivar budget_fraction: budget as a fraction in (0, 1] of the bytes of all data seen so far
        (whole samples at the storage dtype); exclusive with ``budget_bytes``.
    :ivar budget_bytes: fixed budget in bytes.
    :ivar token_retention: fraction t in (0, 1] of the T patch tokens kept per sample;
        ``None``: from ``retention_rule`` and the budget fraction (:attr:`retention`).
    :ivar retention_rule: a key of :data:`RETENTION_RULES` (used when ``token_retention`` is
        ``None``).
    :ivar selector: sample selector name or object.
    :ivar scorer: token scorer name or object.
    :ivar temperature: temperature of ``gumbel`` token choice (> 0; lower = closer to top-k).
    :ivar pixel_dtype: storage dtype (``uint8``, ``float16``, ``float32``) or ``None``
        (uint8 when the images are exact 8-bit pixels).
    :ivar weighted: records also store their selector weight (4 bytes each).
    :ivar keep_sources: records remember (experience, index), not counted in the bytes.
    :ivar batch_size: batch size of the feature and scoring passes.
    :ivar num_workers: DataLoader workers of those passes.
    :ivar seed: seed of the random selector and scorer and of Gumbel sampling.
    :ivar recipe: how records are replayed and new data dropped, and the token choice
        (:class:`~avalanche_cts.memory.recipe.Recipe`).
    """

    budget_fraction: Optional[float] = None
    budget_bytes: Optional[int] = None
    token_retention: Optional[float] = None
    retention_rule: str = "whole"
    selector: Any = "random"
    scorer: Any = "random"
    temperature: float = 1.0
    pixel_dtype: Optional[str] = None
    weighted: bool = False
    keep_sources: bool = False
    batch_size: int = 128
    num_workers: int = 0
    seed: int = 0
    recipe: Recipe = field(default=DEFAULT_RECIPE)

    def __post_init__(self):
        """Check every setting (:class:`~avalanche_cts._checks.SettingError` naming it)."""
        self._check_budget()
        t = self.token_retention
        if t is not None:
            check_retention(t)
        check(self.retention_rule in RETENTION_RULES, "retention_rule", self.retention_rule,
              f"one of {list(RETENTION_RULES)}")
        check(t is not None or self.retention_rule == "whole" or self.budget_fraction is not None,
              "token_retention", t, "given with budget_bytes",
              f"retention rule {self.retention_rule!r} derives t from budget_fraction: give "
              f"token_retention with budget_bytes")
        self._check_writer()
        check(isinstance(self.recipe, Recipe), "recipe", self.recipe, "a Recipe")

    def _check_budget(self) -> None:
        if (self.budget_bytes is None) == (self.budget_fraction is None):
            raise SettingError("budget_fraction", self.budget_fraction, "given alone",
                               "give exactly one of budget_bytes or budget_fraction")
        b = self.budget_bytes
        check(b is None or (is_int(b) and b > 0), "budget_bytes", b, "a positive integer")
        if self.budget_fraction is not None:
            check_budget_fraction(self.budget_fraction)

    def _check_writer(self) -> None:
        from ..scorers import SCORERS
        from ..selectors import SELECTORS

        _check_component(self.selector, "selector", SELECTORS)
        _check_component(self.scorer, "scorer", SCORERS)
        check(is_real(self.temperature) and self.temperature > 0, "temperature",
              self.temperature, "a positive number")
        check(self.pixel_dtype is None or self.pixel_dtype in _STORAGE_DTYPES, "pixel_dtype",
              self.pixel_dtype, f"one of {list(_STORAGE_DTYPES)} or None")
        for name, low in (("batch_size", 1), ("num_workers", 0), ("seed", 0)):
            value = getattr(self, name)
            check(is_int(value) and value >= low, name, value, f"an integer >= {low}")

    @property
    def retention(self) -> float:
        """Token retention t the memory uses: ``token_retention``, or the retention rule
        applied to the budget fraction."""
        if self.token_retention is not None:
            return float(self.token_retention)
        return float(RETENTION_RULES[self.retention_rule](self.budget_fraction, self.recipe))

    @property
    def token_choice(self) -> str:
        """``topk`` or ``gumbel`` (the recipe's)."""
        return self.recipe.token_choice
