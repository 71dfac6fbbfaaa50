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
    across = rows[(0.01, f"{cor} at 5%")]
    assert across["differences"] == pytest.approx([2.0, -6.0, 9.0])
    assert across["better"] == 2
    assert not any(v.endswith("at 2%") for _, v in rows)  # no coreset at 2%: no row
