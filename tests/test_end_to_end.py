"""End to end: core tokenset replay keeps old classes that Naive forgets; the demo job runs."""
import json

import numpy as np
import pytest
import torch

from avalanche_cts.experiment import RunConfig, accuracy_summary, run


def _old_task_accuracy(result):
    last = result["acc_matrix"][-1]
    return sum(last[:-1]) / (len(last) - 1)


def test_core_tokenset_keeps_more_old_task_accuracy_than_naive(digits_benchmark):
    common = dict(model="vit_digits_micro", epochs=15, batch_size=32, lr=3e-3, seed=0)
    naive = run(RunConfig(method="naive", **common), digits_benchmark, log=None)
    ours = run(RunConfig(method="core_tokenset", budget=0.2, token_retention=0.5,
                         replay_mode="sparse", **common), digits_benchmark, log=None)
    assert ours["memory_bytes"] <= 0.2 * 1400 * 64
    assert _old_task_accuracy(naive) < 0.1  # class-incremental Naive forgets old classes
    assert _old_task_accuracy(ours) > _old_task_accuracy(naive) + 0.25
    assert ours["final_acc"] > naive["final_acc"] + 0.2


def test_accuracy_summary_against_hand_computed_matrix():
    m = [[0.9, 0.0, 0.0], [0.5, 0.8, 0.0], [0.4, 0.6, 0.7]]
    s = accuracy_summary(m)
    assert s["final_acc"] == pytest.approx((0.4 + 0.6 + 0.7) / 3)
    assert s["avg_inc_acc"] == pytest.approx((0.9 + (0.5 + 0.8) / 2 + (0.4 + 0.6 + 0.7) / 3) / 3)
    assert s["forgetting"] == pytest.approx(((0.9 - 0.4) + (0.8 - 0.6)) / 2)


def test_fashion_mnist_loader_reads_plain_and_gzipped_idx(fake_fmnist):
    from avalanche_cts.benchmarks.fmnist import load_fashion_mnist, split_fashion_mnist

    xtr, ytr, xte, yte = load_fashion_mnist(fake_fmnist, download=False)
    assert xtr.shape == (400, 28, 28) and xtr.dtype == torch.uint8 and xte.shape == (200, 28, 28)
    assert ytr.tolist() == np.repeat(np.arange(10), 40).tolist()
    bm = split_fashion_mnist(5, seed=1, data_root=fake_fmnist, train_per_class=20)
    assert [len(e.dataset) for e in bm.train_stream] == [40] * 5
    classes = [c for e in bm.train_stream for c in e.classes_in_this_experience]
    assert sorted(classes) == list(range(10))


def test_gzip_cache_is_per_source_file(fake_fmnist, tmp_path):
    from conftest import write_idx

    from avalanche_cts.benchmarks.fmnist import load_fashion_mnist

    other = tmp_path / "other"
    other.mkdir()
    for f in fake_fmnist.iterdir():
        data = f.read_bytes()
        if f.name.startswith("train-images"):  # same file name, different content
            x = np.zeros((400, 28, 28), dtype=np.uint8)
            write_idx(other / "train-images-idx3-ubyte", x, gz=True)
        else:
            (other / f.name).write_bytes(data)
    a = load_fashion_mnist(fake_fmnist, download=False)[0]
    b = load_fashion_mnist(other, download=False)[0]
    assert b.sum() == 0 and a.sum() > 0
    assert torch.equal(load_fashion_mnist(fake_fmnist, download=False)[0], a)


def test_fashion_mnist_missing_files_explain_the_fix(tmp_path, monkeypatch):
    from avalanche_cts.benchmarks import fmnist

    monkeypatch.setattr(fmnist, "DEBIAN_FMNIST_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fmnist.load_fashion_mnist(tmp_path, download=False)


def test_demo_cli_writes_results_and_resumes(fake_fmnist, tmp_path, capsys):
    from avalanche_cts.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--data-root", str(fake_fmnist), "--out", str(out), "--budgets", "0.1",
            "--methods", "naive", "replay", "core_tokenset", "--epochs", "1",
            "--train-per-class", "20", "--test-per-class", "10"]
    assert main(argv) == 0
    for name in ("results.json", "results.csv", "results.txt", "accuracy_vs_memory.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert {r["config"]["method"] for r in results} == {"naive", "replay", "core_tokenset"}
    by = {r["config"]["method"]: r for r in results}
    budget = 0.1 * 200 * 784
    assert 0 < by["core_tokenset"]["memory_bytes"] <= budget
    assert 0 < by["replay"]["memory_bytes"] <= budget
    assert "core_tokenset" in capsys.readouterr().out
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    main(argv)  # finished runs are skipped, not recomputed
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamp
