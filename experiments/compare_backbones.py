"""The same headline rows across backbones and recipes, paired per seed (issue 26).

Reads the stored runs of ``accuracy_vs_bytes.py`` in three folders of
``results/accuracy_vs_bytes``: the shipped backbone (``cluttered_fmnist``), the partial-input
backbone with the recipe chosen on the shipped one (``cluttered_fmnist_partial``) and with the
recipe re-chosen on it in two rounds (``cluttered_fmnist_partial_rechosen``: memory weight
1; ``cluttered_fmnist_partial_round2``: and 32 memory rows per step), and both backbones with
round 17's settings (``cluttered_fmnist_partial_round17``, ``cluttered_fmnist_round18``), each
row with the inference chosen on that backbone's validation split. For every comparison, the
difference of final accuracy and of plasticity (points, first minus second) with its Student-t
95% interval, and the seeds where the first is ahead. A side of a comparison is a row's runs
or a :data:`Lead`: one row minus another on the same seeds (the headline's lead of the 1% core
tokenset over the 5% coreset), so two backbones' leads are paired too. Writes
``results/accuracy_vs_bytes/backbones_paired.md``::

    python experiments/compare_backbones.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Tuple, Union

from avalanche_cts.harness.report import paired_difference, plasticity

HERE = Path(__file__).resolve().parent / "results" / "accuracy_vs_bytes"
SHIPPED, PARTIAL, RECHOSEN, ROUND2 = "cluttered_fmnist", "cluttered_fmnist_partial", \
    "cluttered_fmnist_partial_rechosen", "cluttered_fmnist_partial_round2"
PARTIAL_17, SHIPPED_18 = "cluttered_fmnist_partial_round17", "cluttered_fmnist_round18"
Runs = Tuple[str, str]
"""(folder under :data:`HERE`, run folder pattern)."""
Lead = Tuple[Runs, Runs]
"""(first row, second row): per seed, the first's metric minus the second's."""
CTS_1 = {SHIPPED: (SHIPPED, "core_tokenset-r0.01-s*-inf0.215"),
         PARTIAL: (PARTIAL, "core_tokenset-r0.01-s?"),
         RECHOSEN: (RECHOSEN, "core_tokenset-r0.01-s?"),
         ROUND2: (ROUND2, "core_tokenset-r0.01-s?"),
         PARTIAL_17: (PARTIAL_17, "core_tokenset-r0.01-s?"),
         SHIPPED_18: (SHIPPED_18, "core_tokenset-r0.01-s?*")}
CTS_5 = {RECHOSEN: (RECHOSEN, "core_tokenset-r0.05-s?"), ROUND2: (ROUND2, "core_tokenset-r0.05-s?")}
CORESET_5 = {SHIPPED: (SHIPPED, "coreset__ours__t___1_-r0.05-s?"),
             PARTIAL: (PARTIAL, "coreset__ours__t___1_-r0.05-s?-inf0.368"),
             PARTIAL_17: (PARTIAL_17, "coreset__ours__t___1_-r0.05-s?"),
             SHIPPED_18: (SHIPPED_18, "coreset__ours__t___1_-r0.05-s?*")}
COMPARISONS: Dict[str, Tuple[Union[Runs, Lead], Union[Runs, Lead]]] = {
    "1% core tokenset: partial-input minus shipped backbone": (CTS_1[PARTIAL], CTS_1[SHIPPED]),
    "5% coreset: partial-input minus shipped backbone": (CORESET_5[PARTIAL], CORESET_5[SHIPPED]),
    "1% core tokenset, partial-input backbone: recipe re-chosen there minus the shipped "
    "backbone's": (CTS_1[RECHOSEN], CTS_1[PARTIAL]),
    "1% core tokenset: partial-input backbone and its recipe minus shipped backbone":
        (CTS_1[RECHOSEN], CTS_1[SHIPPED]),
    "1% core tokenset, partial-input backbone: round 2 (32 memory rows per step) minus round 1":
        (CTS_1[ROUND2], CTS_1[RECHOSEN]),
    "5% core tokenset, partial-input backbone: round 2 minus round 1":
        (CTS_5[ROUND2], CTS_5[RECHOSEN]),
    "round 17's settings, 1% core tokenset: partial-input minus shipped backbone":
        (CTS_1[PARTIAL_17], CTS_1[SHIPPED_18]),
    "round 17's settings, 5% coreset: partial-input minus shipped backbone":
        (CORESET_5[PARTIAL_17], CORESET_5[SHIPPED_18]),
    "round 17's settings, the lead of the 1% core tokenset over the 5% coreset: partial-input "
    "minus shipped backbone": ((CTS_1[PARTIAL_17], CORESET_5[PARTIAL_17]),
                               (CTS_1[SHIPPED_18], CORESET_5[SHIPPED_18])),
}
METRICS: Dict[str, Callable[[Dict], float]] = {
    "final accuracy": lambda r: r["final_acc"],
    "plasticity": lambda r: plasticity(r["acc_matrix"]),
}


def by_seed(runs: Union[Runs, Lead], metric: Callable[[Dict], float]) -> Dict[int, float]:
    """``{seed: metric(result)}`` of the stored runs matching ``runs``; of a :data:`Lead`, the
    first row's minus the second's on the seeds both have."""
    if isinstance(runs[0], tuple):
        first, second = (by_seed(side, metric) for side in runs)
        return {seed: first[seed] - second[seed] for seed in first if seed in second}
    folder, pattern = runs
    out = {}
    for path in sorted((HERE / folder / "runs").glob(f"{pattern}/result.json")):
        result = json.loads(path.read_text())
        out[result["config"]["seed"]] = metric(result)
    return out


def main() -> None:
    lines = ["# Across backbones and recipes, paired per seed (test split)", "",
             "First row minus second, points; Student-t 95% interval of the mean; seeds where "
             "the first is ahead.", "",
             "| comparison | metric | mean ± std | 95% interval | ahead | seeds |",
             "|---|---|---|---|---|---|"]
    for label, (first, second) in COMPARISONS.items():
        for name, metric in METRICS.items():
            d = paired_difference(by_seed(first, metric), by_seed(second, metric))
            if d is None:
                lines.append(f"| {label} | {name} | fewer than 2 shared seeds | | | |")
                continue
            lines.append(f"| {label} | {name} | {d['mean']:+.1f} ± {d['std']:.1f} | "
                         f"[{d['low']:+.1f}, {d['high']:+.1f}] | {d['better']}/{len(d['seeds'])} "
                         f"| {d['seeds']} |")
    text = "\n".join(lines) + "\n"
    (HERE / "backbones_paired.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
