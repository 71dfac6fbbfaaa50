"""The same headline rows on two backbones, paired per seed: what the partial-input backbone
changes (issue 26). Reads the stored runs of ``accuracy_vs_bytes.py`` for the shipped backbone
(``results/accuracy_vs_bytes/cluttered_fmnist``) and for ``cluttered_fmnist_partial``, each
row with the inference chosen on that backbone's validation split, and writes
``results/accuracy_vs_bytes/backbones_paired.md``::

    python experiments/compare_backbones.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from avalanche_cts.harness.report import paired_difference

HERE = Path(__file__).resolve().parent / "results" / "accuracy_vs_bytes"
ROWS = {  # label: (run folder pattern on the shipped backbone, on the partial-input backbone)
    "1% core tokenset": ("core_tokenset-r0.01-s*-inf0.215", "core_tokenset-r0.01-s?"),
    "5% coreset (ours, t = 1)": ("coreset__ours__t___1_-r0.05-s?",
                                 "coreset__ours__t___1_-r0.05-s?-inf0.368"),
}


def final_accuracies(folder: Path, pattern: str) -> Dict[int, float]:
    """``{seed: final accuracy}`` of the runs in ``folder/runs`` matching ``pattern``."""
    out = {}
    for path in sorted((folder / "runs").glob(f"{pattern}/result.json")):
        result = json.loads(path.read_text())
        out[result["config"]["seed"]] = result["final_acc"]
    return out


def main() -> None:
    lines = ["# Partial-input backbone minus shipped backbone, paired per seed (test split)", "",
             "| row | mean ± std (points) | 95% interval | ahead | seeds |", "|---|---|---|---|---|"]
    for label, (old, new) in ROWS.items():
        d = paired_difference(final_accuracies(HERE / "cluttered_fmnist_partial", new),
                              final_accuracies(HERE / "cluttered_fmnist", old))
        lines.append(f"| {label} | {d['mean']:+.1f} ± {d['std']:.1f} | [{d['low']:+.1f}, "
                     f"{d['high']:+.1f}] | {d['better']}/{len(d['seeds'])} | {d['seeds']} |")
    text = "\n".join(lines) + "\n"
    (HERE / "backbones_paired.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
