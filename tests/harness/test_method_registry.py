"""A method registered from outside the package runs through RunConfig, the runner and the
report, which read only what its registration declared (MethodFacts)."""
import inspect
from dataclasses import replace

import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.harness import METHODS, MethodFacts, RunConfig, register_method
from avalanche_cts.harness.methods import strategy_kwargs
from avalanche_cts.harness.options import _SET_BY_RUN, buffer_keys, option_keys
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


# ------------------------------------------------------------- declared options
CODA = "avalanche_cts.strategies.prompt:CODAPrompt"
BAD_DECLARATION = "options must be None (not checked) or a tuple of ['template', 'buffer', " \
                  "'plugin', 'base']"


def _init_keywords(cls, set_by_run):
    """The keyword arguments of ``cls.__init__`` that ``RunConfig`` fields do not set."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sorted(k for k, p in inspect.signature(cls.__init__).parameters.items()
                  if k != "self" and p.kind in kinds and k not in set_by_run)


def _keys_by_method_name(method):
    """The option keys of a built-in method as the name lists before ``MethodFacts.options``
    gave them: from the plugin, template and strategy signatures."""
    from avalanche_cts.strategies.inflora import InfLoRA
    from avalanche_cts.strategies.prompt import CODAPrompt
    from avalanche_cts.strategies.vl import VLTemplate

    template = {"template": _init_keywords(VLTemplate, _SET_BY_RUN["template"])}
    base = {"base": None, "base_options": None}
    token = dict(template, buffer=buffer_keys(), **base,
                 plugin=_init_keywords(CoreTokensetReplayPlugin, _SET_BY_RUN["plugin"]))
    peft = {"inflora": InfLoRA, "coda_prompt": CODAPrompt}
    if method in peft:
        return dict.fromkeys(_init_keywords(peft[method], _SET_BY_RUN["peft"]))
    return {"coreset": token, "core_tokens": token, "core_tokenset": token, "naive": template,
            "cumulative": template, "replay": base, "replay_class_balanced": base,
            "replay_reservoir": base, "replay_herding": base}[method]


BUILT_IN = ["coda_prompt", "core_tokens", "core_tokenset", "coreset", "cumulative", "inflora",
            "naive", "replay", "replay_class_balanced", "replay_herding", "replay_reservoir"]


def test_every_built_in_method_is_compared():
    assert METHODS.names() == BUILT_IN  # a new built-in joins the table above


@pytest.mark.parametrize("method", BUILT_IN)
def test_built_in_declarations_give_the_keys_the_method_names_gave(method):
    expected = _keys_by_method_name(method)
    assert option_keys(method) == expected
    # the comparison has teeth: the signatures give the keys the methods are known to read
    known = {"inflora": "rank", "coda_prompt": "pool_size", "naive": "template",
             "cumulative": "template"}
    assert known.get(method, "plugin" if "core" in method else "base_options") in expected
    if "plugin" in expected:
        assert "mem_weight" in expected["plugin"] and "batch_size" in expected["buffer"]


@pytest.fixture
def declared():
    register_method("declared", topk_tokens, memory="tokens", retention="budget",
                    options=("buffer", CODA))
    try:
        yield
    finally:
        METHODS.unregister("declared")


def test_a_registered_method_that_declares_options_gets_them_checked(declared):
    from avalanche_cts.strategies.prompt import CODAPrompt

    valid = sorted(["buffer"] + _init_keywords(CODAPrompt, _SET_BY_RUN["peft"]))
    assert "pool_size" in valid
    with pytest.raises(ValueError) as info:
        RunConfig(method="declared", options={"pool_sise": 4})
    assert str(info.value) == (f"RunConfig.options has 'pool_sise', which method 'declared' "
                               f"does not read; valid keys: {valid}")
    with pytest.raises(ValueError, match=r"options has 'plugin', which method 'declared'"):
        RunConfig(method="declared", options={"plugin": {}})  # a part it did not declare
    with pytest.raises(ValueError, match=r"options.buffer has \['temprature'\], which method "
                                         r"'declared' does not read; valid keys: \["):
        RunConfig(method="declared", options={"buffer": {"temprature": 0.5}})
    cfg = RunConfig(method="declared", options={"pool_size": 4, "buffer": {"temperature": 0.5}})
    assert cfg.memory().temperature == 0.5 and cfg.options["pool_size"] == 4


def test_a_registered_method_that_declares_none_is_not_checked(registered):
    assert METHODS.facts("plain").options is None and option_keys("plain") is None
    options = {"anything": {"x": 1}, "buffer": 3, "template": {"nope": 1}}
    assert RunConfig(method="plain", options=options).options == options


@pytest.mark.parametrize("options", ["buffer", ("bufer",), ("plugin", None), ("CODAPrompt",),
                                     ["template"], ("avalanche_cts.strategies.prompt:",)])
def test_a_bad_options_declaration_is_refused_at_registration(options):
    with pytest.raises(ValueError) as info:
        register_method("badly_declared", topk_tokens, options=options)
    assert str(info.value).startswith(BAD_DECLARATION), str(info.value)
    assert f"got {options!r}" in str(info.value)
    assert "badly_declared" not in METHODS


@pytest.mark.parametrize("path", ["avalanche_cts.strategies.nope:X",
                                  "avalanche_cts.strategies.prompt:CODAPromt"])
def test_a_declared_strategy_that_cannot_be_imported_is_named(path):
    register_method("unimportable", topk_tokens, options=(path,))
    try:
        with pytest.raises(ValueError, match=f"names the strategy '{path}', which cannot be "
                                             f"imported"):
            RunConfig(method="unimportable", options={"rank": 2})
    finally:
        METHODS.unregister("unimportable")
