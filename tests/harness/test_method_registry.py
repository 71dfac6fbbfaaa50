"""A method registered from outside the package runs through RunConfig, the runner and the
report, which read only what its registration declared (MethodFacts)."""
from dataclasses import replace

import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.harness import METHODS, MethodFacts, RunConfig, register_method
from avalanche_cts.harness.methods import strategy_kwargs
from avalanche_cts.harness.report import aggregate, summary_rows
from avalanche_cts.harness.runner import run
from avalanche_cts.strategies.training import Naive
from avalanche_cts.tokens.patches import keep_count

torch.set_num_threads(1)


def topk_tokens(cfg, model, evaluator):
    """A token memory that always keeps the top-k tokens (whatever ``cfg.token_choice``)."""
    settings = cfg.memory()
    settings = replace(settings, recipe=replace(settings.recipe, token_choice="topk"))
    plugin = CoreTokensetReplayPlugin(CoreTokensetBuffer(settings=settings),
                                      recipe=settings.recipe, seed=cfg.seed)
    return Naive(**strategy_kwargs(cfg, model, evaluator), plugins=[plugin])


@pytest.fixture
def registered():
    register_method("topk_tokens", topk_tokens, memory="tokens", retention="budget",
                    label="{method} {scorer}", key_fields=("scorer",))
    register_method("plain", lambda cfg, model, evaluator: None)
    try:
        yield
    finally:
        METHODS.unregister("topk_tokens")
        METHODS.unregister("plain")


def test_facts_are_checked_when_declared():
    with pytest.raises(ValueError, match="memory must be one of"):
        MethodFacts(memory="tokenz")
    with pytest.raises(ValueError, match="retention must be one of"):
        MethodFacts(memory="tokens")  # a token memory needs a retention rule
    with pytest.raises(ValueError, match="retention must be one of"):
        MethodFacts(memory="none", retention="split")


def test_a_method_registered_outside_runs_through_config_runner_and_report(registered):
    from conftest import make_digits_benchmark

    # RunConfig reads the facts: the budget is checked for a memory, ignored without one
    with pytest.raises(ValueError, match="RunConfig.budget must be a fraction in"):
        RunConfig(method="topk_tokens", budget=1.5)
    assert RunConfig(method="plain", budget=5.0).retention() is None
    cfg = RunConfig(method="topk_tokens", budget=0.2, scorer="random", model="vit_digits_micro",
                    epochs=1, batch_size=32, token_choice="gumbel")
    assert cfg.retention() == 0.2  # the "budget" rule: t = r
    assert cfg.key() == "topk_tokens_r0.2_random_s0"
    assert RunConfig(method="plain", budget=0.2).key() == "plain_s0"

    result = run(cfg, make_digits_benchmark(n_experiences=2), log=None)
    tokens = keep_count(64 // 4, 0.2)  # 8 x 8 digits in 2 x 2 patches: T = 16 tokens
    assert result["memory_records"] > 0 and result["memory_bytes"] > 0
    assert result["memory_tokens"] == tokens * result["memory_records"]
    assert len(result["acc_matrix"]) == 2

    plain = dict(result, config=dict(result["config"], method="plain"), memory_bytes=0)
    rows = {r["cell"]: r for r in summary_rows({"mine": result, "plain": plain})}
    assert rows["mine"]["label"] == "topk_tokens random" and rows["mine"]["budget"] == 0.2
    assert rows["plain"]["label"] == "plain" and rows["plain"]["budget"] is None
    (row,) = aggregate([result], lambda r: r["config"]["method"])
    assert row["retention"] == 0.2 and row["budget"] == 0.2


def test_registered_facts_drive_the_built_in_methods():
    assert {m for m in METHODS if METHODS.facts(m).memory == "tokens"} == {
        "coreset", "core_tokens", "core_tokenset"}
    assert {m for m in METHODS if not METHODS.facts(m).uses_memory} == {
        "naive", "cumulative", "inflora", "coda_prompt"}
    r = 0.01
    ts = {m: RunConfig(method=m, budget=r).retention() for m in ("coreset", "core_tokens",
                                                                  "core_tokenset")}
    assert ts == {"coreset": 1.0, "core_tokens": r, "core_tokenset": r ** (1 / 3)}


def test_registered_token_memory_options_checked_once(registered):
    # the one option-key check reads the memory settings for a registered token memory too
    with pytest.raises(ValueError, match=r"budget_fraction is set from the RunConfig fields"):
        RunConfig(method="topk_tokens", options={"buffer": {"budget_fraction": 0.1}})
    with pytest.raises(ValueError, match=r"options.buffer has \['temprature'\]"):
        RunConfig(method="topk_tokens", options={"buffer": {"temprature": 0.5}})
    cfg = RunConfig(method="topk_tokens", options={"buffer": {"temperature": 0.5}, "mine": 1})
    assert cfg.memory().temperature == 0.5  # its own option "mine" is the method's to read


def test_a_memory_on_a_peft_base_is_named_by_the_base_title():
    from dataclasses import asdict

    from avalanche_cts.harness.demo import _label
    from avalanche_cts.harness.report import run_label

    cfg = asdict(RunConfig(method="core_tokenset", options={"base": "coda_prompt"}))
    assert _label({"config": cfg}) == "CODA-Prompt + core tokenset"
    inferred = asdict(RunConfig(method="coreset", options={"base": "inflora"}, inference=0.5))
    assert run_label(inferred, "x") == "InfLoRA + x @top0.5 rollout mask"
    assert _label({"config": asdict(RunConfig(method="core_tokenset"))}) == "core tokenset"
    rows = summary_rows({"c": dict(config=cfg, acc_matrix=[[1.0]], final_acc=1.0,
                                   avg_inc_acc=1.0, forgetting=0.0, memory_bytes=10,
                                   wall_time_s=1.0)})
    assert rows[0]["label"] == "CODA-Prompt + core_tokenset random+rollout"
