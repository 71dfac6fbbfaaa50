"""The step-split and GPU-throughput benchmarks in their small CPU modes: they run and write
every field their README tables read."""
import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avalanche_cts import get_adapter
from avalanche_cts.models import create_model

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=600)


def test_step_split_smoke_splits_every_case_into_parts_that_sum_to_the_step(tmp_path):
    _run("step_split.py", "--smoke", "--threads", "1", "--tag", "t", "--out", str(tmp_path))
    res = json.loads((tmp_path / "step_split_cpu_t.json").read_text())
    assert set(res["cases"]) == {"plain", "zero", "sparse", "mask", "matched"}
    for name, c in res["cases"].items():
        # the model's part is the step's remainder (medians of per-step splits), which timing
        # noise on a busy machine can push below zero at smoke sizes: only its presence is
        # checked, never a timing
        assert c["steps_timed"] >= 1 and c["step"] > 0 and c["plugin"] >= 0, name
        assert math.isfinite(c["model"]) and c["plugin_share"] >= 0, name
    plain, matched, sparse = res["cases"]["plain"], res["cases"]["matched"], res["cases"]["sparse"]
    assert plain["mem_load"] == plain["decode"] == plain["dropout_mask"] == 0.0  # no memory, no dropout
    assert matched["matched_lookup"] > 0 and res["cases"]["zero"]["matched_lookup"] == 0.0
    assert sparse["place_new"] > 0 and sparse["mem_collate"] > 0
    assert {"matched_over_random", "zero_over_plain"} <= set(res["ratios"])
    assert "| plugin share |" in (tmp_path / "step_split_cpu_t.md").read_text()


def test_gpu_throughput_cpu_mode_measures_extras_and_compiled_rows(tmp_path):
    _run("gpu_throughput.py", "--cpu", "--batch", "8", "--steps", "3", "--skip-scorers",
         "--compile", "--compile-backend", "eager", "--per-class", "2", "--peak-tflops", "1",
         "--out", str(tmp_path))
    res = json.loads((tmp_path / "gpu_throughput_cpu.json").read_text())
    training, ex = res["training"], res["extras"]
    assert {"plain", "replay_sparse", "plain_compiled", "replay_sparse_compiled"} <= set(training)
    assert res["ratios"]["replay_sparse_compiled_over_plain"] > 0
    m = ex["mfu"]
    assert m["fwd_gflops_per_image"] > 0 and m["mfu_vs_peak"] == m["achieved_tflops"] / 1.0
    plain = training["plain"]
    flops = 3 * m["fwd_gflops_per_image"] * 1e9 * plain["rows"] / plain["step_s"] / 1e12
    assert abs(m["achieved_tflops"] - flops) <= 1e-9 * flops
    d = ex["dropout"]
    assert d["random"]["step_over_random"] == 1.0
    assert all(c["step_over_random"] > 0 and c["experience_s"] > 0 for c in d.values())
    a = ex["atman"]
    assert a["tokens"] == get_adapter(create_model("vit_fmnist_tiny")).num_tokens and a["atman_s"] > 0 and a["t_plus_1_forwards_s"] > 0
    e = ex["experience"]
    assert e["images"] == 40 and e["train_epoch_s"] > 0
    for k in ("memory_gradmatch+rollout", "memory_gradmatch+atman"):
        assert 0 < e[k]["records"] <= 40 and e[k]["over_epoch"] > 0
    assert "AtMan vs T + 1 forwards" in (tmp_path / "gpu_throughput_cpu.md").read_text()


def test_hot_paths_times_old_and_new_paths_side_by_side(tmp_path):
    _run("hot_paths.py", "--old", str(ROOT / "avalanche_cts" / "tokens" / "patches.py"),
         "--rounds", "1", "--out", str(tmp_path))
    res = json.loads((tmp_path / "hot_paths_cpu.json").read_text())
    assert len(res) == 5 and "matched look-up: fingerprints" in res
    for k, v in res.items():
        assert v["before_ms"] > 0 and v["after_ms"] > 0, k
        assert abs(v["after_over_before"] - v["after_ms"] / v["before_ms"]) < 1e-12



def test_hot_paths_times_the_step_path_of_an_earlier_checkout_beside_the_current(tmp_path):
    _run("hot_paths.py", "--old-root", str(ROOT), "--rounds", "1", "--tag", "t",
         "--out", str(tmp_path))
    res = json.loads((tmp_path / "hot_paths_cpu_t.json").read_text())
    assert {"random keep mask", "matched keep mask (cached scores)", "collation", "decode",
            "memory items (64 reads)"} <= set(res)
    for k, v in res.items():
        assert v["before_ms"] > 0 and v["after_ms"] > 0, k

# ------------------------------------------------- experiments/peft_memory.py (issue 27)
@pytest.fixture(scope="module")
def pm():
    """The script as a module (its sibling modules importable while it loads)."""
    bench = str(ROOT / "experiments")
    sys.path.insert(0, bench)
    try:
        spec = importlib.util.spec_from_file_location("peft_memory", ROOT / "experiments" /
                                                      "peft_memory.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(bench)


RECIPE = {"training": {"lr": 1e-4, "epochs": 4, "optimizer": "adam"},
          "recipe": {"method": "core_tokenset", "selector": "herding", "scorer": "rollout",
                     "replay_mode": "mask", "retention_exponent": 1 / 3,
                     "dropout_tokens": "matched", "dropout_refresh": "experience",
                     "options": {"plugin": {"mem_weight": 2.0}}}}


def _planted_choices(pm):
    """Choices as the validation plan writes them; CODA + core tokenset picked the whole
    query and weight 0.5, the coresets weight 2."""
    picked = {("core tokenset", "coda_prompt"): {"options": {"base_options": {"query": "whole"},
                                                             "plugin": {"mem_weight": 0.5}}},
              ("coreset", "coda_prompt"): {"options": {"plugin": {"mem_weight": 2.0}}},
              ("coreset", "inflora"): {"options": {"plugin": {"mem_weight": 2.0}}}}
    return {(b, m): dict(training=RECIPE["training"], choices={"weight": "planted"},
                         settings=pm._settings(pm.start(b, m, RECIPE["recipe"]),
                                               picked.get((m, pm.base_method(b)), {})))
            for b in pm.BASES for m in pm.MEMORIES}


def test_peft_memory_test_cells_carry_rows_budgets_seeds_and_base_options(pm, tmp_path):
    args = pm.parse_args(["--plan", "test", "--out", str(tmp_path)])
    cells = pm.make_cells(args, "test", pm.test_groups(args, _planted_choices(pm)))
    grid = {}
    for c in cells:
        grid.setdefault((c.axes["label"], c.cfg.budget), []).append(c.cfg.seed)
        assert c.cfg.inference == "whole" and c.benchmark["test_per_class"] == 200
        assert "validation" not in c.benchmark and c.cfg.lr == 0.005
        assert c.cfg.lr_schedule == "cosine" and c.cfg.epochs == 4
    ten, five = list(range(10)), list(range(5))
    assert grid == {(row, r): (ten if r in (0.0, 0.01) else five)
                    for b in ("CODA-Prompt", "InfLoRA")
                    for row, r in [(b, 0.0)] + [(f"{b} + {m}", r) for m in ("core tokenset", "coreset")
                                                for r in (0.01, 0.05)]}
    assert len({c.key for c in cells}) == len(cells) == 80
    cfg = {(c.axes["label"], c.cfg.budget): c.cfg for c in cells if c.cfg.seed == 0}
    coda = cfg["CODA-Prompt + core tokenset", 0.01]
    assert coda.method == "core_tokenset" and coda.replay_mode == "mask" and coda.scorer == "rollout"
    assert coda.options["base"] == "coda_prompt"
    assert coda.options["base_options"] == {"pool_size": 100, "prompt_length": 8, "query": "whole"}
    assert coda.options["plugin"] == {"mem_weight": 0.5}
    inflora = cfg["InfLoRA + core tokenset", 0.05]
    assert inflora.options["base_options"] == {"rank": 8}
    assert inflora.options["plugin"] == {"mem_weight": 2.0}  # the recipe's, unchanged
    coreset = cfg["InfLoRA + coreset", 0.01]
    assert (coreset.method, coreset.selector, coreset.options["base"]) == ("coreset", "random", "inflora")
    assert coreset.options["plugin"] == {"mem_weight": 2.0}
    assert (cfg["CODA-Prompt", 0.0].method, cfg["CODA-Prompt", 0.0].options) == \
        ("coda_prompt", {"pool_size": 100, "prompt_length": 8})
    fmnist = pm.parse_args(["--plan", "test", "--benchmark", "fmnist_pretrained"])
    cells = pm.make_cells(fmnist, "test", pm.test_groups(fmnist, _planted_choices(pm)))
    assert {c.cfg.budget for c in cells} == {0.0, 0.01} and {c.cfg.seed for c in cells} == set(five)
    assert len(cells) == 2 * 3 * 5


def test_peft_memory_validation_levers_one_at_a_time(pm, tmp_path):
    stages = {(b, m): [(s, [label for label, _ in opts]) for s, opts in pm.stages(b, m)]
              for b in pm.BASES for m in pm.MEMORIES}
    weights = ("weight", ["memory weight 0.5", "memory weight 1", "memory weight 2"])
    modes = ("mode", ["replay mask", "replay zero"])
    assert stages["CODA-Prompt", "core tokenset"] == [
        weights, modes, ("query", ["query of the partial input", "query of the whole image"])]
    assert stages["InfLoRA", "core tokenset"] == [weights, modes]
    assert stages["CODA-Prompt", "coreset"] == stages["InfLoRA", "coreset"] == [weights]
    args = pm.parse_args(["--plan", "validation", "--out", str(tmp_path)])
    start = pm.config(args, RECIPE["training"], pm.start("CODA-Prompt", "core tokenset",
                                                         RECIPE["recipe"]))
    cells = pm.make_cells(args, "validation", [("start", start, args.validation_budgets,
                                                args.seeds)])
    assert len(cells) == 10 and all(c.benchmark["validation"] for c in cells)
    assert {c.benchmark["test_per_class"] for c in cells} == {100}
    # the start is an option of every stage: its runs are shared, not repeated
    for stage, options in pm.stages("CODA-Prompt", "core tokenset"):
        same = [label for label, change in options
                if pm.config(args, RECIPE["training"], pm._settings(pm.start(
                    "CODA-Prompt", "core tokenset", RECIPE["recipe"]), change)) == start]
        assert len(same) == 1, stage


def _planted_results():
    """Per seed: CODA-Prompt alone, + core tokenset and + coreset at 1% (seeds 0-9) and 5%
    (seeds 0-4); accuracies in [0, 1], plasticity 0.3 / 0.6 / 0.5 (2 x 2 matrices)."""
    alone = {s: 0.40 + 0.01 * s for s in range(10)}
    cts = {0.01: {s: alone[s] + 0.02 + 0.005 * s for s in range(10)},
           0.05: {s: alone[s] + 0.05 - 0.01 * s for s in range(5)}}
    coreset = {r: {s: v - (0.03 if s % 2 else -0.01) for s, v in cts[r].items()} for r in cts}
    rows = [("CODA-Prompt", 0.0, alone, 0.3)]
    rows += [(f"CODA-Prompt + {m}", r, accs[r], p) for m, accs, p in
             (("core tokenset", cts, 0.6), ("coreset", coreset, 0.5)) for r in (0.01, 0.05)]
    results = {}
    for label, r, accs, p in rows:
        results.setdefault(label, []).extend(
            dict(label=label, final_acc=a, acc_matrix=[[0.9, 0.0], [0.2, p]],
                 config=dict(budget=r, seed=s)) for s, a in accs.items())
    return results, alone, cts, coreset


def _interval(d, t975):
    """Mean, sample std and Student-t 95% half-width of differences ``d`` (points)."""
    d = np.asarray(d)
    return d.mean(), d.std(ddof=1), t975 * d.std(ddof=1) / np.sqrt(len(d))


def test_peft_memory_table_and_paired_differences_on_planted_results(pm, tmp_path):
    results, alone, cts, coreset = _planted_results()
    args = argparse.Namespace(out=tmp_path, benchmark="cluttered_fmnist", seeds=[0, 1, 2, 3, 4],
                              seeds_1pct=list(range(10)), n_experiences=5, train_per_class=200,
                              test_per_class=200, backbone=None, budgets=[0.01, 0.05],
                              bases=list(pm.BASES))
    choices = {("CODA-Prompt", "core tokenset"): {"choices": {"query": "whole"}}}
    text = pm.write_test(args, results, choices)
    paired = {(d["row"], d["budget"], d["versus"]): d
              for d in json.loads((tmp_path / "paired.json").read_text())}
    t9, t4 = 2.2621571628, 2.7764451052  # Student-t 97.5% quantiles, 9 and 4 degrees of freedom
    expected = {
        ("CODA-Prompt + core tokenset", 0.01, "CODA-Prompt alone"):
            ([100 * (cts[0.01][s] - alone[s]) for s in range(10)], t9),
        ("CODA-Prompt + core tokenset", 0.05, "CODA-Prompt alone"):
            ([100 * (cts[0.05][s] - alone[s]) for s in range(5)], t4),
        ("CODA-Prompt + core tokenset", 0.01, "CODA-Prompt + coreset at 1%"):
            ([-1.0, 3.0] * 5, t9),
        ("CODA-Prompt + core tokenset", 0.05, "CODA-Prompt + coreset at 5%"):
            ([-1.0, 3.0, -1.0, 3.0, -1.0], t4),
        ("CODA-Prompt + coreset", 0.01, "CODA-Prompt alone"):
            ([100 * (coreset[0.01][s] - alone[s]) for s in range(10)], t9),
        ("CODA-Prompt + coreset", 0.05, "CODA-Prompt alone"):
            ([100 * (coreset[0.05][s] - alone[s]) for s in range(5)], t4),
    }
    assert set(paired) == set(expected)  # no InfLoRA results: nothing paired there
    for key, (diffs, t975) in expected.items():
        mean, sd, half = _interval(diffs, t975)
        d = paired[key]
        assert d["differences"] == pytest.approx(diffs), key
        assert (d["mean"], d["std"]) == pytest.approx((mean, sd)), key
        assert (d["low"], d["high"]) == pytest.approx((mean - half, mean + half), abs=1e-6), key
        assert d["better"] == sum(x > 0 for x in diffs), key
    vs_coreset = paired["CODA-Prompt + core tokenset", 0.01, "CODA-Prompt + coreset at 1%"]
    assert vs_coreset["better"] == 5 and vs_coreset["mean"] == pytest.approx(1.0)
    mean, sd, half = _interval([-1.0, 3.0] * 5, t9)
    assert (f"| CODA-Prompt + core tokenset | 1% | CODA-Prompt + coreset at 1% | +1.0 ± {sd:.1f} "
            f"| [{mean - half:+.1f}, {mean + half:+.1f}] | 5/10 |") in text
    a = np.array(list(alone.values())) * 100
    assert f"| CODA-Prompt (no memory) | {a.mean():.1f} ± {a.std(ddof=1):.1f} |  | 30.0 ± 0.0 |" in text
    c5 = np.array(list(cts[0.05].values())) * 100
    assert (f"| CODA-Prompt + core tokenset | {np.mean(list(cts[0.01].values())) * 100:.1f} ± "
            f"{np.std(list(cts[0.01].values()), ddof=1) * 100:.1f} | {c5.mean():.1f} ± "
            f"{c5.std(ddof=1):.1f} | 60.0 ± 0.0 | 60.0 ± 0.0 |") in text
    assert (tmp_path / "table.md").read_text() == text


def test_peft_memory_smoke_runs_both_plans_and_writes_the_tables(pm, tmp_path):
    out = str(tmp_path)
    pm.main(["--plan", "validation", "--smoke", "--jobs", "1", "--out", out])
    for b in ("coda_prompt", "inflora"):
        for m in ("core_tokenset", "coreset"):
            chosen = json.loads((tmp_path / f"chosen_{b}_{m}.json").read_text())
            assert chosen["settings"]["options"]["base"] == b and chosen["training"]["epochs"] == 1
            assert set(chosen["choices"]) == ({"weight"} if m == "coreset" else
                                              {"weight", "mode", "query"} if b == "coda_prompt"
                                              else {"weight", "mode"})
    validation = (tmp_path / "validation.md").read_text()
    assert "## CODA-Prompt + core tokenset" in validation and "query of the whole image" in validation
    assert "| InfLoRA (no memory) |" in validation
    pm.main(["--plan", "test", "--smoke", "--jobs", "1", "--budgets", "0.05", "--seeds", "0", "1",
             "--out", out])  # 5%: the smoke-sized core tokenset holds records
    table = (tmp_path / "table.md").read_text()
    for row in ("CODA-Prompt (no memory)", "CODA-Prompt + core tokenset", "InfLoRA + coreset"):
        assert f"| {row} |" in table
    paired = json.loads((tmp_path / "paired.json").read_text())
    assert len(paired) == 6 and all(d["seeds"] == [0, 1] for d in paired)
    assert len(list((tmp_path / "runs" / "test").glob("*/result.json"))) == 12


def _refused(parse_args, argv, pattern: str, capsys) -> None:
    """``parse_args(argv)`` exits with an error message matching ``pattern``."""
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert re.search(pattern, capsys.readouterr().err)


@pytest.mark.parametrize("args, phrase", [
    (["--validation-budgets", "0"], "share of the training data in (0, 1]"),
    (["--validation-budgets", "1.5"], "share of the training data in (0, 1]"),
    (["--bases", "LoRA"], "invalid choice"),
])
def test_peft_memory_refuses_bad_bases_and_validation_budgets(pm, args, phrase, capsys):
    _refused(pm.parse_args, ["--plan", "validation", *args], re.escape(phrase), capsys)


def test_peft_memory_bases_keep_table_order(pm):
    args = pm.parse_args(["--plan", "test", "--bases", "InfLoRA", "CODA-Prompt"])
    assert args.bases == ["CODA-Prompt", "InfLoRA"]
    assert pm.parse_args(["--plan", "test", "--bases", "InfLoRA"]).bases == ["InfLoRA"]


@pytest.mark.parametrize("width", ["100", "0", "-64"])
def test_step_split_refuses_a_width_that_is_not_a_multiple_of_64(width, capsys):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import step_split
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    _refused(step_split.parse_args, ["--embed-dim", width], "positive multiple of 64", capsys)
    assert step_split.parse_args(["--embed-dim", "192"]).embed_dim == 192


# ------------------------------------------ experiments/recipe_ablation.py (issue 26)
@pytest.fixture(scope="module")
def ra(pm):
    """recipe_ablation as a module (``pm`` keeps the experiments folder importable)."""
    return sys.modules["recipe_ablation"]


def test_recipe_ablation_weight_one_removes_a_start_weight_and_keeps_old_settings(ra, tmp_path):
    args = ra.parse_args(["--benchmark", "cluttered_fmnist", "--backbone",
                          "cluttered_fmnist_partial", "--out", str(tmp_path)])
    start = RECIPE["recipe"]
    weights = dict(ra.MATCHED_STAGES)["weight"]
    opts = {label: ra._base(args, RECIPE["training"], start, change).options.get("plugin")
            for label, change in weights}
    assert opts == {"memory weight 0.5": {"mem_weight": 0.5}, "memory weight 1": None,
                    "memory weight 2": {"mem_weight": 2.0}, "memory weight 3": {"mem_weight": 3.0},
                    "memory weight 4": {"mem_weight": 4.0}}
    # from a start without a weight, weight 1 is the same run as no change at all
    plain = dict(start)
    plain.pop("options")
    same = ra._base(args, RECIPE["training"], plain, dict(weights)["memory weight 1"])
    assert same == ra._base(args, RECIPE["training"], plain)
    # other options survive the removal
    kept = ra._settings({"options": {"plugin": {"mem_weight": 2.0, "composite": True}}},
                        {"options": {"plugin": {"mem_weight": None}}})
    assert kept == {"options": {"plugin": {"composite": True}}}


def test_recipe_ablation_memory_stage_sets_the_batch_it_names_and_keeps_the_weight(ra, tmp_path):
    """From a start with 32 memory rows and weight 2, each option runs the rows its label
    names (an option once left the start's 32 rows under the label "batch 64")."""
    args = ra.parse_args(["--benchmark", "cluttered_fmnist", "--out", str(tmp_path)])
    start = ra._settings(RECIPE["recipe"], {"batch_size_mem": 32,
                                            "options": {"plugin": {"mem_weight": 2.0}}})
    for label, change in dict(ra.MATCHED_STAGES)["memory"]:
        cfg = ra._base(args, RECIPE["training"], start, change)
        assert cfg.batch_size_mem == int(label.split()[-1])
        assert cfg.options["plugin"]["mem_weight"] == 2.0


def _planted(acc: float, plast: float, n: int = 3):
    """Results whose final accuracy and plasticity (mean diagonal after the first task) are
    ``acc`` and ``plast``."""
    m = [[0.9, 0, 0], [0.5, plast, 0], [acc, acc, plast]]
    return [dict(final_acc=acc, acc_matrix=m) for _ in range(n)]


def _planted_runs(args, label: str, budgets, acc: float, plast: float):
    """One planted result (:func:`_planted`) per budget and seed of a run group."""
    return [dict(r, label=label, config=dict(budget=b, seed=s))
            for b in budgets for s in args.seeds for r in _planted(acc, plast, 1)]


def _main_planted(ra, monkeypatch, argv, accuracy, plast: float = 0.6):
    """``recipe_ablation.main(argv)`` with every run group planted at ``accuracy(label,
    cfg)``; returns the groups' settings by label."""
    seen = {}

    def planted(args, groups):
        out = {}
        for label, cfg, budgets, *_ in groups:
            seen[label] = cfg
            out[label] = _planted_runs(args, label, budgets, accuracy(label, cfg), plast)
        return out

    monkeypatch.setattr(ra, "_run", planted)
    ra.main(argv)
    return seen


def test_recipe_ablation_plasticity_floor_picks_the_best_option_that_reaches_it(ra):
    options = [("a", {}), ("b", {}), ("c", {})]
    res = {"a": _planted(0.50, 0.30), "b": _planted(0.47, 0.55), "c": _planted(0.40, 0.70)}
    assert ra._pick("weight", options, res)[0] == "a"
    assert ra._pick("weight", options, res, floor=0.5)[0] == "b"
    assert ra._pick("weight", options, res, floor=0.6)[0] == "c"
    assert ra._pick("weight", options, res, floor=0.9)[0] == "a"  # none reaches it: the best


def test_recipe_ablation_loss_stage_chooses_the_coreset_loss_by_the_same_rule(ra, tmp_path,
                                                                            monkeypatch):
    (tmp_path / "inference.json").write_text(json.dumps(
        {"coreset (ours, t = 1)": {"option": "top t = r^e", "rule": "t"}}))
    args = ra.parse_args(["--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--stages",
                          "loss", "--inference", str(tmp_path / "inference.json")])
    seen = {}

    def planted(args, groups):  # the core tokenset is better with "all", the coreset with ACE
        out = {}
        for label, cfg, budgets, *per_budget in groups:
            seen[label] = (cfg, per_budget)
            local = "ER-ACE" in label
            acc = (0.5 if local else 0.4) if label.startswith("coreset") else (0.3 if local else 0.45)
            out[label] = _planted(acc, 0.6)
        return out

    monkeypatch.setattr(ra, "_run", planted)
    recipe, log = ra.run_stages(args, RECIPE["training"], RECIPE["recipe"], ra.MATCHED_STAGES)
    assert recipe["options"] == {"plugin": {"mem_weight": 2.0}}  # "all" is no setting
    assert args.coreset == {"options": {"plugin": {"new_data_loss": "local"}}}
    cfg, (per_budget,) = seen["coreset, new data: over its experience's classes (ER-ACE)"]
    assert cfg.method == "coreset" and cfg.options["plugin"] == {"new_data_loss": "local"}
    assert per_budget(0.008) == dict(inference=pytest.approx(0.2))  # the coreset's rule: top t
    avb = importlib.import_module("accuracy_vs_bytes")
    rows = {label: change for label, change, *_ in avb.rows(recipe, args.coreset)}
    assert rows[avb.CORESET]["options"] == args.coreset["options"]
    assert "options" not in rows["Avalanche replay"]  # Avalanche's buffers keep their loss


def test_recipe_ablation_start_file_names_a_project_path(ra, tmp_path):
    inside = ra.RESULTS / "cluttered_fmnist" / "chosen.json"
    assert ra._project_path(inside) == \
        "experiments/results/recipe_ablation/cluttered_fmnist/chosen.json"
    assert ra._project_path(tmp_path / "mine.json") == "mine.json"


def _stored_run(folder, name, seed, final_acc, matrix):
    """A stored run ``folder/runs/name-s<seed>/result.json`` as accuracy_vs_bytes writes it."""
    run = folder / "runs" / f"{name}-s{seed}"
    run.mkdir(parents=True)
    run.joinpath("result.json").write_text(json.dumps(dict(
        config=dict(seed=seed), final_acc=final_acc, acc_matrix=matrix)))


def test_compare_backbones_pairs_final_accuracy_and_plasticity_per_seed(pm, tmp_path,
                                                                       monkeypatch):
    cb = importlib.import_module("compare_backbones")
    monkeypatch.setattr(cb, "HERE", tmp_path)
    first, second = ("a", "x-s?"), ("b", "y-s?")
    for folder, name, acc, plast in (("a", "x", [0.5, 0.6, 0.6], [0.4, 0.5, 0.6]),
                                     ("b", "y", [0.4, 0.4, 0.6], [0.5, 0.5, 0.5])):
        for seed in range(3):
            _stored_run(tmp_path / folder, name, seed, acc[seed], [[0.9, 0.0], [0.1, plast[seed]]])
    monkeypatch.setattr(cb, "COMPARISONS", {"planted": (first, second)})
    cb.main()
    rows = [line for line in (tmp_path / "backbones_paired.md").read_text().splitlines()
            if line.startswith("| planted")]
    assert rows[0].startswith("| planted | final accuracy | +10.0 ± 10.0 |")  # +10, +20, 0
    assert "| 2/3 |" in rows[0] and "| plasticity | +0.0 ± 10.0 |" in rows[1]


def test_compare_backbones_pairs_two_backbones_leads_on_shared_seeds(pm, tmp_path, monkeypatch):
    cb = importlib.import_module("compare_backbones")
    monkeypatch.setattr(cb, "HERE", tmp_path)
    planted = {("a", "x"): [0.6, 0.7, 0.8, 0.9], ("a", "y"): [0.5, 0.5, 0.5, 0.1],
               ("b", "x"): [0.5, 0.5, 0.5], ("b", "y"): [0.5, 0.4, 0.5]}
    for (folder, name), accs in planted.items():
        for seed, acc in enumerate(accs):  # seed 3 only in folder a: not paired
            _stored_run(tmp_path / folder, name, seed, acc, [[0.9, 0.0], [0.1, 0.5]])
    lead_a, lead_b = (("a", "x-s?"), ("a", "y-s?")), (("b", "x-s?"), ("b", "y-s?"))
    assert cb.by_seed(lead_a, cb.METRICS["final accuracy"]) == pytest.approx(
        {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.8})
    monkeypatch.setattr(cb, "COMPARISONS", {"leads": (lead_a, lead_b)})
    cb.main()
    row = next(line for line in (tmp_path / "backbones_paired.md").read_text().splitlines()
               if line.startswith("| leads | final accuracy"))
    # per seed (x - y in a) - (x - y in b): +10, +10, +30 points; mean 16.7, std 11.5
    assert "| +16.7 ± 11.5 |" in row and "| 3/3 | [0, 1, 2] |" in row


def test_recipe_ablation_tag_keeps_the_earlier_round_and_the_plans_read_start(
        ra, tmp_path, monkeypatch):
    earlier = {"matched.md": "round 1", "chosen.json": json.dumps(RECIPE),
               "inference.json": "{}", "inference.md": "round 1"}
    for name, text in earlier.items():
        (tmp_path / name).write_text(text)
    args = ra.parse_args(["--benchmark", "cluttered_fmnist", "--out", str(tmp_path),
                          "--tag", "r2"])
    args.start_name, args.start = "chosen.json", RECIPE["recipe"]
    recipe = dict(RECIPE["recipe"], retention_exponent=0.25)
    runs = [dict(r, label="t = r^0.25", config=dict(budget=b, seed=s))
            for s, r in enumerate(_planted(0.5, 0.5)) for b in ra.STAGE_BUDGETS]
    ra.write_report(args, RECIPE["training"], {}, [("split", {"t = r^0.25": runs})], recipe, {})
    assert json.loads((tmp_path / "chosen_r2.json").read_text())["recipe"] == recipe
    assert (tmp_path / "matched_r2.md").is_file() and (tmp_path / "matched_r2.csv").is_file()
    # the inference plan reads the recipe --start names, and writes beside round 1
    seen = {}

    def planted(args, train, recipe):
        seen["recipe"] = recipe
        return {m: "whole" for m in ra.INFERENCE_METHODS}, \
            {f"{m}, whole": _planted(0.5, 0.5) for m in ra.INFERENCE_METHODS}

    monkeypatch.setattr(ra, "run_inference", planted)
    monkeypatch.setattr(ra, "_row", lambda label, results, budgets: f"| {label} |")
    ra.main(["--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--plan", "inference",
             "--start", str(tmp_path / "chosen_r2.json"), "--tag", "r2"])
    assert seen["recipe"]["retention_exponent"] == 0.25
    assert json.loads((tmp_path / "inference_r2.json").read_text())["core tokenset"] == \
        dict(option="whole", rule="whole", mode="mask")  # RECIPE's replay mode
    assert "recipe `chosen_r2.json`" in (tmp_path / "inference_r2.md").read_text()
    # so does the composite plan, without overwriting an earlier round's composite.md
    (tmp_path / "composite.md").write_text("round 1")
    earlier["composite.md"] = "round 1"
    monkeypatch.setattr(ra, "run_composite", lambda args, train, recipe: {
        label: _planted(0.5, 0.5) for label, _ in ra.COMPOSITE_ROWS})
    ra.main(["--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--plan", "composite",
             "--start", str(tmp_path / "chosen_r2.json"), "--tag", "r2"])
    assert "recipe `chosen_r2.json`" in (tmp_path / "composite_r2.md").read_text()
    assert {n: (tmp_path / n).read_text() for n in earlier} == earlier


@pytest.mark.parametrize("argv, phrase", [
    (["--plasticity-floor", "48.1"], "in \\[0, 1\\]"),
    (["--start", "no/such/chosen.json"], "no such file"),
    (["--tag", "../up"], "names files"),
    (["--inference", "no/such/inference.json"], "no such file"),
    # a stage of the other plan: refused before any run, naming the plan's stages
    (["--plan", "paper", "--stages", "loss"], "not a stage of --plan paper .*dropout"),
    (["--plan", "inference", "--stages", "split"], "has no stages"),
    # --only names composite rows: a typo, or another plan, is refused
    (["--plan", "composite", "--only", "composite replay"], "names no rows of --plan composite; valid: .*new data whole"),
    (["--plan", "matched", "--only", "core tokenset (chosen recipe)"],
     "names no options of the stages run .*'memory weight 3'"),
    # a stage's option, but not of the stage run
    (["--stages", "weight", "--only", "replay sparse"], "names no options of the stages run \\(weight\\)"),
])
def test_recipe_ablation_refuses_a_bad_floor_or_start(ra, argv, phrase, capsys):
    _refused(ra.parse_args, argv, phrase, capsys)


def test_recipe_ablation_composite_only_runs_the_rows_it_names(ra, monkeypatch):
    """``--only`` keeps the named composite rows, in the plan's order; without it, all run."""
    ran = []
    monkeypatch.setattr(ra, "_run", lambda args, groups: ran.append([g[0] for g in groups]))
    rows = [label for label, _ in ra.COMPOSITE_ROWS]
    for only in ([rows[2], rows[0]], None):
        args = ra.parse_args(["--plan", "composite"] + (["--only", *only] if only else []))
        ra.run_composite(args, {}, {"retention_exponent": 1 / 3})
    assert ran == [[rows[0], rows[2]], rows]


def test_recipe_ablation_stage_only_runs_the_named_options_beside_the_current_one(
        ra, tmp_path, monkeypatch):
    """``--only`` with ``--stages`` runs the named options and the recipe's own (the reference
    row), for the core tokenset and for the coreset's stage alike; the rule picks among them."""
    start = tmp_path / "chosen_start.json"
    start.write_text(json.dumps(dict(RECIPE, coreset={
        "options": {"plugin": {"replay_flip": 0.5, "mem_weight": 2.0}}})))

    def accuracy(label, cfg):  # planted: heavier memory loss is better
        return 0.3 + 0.05 * cfg.options.get("plugin", {}).get("mem_weight", 1.0)

    seen = _main_planted(ra, monkeypatch, [
        "--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--start", str(start),
        "--stages", "weight", "--only", "memory weight 3", "--no-references", "--tag", "w"],
        accuracy)
    assert sorted(seen) == ["coreset, memory weight 2", "coreset, memory weight 3",
                            "memory weight 2", "memory weight 3"]
    chosen = json.loads((tmp_path / "chosen_w.json").read_text())
    assert chosen["recipe"]["options"]["plugin"]["mem_weight"] == 3.0
    assert chosen["coreset"]["options"]["plugin"] == {"replay_flip": 0.5, "mem_weight": 3.0}


def test_recipe_ablation_every_plan_stage_is_accepted(ra):
    """Each stage of both plans passes the check (``selector`` is in both)."""
    for plan, stages in (("paper", ra.STAGES), ("matched", ra.MATCHED_STAGES)):
        names = [s for s, _ in stages]
        assert "selector" in names
        assert ra.parse_args(["--plan", plan, "--stages", *names]).stages == names


def test_recipe_ablation_runs_without_a_memory_get_no_buffer_options(ra, tmp_path):
    """The references of the matched plan (naive, cumulative) are built: only methods with a
    memory record their records' sources."""
    args = ra.parse_args(["--benchmark", "cluttered_fmnist", "--out", str(tmp_path)])
    for method in ("naive", "cumulative"):
        assert "buffer" not in ra._base(args, dict(method=method)).options
    for method in ("coreset", "core_tokenset"):
        assert ra._base(args, dict(method=method)).options["buffer"] == {"keep_sources": True}


def test_recipe_ablation_augment_round_keeps_the_start_files_coreset_choices(ra, tmp_path,
                                                                           monkeypatch):
    """A later round (``--start`` with a ``coreset`` entry, ``--stages augment``): the
    coreset's runs carry its earlier loss choice, its mirroring choice is added to it, and the
    core tokenset's moves go into the recipe; none of the coreset's options is a move."""
    start = tmp_path / "chosen_start.json"
    start.write_text(json.dumps(dict(RECIPE, coreset={
        "options": {"plugin": {"new_data_loss": "balanced"}}})))
    def accuracy(label, cfg):  # the core tokenset gains by moves, the coreset by mirroring
        plugin = cfg.options.get("plugin", {})
        if label.startswith("coreset") and plugin.get("replay_flip"):
            return 0.45
        return 0.5 if plugin.get("replay_shift") == 2 and "mirrored" not in label else 0.4

    seen = _main_planted(ra, monkeypatch, [
        "--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--start", str(start),
        "--stages", "augment", "--no-references", "--tag", "r5"], accuracy)
    chosen = json.loads((tmp_path / "chosen_r5.json").read_text())
    assert chosen["recipe"]["options"]["plugin"] == {"mem_weight": 2.0, "replay_shift": 2}
    assert chosen["coreset"] == {"options": {"plugin": {"new_data_loss": "balanced",
                                                        "replay_flip": 0.5}}}
    coreset_runs = [c for label, c in seen.items() if label.startswith("coreset")]
    assert len(coreset_runs) == 2
    assert all(c.options["plugin"]["new_data_loss"] == "balanced" for c in coreset_runs)
    assert not any("replay_shift" in c.options["plugin"] for c in coreset_runs)
    assert "records moved by up to 2 tokens" in (tmp_path / "matched_r5.md").read_text()


@pytest.mark.parametrize("coreset_best, shared", [(30.0, True), (10.0, False)])
def test_recipe_ablation_head_stage_shares_a_rate_both_methods_chose(ra, tmp_path, monkeypatch,
                                                                   coreset_best, shared):
    """The ``head`` stage chooses the head's rate for each method; a rate both chose becomes
    every row's training setting (the references' too), a rate they disagree on does not."""
    start = tmp_path / "chosen_start.json"
    start.write_text(json.dumps(RECIPE))

    def accuracy(label, cfg):  # the core tokenset is best at x30, the coreset at coreset_best
        return 0.6 if cfg.head_lr_scale == (
            coreset_best if label.startswith("coreset") else 30.0) else 0.4

    _main_planted(ra, monkeypatch, [
        "--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--start", str(start),
        "--stages", "head", "--no-references", "--tag", "r6"], accuracy, 0.8)
    chosen = json.loads((tmp_path / "chosen_r6.json").read_text())
    assert chosen["recipe"]["head_lr_scale"] == 30.0
    assert chosen["coreset"]["head_lr_scale"] == coreset_best
    assert ("head_lr_scale" in chosen["training"]) == shared
    if shared:
        assert chosen["training"] == dict(RECIPE["training"], head_lr_scale=30.0)
    avb = importlib.import_module("accuracy_vs_bytes")
    rows = {label: change for label, change, *_ in avb.rows(chosen["recipe"], chosen["coreset"])}
    assert rows[avb.CORESET]["head_lr_scale"] == coreset_best
    assert rows["InfLoRA"]["head_lr_scale"] == 1.0  # the PEFT rows keep their own optimiser


@pytest.mark.parametrize("coreset_epochs, shared", [(8, True), (4, False)])
def test_recipe_ablation_training_stage_runs_the_start_setting_beside_the_named_ones(
        ra, tmp_path, monkeypatch, coreset_epochs, shared):
    """The ``training`` stage with ``--only``: the start file's training (lr 1e-4, 4 epochs,
    which lives in ``training``, not in the recipe) is the reference row of both methods; each
    method's choice lands in its own settings, and a choice both made in ``training``."""
    start = tmp_path / "chosen_start.json"
    start.write_text(json.dumps(RECIPE))

    def accuracy(label, cfg):  # planted: the core tokenset is best at 8 epochs
        best = coreset_epochs if label.startswith("coreset") else 8
        return 0.6 if cfg.epochs == best else 0.4 + 0.01 * cfg.epochs

    seen = _main_planted(ra, monkeypatch, [
        "--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--start", str(start),
        "--stages", "training", "--only", "lr 0.0001, 8 epochs", "--no-references",
        "--tag", "r7"], accuracy, 0.8)
    assert sorted(seen) == ["coreset, lr 0.0001, 4 epochs", "coreset, lr 0.0001, 8 epochs",
                            "lr 0.0001, 4 epochs", "lr 0.0001, 8 epochs"]
    assert {seen[k].epochs for k in seen if k.endswith("4 epochs")} == {4}
    chosen = json.loads((tmp_path / "chosen_r7.json").read_text())
    assert chosen["recipe"]["epochs"] == 8
    assert chosen["coreset"]["epochs"] == coreset_epochs
    assert (chosen["training"]["epochs"] == 8) == shared
    avb = importlib.import_module("accuracy_vs_bytes")
    rows = {label: change for label, change, *_ in avb.rows(chosen["recipe"], chosen["coreset"])}
    assert rows[avb.CORESET]["epochs"] == coreset_epochs
    assert rows[avb.TOKENSET]["epochs"] == 8


def test_recipe_ablation_inference_plan_tests_the_coreset_as_it_was_chosen(ra, tmp_path,
                                                                          monkeypatch):
    """The inference plan's coreset rows carry the coreset's own choices (``chosen.json``'s
    ``coreset``: its replay options and head rate), not a plain coreset."""
    start = tmp_path / "chosen_start.json"
    start.write_text(json.dumps(dict(RECIPE, coreset={
        "options": {"plugin": {"replay_flip": 0.5, "mem_weight": 2.0}}, "head_lr_scale": 30.0})))
    seen = _main_planted(ra, monkeypatch, [
        "--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--plan", "inference",
        "--start", str(start), "--tag", "r7"], lambda label, cfg: 0.5, 0.8)
    coreset = [c for label, c in seen.items() if label.startswith("coreset")]
    tokenset = [c for label, c in seen.items() if label.startswith("core tokenset")]
    assert len(coreset) == len(tokenset) == 3
    assert all(c.method == "coreset" and c.head_lr_scale == 30.0 and c.options["plugin"] ==
               {"replay_flip": 0.5, "mem_weight": 2.0} for c in coreset)
    assert all(c.method == "core_tokenset" and c.head_lr_scale == 1.0 for c in tokenset)


def test_recipe_ablation_inference_plan_feeds_tokens_in_the_recipes_replay_mode(ra, tmp_path,
                                                                              monkeypatch):
    """Top-token rows feed the kept tokens as the recipe trains them (here zero fill), for both
    methods; whole rows carry no form; inference.json records it for the test split."""
    start = tmp_path / "chosen_start.json"
    start.write_text(json.dumps(dict(RECIPE, recipe=dict(RECIPE["recipe"], replay_mode="zero"))))
    seen = _main_planted(ra, monkeypatch, [
        "--benchmark", "cluttered_fmnist", "--out", str(tmp_path), "--plan", "inference",
        "--start", str(start), "--tag", "z"], lambda label, cfg: 0.5, 0.8)
    top = [c for label, c in seen.items() if "top" in label]
    whole = [c for label, c in seen.items() if label.endswith("whole")]
    assert len(top) == 4 and len(whole) == 2
    assert all(c.inference_mode == "zero" for c in top)
    assert all(c.inference == "whole" and c.inference_mode == "mask" for c in whole)  # default
    written = json.loads((tmp_path / "inference_z.json").read_text())
    assert {v["mode"] for v in written.values()} == {"zero"}
    assert "replay mode (zero)" in (tmp_path / "inference_z.md").read_text()


def test_accuracy_vs_bytes_refuses_an_only_label_that_names_no_row(pm, tmp_path, capsys):
    avb = importlib.import_module("accuracy_vs_bytes")
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps(RECIPE))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        avb.main(["--chosen", str(chosen), "--out", str(out), "--seeds", "0",
                  "--budgets", "0.5",  # no such budget: without the check nothing would run either
                  "--only", "core tokenset", "corset (ours, t = 1)"])
    message = str(e.value)
    assert "'corset (ours, t = 1)'" in message and "'coreset (ours, t = 1)'" in message
    assert "'core tokenset'," not in message.split(";")[0]  # the valid label is not named bad
    assert not (out / "runs").exists()  # nothing ran


