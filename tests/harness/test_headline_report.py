"""The headline's paired per-seed differences (experiments/accuracy_vs_bytes.py) on planted results."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="module")
def avb():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("accuracy_vs_bytes", BENCH / "accuracy_vs_bytes.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def _result(label, budget, seed, acc):
    return dict(label=label, final_acc=acc, config=dict(budget=budget, seed=seed))


def test_paired_differences_pair_seeds_within_and_across_budgets(avb):
    cts, cor = avb.TOKENSET, avb.CORESET
    planted = {  # seed -> (core tokenset at 1%, coreset at 1%, coreset at 5%)
        0: (0.40, 0.25, 0.38), 1: (0.30, 0.20, 0.36), 2: (0.50, 0.30, 0.41)}
    results = []
    for seed, (a, b, c) in planted.items():
        results += [_result(cts, 0.01, seed, a), _result(cor, 0.01, seed, b),
                    _result(cor, 0.05, seed, c)]
    results.append(_result(cor, 0.01, 7, 0.9))  # a seed the core tokenset lacks: not paired
    rows = {(d["budget"], d["versus"]): d for d in avb.paired_differences(results)}
    same = rows[(0.01, cor)]
    assert same["seeds"] == [0, 1, 2]
    assert same["differences"] == pytest.approx([15.0, 10.0, 20.0])
    assert same["mean"] == pytest.approx(15.0) and same["std"] == pytest.approx(5.0)
    assert same["better"] == 3
    # 95% t-interval: mean ± t(0.975, 2 df) * sd / sqrt(3), t = 4.302653 (statistical tables)
    half = 4.302653 * 5.0 / 3 ** 0.5
    assert (same["low"], same["high"]) == pytest.approx((15.0 - half, 15.0 + half), abs=1e-4)
    across = rows[(0.01, f"{cor} at 5%")]
    assert across["differences"] == pytest.approx([2.0, -6.0, 9.0])
    assert across["better"] == 2
    assert not any(v.endswith("at 2%") for _, v in rows)  # no coreset at 2%: no row


def test_paired_interval_uses_students_t_for_ten_seeds():
    from avalanche_cts.harness.report import paired_difference

    mine = {s: 0.5 + 0.01 * s for s in range(10)}
    other = {s: 0.5 + 0.01 * s - (0.02 if s % 2 else 0.04) for s in range(10)}  # 2 or 4 points
    d = paired_difference(mine, other)
    sd = (10 / 9) ** 0.5  # values 4, 2 alternating: population sd 1, sample sd sqrt(10/9)
    half = 2.262157 * sd / 10 ** 0.5  # t(0.975, 9 df)
    assert d["mean"] == pytest.approx(3.0) and d["std"] == pytest.approx(sd)
    assert (d["low"], d["high"]) == pytest.approx((3.0 - half, 3.0 + half), abs=1e-4)
    assert d["better"] == 10
    assert paired_difference({0: 0.5}, {0: 0.4}) is None  # one shared seed: no interval


def test_rows_get_the_inference_chosen_for_their_memory(avb):
    chosen = {avb.TOKENSET: {"rule": "t", "mode": "zero"}, avb.CORESET: {"rule": 0.5}}
    assert avb.inference_rule("core_tokenset", chosen) == ("t", "zero")
    assert avb.inference_rule("coreset", chosen) == (0.5, "mask")  # no form recorded: mask
    assert avb.inference_rule("naive", chosen) == ("whole", "mask")
    assert avb.inference_rule("core_tokens", chosen)[0] == "whole"
    assert avb.inference_rule("coreset", {})[0] == "whole"
    from common import inference_at
    assert inference_at("t", 0.01, 1 / 3) == pytest.approx(0.215443, abs=1e-6)
    assert inference_at(0.5, 0.01, 1 / 3) == 0.5 and inference_at("whole", 0.2, 0.5) == "whole"


def test_reference_rows_run_on_reference_seeds_and_headline_rows_on_every_seed(avb, tmp_path):
    chosen = {"training": {"lr": 1e-4, "epochs": 4, "optimizer": "adam"},
              "recipe": {"method": "core_tokenset", "selector": "herding", "scorer": "rollout",
                         "replay_mode": "mask", "retention_exponent": 1 / 3,
                         "dropout_tokens": "matched", "dropout_refresh": "experience"}}
    args = avb.parse_args(["--seeds", *map(str, range(10)), "--reference-seeds", "0", "1", "2",
                           "3", "4", "12", "--out", str(tmp_path)])
    seeds = {}
    for c in avb.make_cells(args, chosen, {}):
        seeds.setdefault(c.axes["label"], set()).add(c.cfg.seed)
    assert seeds[avb.TOKENSET] == set(range(10)) == seeds[avb.CORESET]
    assert seeds["naive"] == set(range(5)) == seeds["Avalanche replay"]  # 12 is not in --seeds
    default = avb.parse_args(["--out", str(tmp_path)])
    assert {c.cfg.seed for c in avb.make_cells(default, chosen, {})
            if c.axes["label"] == "cumulative"} == {0, 1, 2}


def test_top_token_inference_runs_in_the_chosen_form_under_its_own_key(avb, tmp_path):
    """The form recorded in inference.json reaches each top-token row's settings and its run
    folder (a mask-token run keeps its old key; a zero-fill run of the same keep rate gets
    another, so neither is read as the other)."""
    chosen = {"training": {"lr": 1e-4, "epochs": 4, "optimizer": "adam"},
              "recipe": {"method": "core_tokenset", "selector": "herding", "scorer": "rollout",
                         "replay_mode": "zero", "retention_exponent": 0.5,
                         "dropout_tokens": "matched", "dropout_refresh": "experience"}}
    args = avb.parse_args(["--seeds", "0", "--budgets", "0.01", "--out", str(tmp_path)])
    keys = {}
    for form in ("mask", "zero"):
        inference = {avb.TOKENSET: {"rule": "t", "mode": form}}
        cells = {c.axes["label"]: c for c in avb.make_cells(args, chosen, inference)
                 if c.cfg.budget == 0.01}
        tokenset, coreset = cells[avb.TOKENSET], cells[avb.CORESET]
        assert tokenset.cfg.inference == pytest.approx(0.1)
        assert tokenset.cfg.inference_mode == form
        assert coreset.cfg.inference == "whole" and "-inf" not in coreset.key
        keys[form] = tokenset.key
    assert keys["mask"].endswith("-s0-inf0.1") and keys["zero"].endswith("-s0-inf0.1-zero")
    assert all(avb.KEY_SEED.search(k).group(1) == "0" for k in keys.values())


@pytest.mark.parametrize("argv, folder", [
    ([], "cluttered_fmnist"),
    (["--style", "small_items"], "cluttered_fmnist_small_items"),
    (["--backbone", "cluttered_fmnist_partial"], "cluttered_fmnist_partial"),
    (["--backbone", "cluttered_fmnist_partial", "--style", "small_items"],
     "cluttered_fmnist_partial_small_items"),
])
def test_results_folder_names_backbone_and_style(avb, argv, folder):
    """Runs of another backbone or style never land in (and get refused by) another's folder."""
    assert avb.parse_args(argv).out == avb.HERE / "accuracy_vs_bytes" / folder
