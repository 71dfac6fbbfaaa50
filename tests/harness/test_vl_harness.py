"""The VL configs and the embedded VL job's cells (no training here: see test_vl_end_to_end)."""
from pathlib import Path

import pytest

from avalanche_cts.harness.cli import build_parser
from avalanche_cts.harness.execute import cell_data
from avalanche_cts.harness.grid import expand_cells, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


@pytest.mark.parametrize("name, cells", [("vl_vqa_blip", 12), ("vl_caption_blip", 8),
                                         ("vl_scenes_cpu", 3)])
def test_vl_configs_expand_into_checked_cells(name, cells):
    config = load_config(CONFIGS / f"{name}.yaml", ["checkpoint=/models/blip"])
    expanded = expand_cells(config)
    assert len(expanded) == cells
    data = cell_data(expanded[-1])
    assert data["normalization"]["mean"][0] == pytest.approx(0.48145466)  # BLIP's processor
    if name != "vl_scenes_cpu":
        assert data["tokenizer"] == "/models/blip"  # the checkpoint's tokenizer reads the data


def test_paper_grid_pairs_core_tokensets_with_coresets_at_equal_budgets():
    cells = expand_cells(load_config(CONFIGS / "vl_vqa_blip.yaml"))
    budgets = {m: sorted(c.cfg.budget for c in cells if c.cfg.method == m)
               for m in ("core_tokenset", "coreset")}
    assert budgets["core_tokenset"] == budgets["coreset"] == [0.01, 0.05, 0.1, 0.2, 0.5]
    one = next(c.cfg for c in cells if c.cfg.method == "core_tokenset" and c.cfg.budget == 0.01)
    assert (one.selector, one.scorer) == ("gradmatch", "gradlrp")
    assert one.retention() == pytest.approx(0.1)  # 10% of the tokens of 10% of the samples


def test_demo_vl_cells_share_the_budget_and_selector():
    from avalanche_cts.harness.demo_vl import demo_cells

    args = build_parser().parse_args(["demo-vl", "--seeds", "0", "1"])
    cells = demo_cells(args)
    assert len(cells) == 2 * 2 * 4
    memory = [c.cfg for c in cells if c.cfg.method != "naive"]
    assert {(c.budget, c.selector) for c in memory} == {(0.1, "gradmatch")}
    assert {c.retention() for c in memory} == {1.0, 0.25}
    assert {c.scorer for c in memory if c.method == "core_tokenset"} == {"random", "gradlrp"}
    assert {c.cfg.model for c in cells} == {"blip_vqa_tiny", "blip_caption_tiny"}
    assert all(c.cfg.pretrained for c in cells)


def test_vl_results_record_the_metric_definitions_and_refuse_others(tmp_path):
    import json

    from avalanche_cts.evaluation.captions import caption_tokenizer
    from avalanche_cts.evaluation.metrics import VQA_EVALUATION
    from avalanche_cts.harness.demo_vl import demo_cells
    from avalanche_cts.harness.runner import StaleResultError, load_result, run_settings

    cells = demo_cells(build_parser().parse_args(["demo-vl", "--methods", "naive"]))
    vqa, caption = (run_settings(c.cfg, cell_data(c)) for c in cells)
    assert vqa["metrics"] == {"vqa": VQA_EVALUATION}
    assert caption_tokenizer() in caption["metrics"]["captions"]
    old = dict(vqa, metrics={})  # a result made before the metrics were recorded
    stored = dict(_result("vqa", "naive", False, {}), settings=old)
    (tmp_path / "result.json").write_text(json.dumps(stored))
    with pytest.raises(StaleResultError, match="metrics.vqa"):
        load_result(tmp_path / "result.json", vqa)


def _result(kind, label_method, soft, metrics):
    from dataclasses import asdict

    from avalanche_cts.harness.config import RunConfig

    matrix = [[0.5, 0.1], [0.3, 0.6]]
    summaries = {"VQA_ExactMatch" if kind == "vqa" else "BLEU4": dict(final_acc=0.45)}
    if soft:
        summaries["VQA_SoftAcc" if kind == "vqa" else "ROUGE_L"] = dict(final_acc=0.7)
    return dict(kind=kind, config=asdict(RunConfig(method=label_method)), acc_matrix=matrix,
                metric_matrices={"BLEU4": matrix, "ROUGE_L": matrix}, metric_summaries=summaries,
                settings=dict(metrics=metrics), memory_bytes=0, memory_records=0, wall_time_s=1.0,
                final_acc=0.45, avg_inc_acc=0.5, forgetting=0.2)


def test_vl_report_says_one_answer_per_question_or_shows_soft_accuracy(tmp_path):
    from avalanche_cts.harness.demo_vl import write_report

    one = write_report([_result("vqa", "naive", False, {"vqa": "official"})], tmp_path)
    assert "one answer per question" in one and "soft acc" not in one.splitlines()[1]
    ten = write_report([_result("vqa", "naive", True, {"vqa": "official"})], tmp_path)
    assert "soft acc" in ten.splitlines()[1] and "one answer per question" not in ten
    assert "70.0" in ten.splitlines()[3]
    cap = write_report([_result("caption", "naive", True, {"captions": "after PTB X"})], tmp_path)
    assert "ROUGE-L" in cap.splitlines()[1] and "metrics: after PTB X" in cap