def test_accuracy_vs_bytes_reports_every_stored_seed_not_only_this_invocations(
        pm, tmp_path, monkeypatch):
    avb = importlib.import_module("accuracy_vs_bytes")
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps(RECIPE))
    out = tmp_path / "out"
    for key in ("core_tokenset-r0.01-s0", "core_tokenset-r0.01-s3", "naive-r0-s7",
                "coreset__ours__t___1_-r0.05-s12-inf0.5"):  # runs of earlier invocations
        (out / "runs" / key).mkdir(parents=True)
    seen = {}
    monkeypatch.setattr(avb, "execute_cells", lambda cells, *a, **k: seen.update(run=cells))
    monkeypatch.setattr(avb, "stored", lambda cells, runs: seen.update(cells=cells) or [])
    monkeypatch.setattr(avb, "write_report", lambda args, *a: seen.update(args=args) or "")
    avb.main(["--chosen", str(chosen), "--out", str(out), "--seeds", "0", "1",
              "--reference-seeds", "0", "--only", "core tokenset", "--budgets", "0.01"])
    assert {c.cfg.seed for c in seen["run"]} == {0, 1}  # runs only what was asked
    assert seen["args"].seeds == [0, 1, 3, 7, 12]
    # reference rows: this invocation's reference seeds and every stored seed (1 is neither)
    assert {c.cfg.seed for c in seen["cells"] if c.axes["label"] == "naive"} == {0, 3, 7, 12}
    assert {c.cfg.seed for c in seen["cells"] if c.axes["label"] == "core tokenset"} == \
        {0, 1, 3, 7, 12}


