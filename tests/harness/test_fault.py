"""A run killed with SIGKILL mid-way resumes to the result of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_interrupted

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, torch
    torch.set_num_threads(1)
    from avalanche_cts.benchmarks import synthetic_benchmark
    from avalanche_cts.harness import RunConfig, run

    method, out, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
    bm = synthetic_benchmark(3, n_classes=6, train_per_class=24, test_per_class=6,
                             image_size=8, channels=1)
    cfg = RunConfig(method=method, budget=0.2, model="vit_digits_micro", epochs=2,
                    batch_size=16, lr=0.01, seed=1, replay_mode="sparse", out_dir=out)

    def log(line):
        if kill and "exp 2/3" in line:  # state.pt of two experiences is on disk
            os.kill(os.getpid(), signal.SIGKILL)

    res = run(cfg, bm, log=log)
    print(json.dumps(dict(acc=res["acc_matrix"], mem=res["memory_bytes"],
                          records=res["memory_records"])))
""")


def _run(tmp: Path, method: str, out: Path, kill: bool) -> subprocess.CompletedProcess:
    script = tmp / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(script), method, str(out),
                           "kill" if kill else "run"], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.parametrize("method", ["core_tokenset", "replay_herding"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, method):
    whole = _run(tmp_path, method, tmp_path / "whole", kill=False)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = _run(tmp_path, method, tmp_path / "cut", kill=True)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "cut" / "state.pt").is_file()
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = _run(tmp_path, method, tmp_path / "cut", kill=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (whole, resumed))
    assert a == b  # same accuracy matrix, memory bytes and records
    assert a["records"] > 0


@pytest.mark.parametrize("method, options", [("inflora", {"rank": 2}),
                                             ("coda_prompt", {"pool_size": 6, "prompt_length": 2})])
def test_rehearsal_free_baselines_resume_identically(tmp_path, method, options):
    from dataclasses import replace

    import torch

    from avalanche_cts.benchmarks import synthetic_benchmark
    from avalanche_cts.harness import RunConfig, run

    torch.set_num_threads(1)
    bm = synthetic_benchmark(3, n_classes=6, train_per_class=24, test_per_class=6, image_size=8,
                             channels=1)
    cfg = RunConfig(method=method, model="vit_digits_micro", epochs=2, batch_size=16, lr=0.01,
                    seed=1, options=options)
    whole = run(replace(cfg, out_dir=str(tmp_path / "a")), bm, log=None)
    resumed, lines = run_interrupted(cfg, bm, tmp_path / "b", "exp 2/3")
    assert "resumed" in lines[0] and resumed["acc_matrix"] == whole["acc_matrix"]
