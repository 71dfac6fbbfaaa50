"""The step-split and GPU-throughput benchmarks in their small CPU modes: they run and write
every field their README tables read."""
import json
import os
import subprocess
import sys
from pathlib import Path

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
        assert c["steps_timed"] >= 1 and c["step"] > 0 and c["model"] > 0, name
        assert 0 <= c["plugin_share"] < 1, name
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
