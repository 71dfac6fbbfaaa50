"""MemorySettings: the memory's settings checked once, read by the buffer and the plugin."""
from dataclasses import replace

import pytest

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, MemorySettings, Recipe
from avalanche_cts.memory.store import TokenStore
from avalanche_cts.memory.writer import MemoryWriter


@pytest.mark.parametrize("rule, expected", [("whole", 1.0), ("budget", 0.04),
                                            ("split", 0.04 ** (1 / 3))])
def test_retention_rules(rule, expected):
    s = MemorySettings(budget_fraction=0.04, retention_rule=rule)
    assert s.retention == pytest.approx(expected, rel=1e-12)
    assert MemorySettings(budget_fraction=0.04, retention_rule=rule,
                          token_retention=0.3).retention == 0.3  # given beats the rule


@pytest.mark.parametrize("kw, phrase", [
    (dict(), "exactly one of budget_bytes or budget_fraction"),
    (dict(budget_bytes=10, budget_fraction=0.1), "exactly one of budget_bytes or budget_fraction"),
    (dict(budget_bytes=0), "budget_bytes must be a positive integer"),
    (dict(budget_fraction=True), "budget_fraction must be a number in (0, 1]"),
    (dict(budget_bytes=100, retention_rule="split"), "give token_retention with budget_bytes"),
    (dict(budget_fraction=0.1, retention_rule="half"), "retention_rule must be one of"),
    (dict(budget_fraction=0.1, scorer="nope"), "unknown token scorer 'nope'"),
    (dict(budget_fraction=0.1, pixel_dtype="int8"), "pixel_dtype must be one of"),
    (dict(budget_fraction=0.1, num_workers=-1), "num_workers must be an integer >= 0"),
    (dict(budget_fraction=0.1, recipe="mask"), "recipe must be a Recipe"),
])
def test_bad_settings_are_named(kw, phrase):
    with pytest.raises(ValueError) as err:
        MemorySettings(**kw)
    assert phrase in str(err.value), str(err.value)


def test_buffer_holds_a_store_and_a_writer_built_from_its_settings():
    recipe = Recipe(token_choice="topk", replay_mode="zero")
    s = MemorySettings(budget_bytes=5000, token_retention=0.25, scorer="random", temperature=0.5,
                       batch_size=7, seed=4, recipe=recipe)
    buf = CoreTokensetBuffer(settings=s)
    assert not isinstance(buf, TokenStore) and isinstance(buf.store, TokenStore)
    assert isinstance(buf.writer, MemoryWriter)
    assert (buf.store.budget_bytes, buf.store.token_retention) == (5000, 0.25)
    assert (buf.writer.token_choice, buf.writer.temperature, buf.writer.batch_size) == ("topk", 0.5, 7)
    # the keywords build the same settings
    same = CoreTokensetBuffer(budget_bytes=5000, token_retention=0.25, scorer="random",
                              temperature=0.5, batch_size=7, seed=4, token_choice="topk")
    assert same.settings == replace(s, recipe=Recipe(token_choice="topk"))
    assert same.state_dict()["config"] == buf.state_dict()["config"]
    with pytest.raises(TypeError, match="settings must be a MemorySettings"):
        CoreTokensetBuffer(settings=dict(budget_bytes=10))


def test_plugin_reads_the_recipe_and_the_memorys_settings():
    s = MemorySettings(budget_fraction=0.1, token_retention=0.3, temperature=0.5,
                       recipe=Recipe(token_choice="topk"))
    buf = CoreTokensetBuffer(settings=s)
    plugin = CoreTokensetReplayPlugin(buf, recipe=Recipe(replay_mode="sparse", dropout=None))
    assert plugin.replay_mode == "sparse" and plugin.keep_rate == 0.3  # the memory's t
    assert plugin.dropout.scorer is buf.writer.scorer  # the same seeded object
    assert (plugin.dropout.token_choice, plugin.dropout.temperature) == ("topk", 0.5)
    by_keywords = CoreTokensetReplayPlugin(buf, replay_mode="sparse", dropout=0.6)
    assert by_keywords.recipe == Recipe(token_choice="topk", replay_mode="sparse", dropout=0.6)
    with pytest.raises(ValueError, match="give the recipe or its fields"):
        CoreTokensetReplayPlugin(buf, recipe=Recipe(), replay_mode="zero")
