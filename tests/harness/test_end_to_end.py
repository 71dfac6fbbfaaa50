"""End to end: core tokenset replay keeps old classes that Naive forgets; the demo job runs."""
import json

import numpy as np
import pytest
import torch

from avalanche_cts.harness import RunConfig, accuracy_summary, run


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
    bm = split_fashion_mnist(5, seed=1, data_root=fake_fmnist, train_per_class=20,
                             heldout_per_class=0)
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
        fmnist.load_fashion_mnist(None, download=False)
    with pytest.raises(FileNotFoundError, match="not found under data root .*fix the path"):
        fmnist.load_fashion_mnist(tmp_path / "typo")  # never a silent fallback


@pytest.fixture
def tiny_backbones(monkeypatch):
    """The demo's pretrained backbones, made small enough for the fake Fashion-MNIST files."""
    from avalanche_cts.harness.pretrain import PRESET_BACKBONES, PretrainSpec

    for model, bench in (("vit_clutter_tiny", "cluttered_fmnist"), ("vit_fmnist_tiny", "fmnist")):
        monkeypatch.setitem(PRESET_BACKBONES, model, PretrainSpec(
            benchmark=bench, model=model, heldout_per_class=20, val_per_class=2, epochs=1,
            batch_size=32))


def test_demo_reports_seeds_matrices_and_refuses_stale_results(fake_fmnist, tmp_path, capsys,
                                                               tiny_backbones):
    from avalanche_cts.harness.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--data-root", str(fake_fmnist), "--out", str(out), "--budgets", "0.1",
            "--methods", "naive", "cumulative", "replay", "core_tokenset", "--epochs", "1",
            "--train-per-class", "10", "--test-per-class", "5", "--seeds", "0", "1",
            "--jobs", "1"]
    assert main(argv) == 0
    for name in ("results.json", "results.csv", "results.txt", "accuracy_vs_memory.png",
                 "accuracy_matrices.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "results.json").read_text())
    runs = report["runs"]
    assert {r["config"]["method"] for r in runs} == {"naive", "cumulative", "replay",
                                                     "core_tokenset"}
    assert {r["config"]["seed"] for r in runs} == {0, 1} and report["version"]
    assert all(r["settings"]["data"]["train_per_class"] == 10 for r in runs)
    rows = {r["label"]: r for r in report["summary"]}
    assert rows["core tokenset"]["n"] == 2 and "final_acc_std" in rows["core tokenset"]
    budget = 0.1 * 100 * 64 * 64  # 10 classes x 10 scenes of 64 x 64 bytes
    for r in runs:
        if r["config"]["method"] in ("replay", "core_tokenset"):
            assert 0 < r["memory_bytes"] <= budget
    text = capsys.readouterr().out
    assert "after 5" in text and "± " in text  # matrices and mean ± std are printed
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert main(argv) == 0  # finished runs are reused, not recomputed
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == stamp
    changed = [a if a != "1" or argv[i - 1] != "--epochs" else "2" for i, a in enumerate(argv)]
    assert main(changed) == 2  # other settings: refused, naming what differs
    err = capsys.readouterr().err
    assert "epochs: 1 -> 2" in err and "--force" in err and err.count("\n") <= 2
    assert main(changed + ["--force"]) == 0
    rerun = json.loads((out / "results.json").read_text())["runs"]
    assert all(r["config"]["epochs"] == 2 for r in rerun)