def test_accuracy_vs_bytes_pairs_the_1pct_core_tokenset_with_every_row_without_memory(pm):
    """Planted final accuracies (seeds 0-5): the 1% core tokenset against naive and cumulative
    (budget 0, no memory) appears once each, on the seeds both hold, with the Student-t
    interval of an independent computation; the same-budget coreset is paired as before."""
    avb = importlib.import_module("accuracy_vs_bytes")
    rng = np.random.default_rng(3)
    cts = {s: 0.6 + 0.02 * rng.standard_normal() for s in range(6)}
    planted = {("naive", 0.0): {s: 0.3 + 0.01 * s for s in range(6)},
               ("cumulative", 0.0): {s: cts[s] + 0.01 * (s - 2) for s in range(1, 6)},
               (avb.CORESET, 0.01): {s: cts[s] - 0.05 for s in range(6)},
               (avb.TOKENSET, 0.01): cts}
    results = [dict(label=label, final_acc=a, config=dict(budget=r, seed=s))
               for (label, r), accs in planted.items() for s, a in accs.items()]
    diffs = {d["versus"]: d for d in avb.paired_differences(results)}
    assert set(diffs) == {"naive (no memory)", "cumulative (no memory)", avb.CORESET}
    t975 = {5: 2.7764, 6: 2.5706}
    for label in ("naive", "cumulative"):
        d = diffs[f"{label} (no memory)"]
        other = planted[label, 0.0]
        want = [100 * (cts[s] - other[s]) for s in sorted(other)]
        mean, sd, half = _interval(want, t975[len(want)])
        assert d["budget"] == 0.01 and d["seeds"] == sorted(other)
        assert d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(sd)
        assert (d["low"], d["high"]) == pytest.approx((mean - half, mean + half), abs=1e-3)
        assert d["better"] == sum(x > 0 for x in want)
    assert diffs["cumulative (no memory)"]["better"] == 1  # ahead on seed 1 only; a tie on 2
    assert diffs[avb.CORESET]["mean"] == pytest.approx(5.0)


def test_token_fit_object_fit_counts_kept_tokens_on_the_object(pm):
    """Two planted rows: 3 of 4 kept tokens on a 4-token object, then 1 of 2 on a 2-token
    object: on object 4/6 of all kept tokens, covers the mean of 3/4 and 1/2."""
    import token_fit

    keep = torch.zeros(2, 8, dtype=torch.bool)
    obj = torch.zeros(2, 8, dtype=torch.bool)
    keep[0, [0, 1, 2, 7]] = True
    obj[0, 0:4] = True
    keep[1, [4, 6]] = True
    obj[1, [4, 5]] = True
    fit = token_fit.object_fit(keep, obj)
    assert fit["on_object"] == pytest.approx(4 / 6) and fit["covers"] == pytest.approx(0.625)
