"""The VL configs and the embedded VL job's cells (no training here: see test_vl_end_to_end)."""
from pathlib import Path

import pytest

from avalanche_cts.harness.cli import build_parser
from avalanche_cts.harness.execute import cell_data
from avalanche_cts.harness.grid import expand_cells, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"


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
