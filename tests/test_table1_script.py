"""benchmarks/table1.py: its default grid is the paper's Table 1, and it runs in parallel and resumes."""
import csv
import importlib
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def table1():
    sys.path.insert(0, str(BENCHMARKS))  # spawned workers find the module through sys.path
    try:
        yield importlib.import_module("table1")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_default_grid_is_the_full_table(table1):
    args = table1.parse_args(["--device", "cpu"])
    cells = table1.make_cells(args)
    budgets = [0.01, 0.05, 0.1, 0.2, 0.5]
    assert args.pretrained and args.seeds == [0, 1, 2] and args.budgets == budgets
    assert args.jobs >= 1 and (args.jobs == 1 or args.threads == 1)
    assert len({c.key for c in cells}) == len(cells)
    rows = Counter((c.group, c.cfg.selector, c.cfg.scorer) for c in cells)
    for sel in ("random", "herding", "craig", "gradmatch"):
        assert rows["coreset", sel, "random"] == 15  # 5 budgets x 3 seeds
        for sc in ("atman", "gradlrp", "random"):
            assert rows["core_tokenset", sel, sc] == 15
    for sc in ("random", "rollout", "gradcam", "gradlrp", "atman"):
        assert rows["core_tokens", "random", sc] == 15
    assert rows["joint", "joint_grad", "random"] == 15
    assert rows["naive", "random", "random"] == 3
    assert len(cells) == 4 * 15 + 12 * 15 + 5 * 15 + 15 + 3
    assert sorted({c.cfg.budget for c in cells if c.group != "naive"}) == budgets


def test_grid_runs_in_worker_processes_and_resumes(table1, fake_fmnist, tmp_path, capsys):
    out = tmp_path / "t1"
    argv = ["--from-scratch", "--data-root", str(fake_fmnist), "--train-per-class", "4",
            "--test-per-class", "2", "--epochs", "1", "--budgets", "0.5", "--seeds", "0",
            "--groups", "naive", "coreset", "--selectors", "random", "herding", "--jobs", "2",
            "--device", "cpu", "--out", str(out)]
    table1.main(argv)
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == ["coreset_herding_random_r0.5_s0.json", "coreset_random_random_r0.5_s0.json",
                    "naive_s0.json"]
    for name in runs:
        res = json.loads((out / "runs" / name).read_text())
        assert len(res["acc_matrix"]) == 5 and res["settings"]["epochs"] == 1
        if name.startswith("coreset"):
            assert 0 < res["memory_bytes"] <= 0.5 * 40 * 784 + 1024
    with open(out / "table1.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    table = (out / "table1.md").read_text()
    assert "| coreset herding |" in table and "| naive (no memory) |" in table
    assert (out / "table1.png").stat().st_size > 0

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    capsys.readouterr()
    table1.main(argv)
    assert "3 cells, 3 done, 0 to run" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}

    with pytest.raises(SystemExit, match="other settings"):
        table1.main(argv[:7] + ["--epochs", "2"] + argv[9:])
