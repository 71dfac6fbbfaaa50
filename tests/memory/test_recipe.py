"""``Recipe``: the retention rule t = r ** e, the documented default, and a ``SettingError``
naming every field that is out of range."""
import dataclasses
import math

import pytest

from avalanche_cts._checks import SettingError
from avalanche_cts.memory.recipe import DEFAULT_RECIPE, Recipe


@pytest.mark.parametrize("exponent, budget", [(1 / 3, 0.01), (0.5, 0.04), (1.0, 0.3), (0.25, 1.0)])
def test_retention_is_the_budget_to_the_exponent(exponent, budget):
    t = Recipe(retention_exponent=exponent).retention(budget)
    assert t == pytest.approx(math.exp(exponent * math.log(budget)), rel=1e-12)


def test_default_retention_at_one_percent_is_the_cube_root():
    assert DEFAULT_RECIPE.retention(0.01) == pytest.approx(0.01 ** (1 / 3), rel=1e-12)
    assert DEFAULT_RECIPE.retention(0.01) == pytest.approx(0.215443469, rel=1e-8)  # by hand
    paper = Recipe(replay_mode="zero", token_choice="topk", retention_exponent=0.5)
    assert paper.retention(0.01) == pytest.approx(0.1, rel=1e-12)


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.01, 5])
def test_retention_refuses_a_budget_outside_the_unit_interval(budget):
    with pytest.raises(ValueError, match=r"budget must be a fraction of the bytes in \(0, 1\]"):
        DEFAULT_RECIPE.retention(budget)


def test_default_recipe_is_the_documented_one():
    expected = dict(replay_mode="mask", dropout=None, dropout_schedule="fixed",
                    dropout_fraction=1.0, dropout_tokens="random", dropout_refresh="step",
                    token_choice="gumbel")
    assert {k: getattr(DEFAULT_RECIPE, k) for k in expected} == expected
    assert DEFAULT_RECIPE.retention_exponent == pytest.approx(1 / 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_RECIPE.replay_mode = "zero"


BAD_FIELDS = [
    ("replay_mode", "zeros"), ("replay_mode", None),
    ("dropout_schedule", "linear"), ("dropout_tokens", "topk"),
    ("dropout_refresh", "batch"), ("token_choice", "top-k"),
    ("dropout", 0), ("dropout", 1.5), ("dropout", -0.2), ("dropout", True), ("dropout", "0.5"),
    ("dropout", float("nan")),
    ("dropout_fraction", -0.1), ("dropout_fraction", 1.01), ("dropout_fraction", None),
    ("dropout_fraction", float("inf")),
    ("retention_exponent", 0), ("retention_exponent", 1.5), ("retention_exponent", "1/3"),
    ("retention_exponent", False),
]


@pytest.mark.parametrize("field, value", BAD_FIELDS)
def test_every_invalid_field_raises_a_setting_error_naming_it(field, value):
    with pytest.raises(SettingError) as info:
        Recipe(**{field: value})
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert field in str(info.value), str(info.value)
    assert info.value.value is value


@pytest.mark.parametrize("field, value", [
    ("dropout", 1.0), ("dropout", 1e-6), ("dropout_fraction", 0), ("dropout_fraction", 1),
    ("retention_exponent", 1), ("retention_exponent", 1e-3), ("replay_mode", "sparse"),
    ("token_choice", "topk"), ("dropout_refresh", "experience"), ("dropout_tokens", "matched"),
    ("dropout_schedule", "uniform")])
def test_boundary_values_are_accepted(field, value):
    assert getattr(Recipe(**{field: value}), field) == value
