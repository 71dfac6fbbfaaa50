"""Figures and tables of run results (the dicts :func:`avalanche_cts.experiment.run` returns).

* :func:`plot_run`: one run's accuracy matrix (heat map) and its accuracy on the seen
  experiences after each one.
* :func:`write_csv`: rows (dicts) as a CSV file.
* :func:`write_summary`: every ``<out>/<cell>/result.json`` of a grid as ``summary.csv``
  (one row per run), ``summary.md`` (mean ± std over seeds) and ``summary.png`` (final accuracy
  against the memory budget, one line per method/selector/scorer, one panel per task count).
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["plot_run", "summary_rows", "write_csv", "write_summary"]

_TOKEN_METHODS = ("coreset", "core_tokens", "core_tokenset")


def write_csv(path: Path, rows: Sequence[Dict], fieldnames: Optional[Sequence[str]] = None) -> None:
    """Write ``rows`` to ``path`` with a header (default columns: the first row's keys)."""
    if not rows and fieldnames is None:
        raise ValueError(f"nothing to write to {path}: no rows and no fieldnames")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fieldnames or rows[0]))
        w.writeheader()
        w.writerows(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(result: Dict, path: Path) -> None:
    """Save the accuracy matrix and the seen-experience accuracy curve of one run."""
    plt = _pyplot()
    m = result["acc_matrix"]
    n = len(m)
    seen = [sum(m[i][: i + 1]) / (i + 1) for i in range(n)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    im = ax1.imshow(m, vmin=0, vmax=1, cmap="viridis")
    if n <= 10:
        for i in range(n):
            for j in range(len(m[i])):
                color = "k" if m[i][j] > 0.6 else "w"
                ax1.text(j, i, f"{m[i][j]:.2f}", ha="center", va="center", fontsize=7, color=color)
    ticks = list(range(0, n, max(1, n // 10)))
    for set_ticks, set_labels in (
        (ax1.set_xticks, ax1.set_xticklabels),
        (ax1.set_yticks, ax1.set_yticklabels),
    ):
        set_ticks(ticks)
        set_labels([str(t + 1) for t in ticks])
    ax1.set_xlabel("test experience")
    ax1.set_ylabel("after training experience")
    fig.colorbar(im, ax=ax1, fraction=0.046)
    ax2.plot(range(1, n + 1), seen, marker="o")
    ax2.set_xticks([t + 1 for t in ticks])
    ax2.set_xlabel("experiences trained")
    ax2.set_ylabel("accuracy on seen experiences")
    ax2.set_ylim(0, 1)
    ax2.grid(alpha=0.3)
    fig.suptitle(
        f"{result['key']}: final {result['final_acc']:.3f}, avg inc {result['avg_inc_acc']:.3f}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label(cfg: Dict) -> str:
    if cfg["method"] == "coreset":
        return f"coreset {cfg['selector']}"
    if cfg["method"] in _TOKEN_METHODS:
        return f"{cfg['method']} {cfg['selector']}+{cfg['scorer']}"
    return cfg["method"]


def _uses_memory(cfg: Dict, result: Dict) -> bool:
    return (
        result["memory_bytes"] > 0 or cfg["method"] in _TOKEN_METHODS or "replay" in cfg["method"]
    )


def summary_rows(out: Path) -> List[Dict]:
    """One row per finished run under ``out`` (``<cell>/result.json``), sorted by cell;
    ``budget`` is None for methods without a memory (naive, cumulative, PEFT baselines)."""
    rows = []
    for f in sorted(Path(out).glob("*/result.json")):
        r = json.loads(f.read_text())
        cfg, info = r["config"], r.get("benchmark") or {}
        rows.append(
            dict(
                cell=f.parent.name,
                label=_label(cfg),
                method=cfg["method"],
                selector=cfg["selector"],
                scorer=cfg["scorer"],
                budget=cfg["budget"] if _uses_memory(cfg, r) else None,
                token_retention=cfg["token_retention"],
                benchmark=info.get("name", ""),
                n_experiences=info.get("n_experiences", len(r["acc_matrix"])),
                seed=cfg["seed"],
                final_acc=r["final_acc"],
                avg_inc_acc=r["avg_inc_acc"],
                forgetting=r["forgetting"],
                final_acc_weighted=r.get("final_acc_weighted", ""),
                avg_inc_acc_weighted=r.get("avg_inc_acc_weighted", ""),
                memory_bytes=r["memory_bytes"],
                wall_time_s=round(r["wall_time_s"], 1),
            )
        )
    return rows


def _mean_std(values: List[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.pstdev(values):.2f}"


def write_summary(out: Path) -> str:
    """Write ``summary.{csv,md,png}`` under ``out`` from its finished runs; return the table."""
    out = Path(out)
    rows = summary_rows(out)
    if not rows:
        return "no finished runs"
    write_csv(out / "summary.csv", rows)
    groups: Dict[Tuple, List[Dict]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["n_experiences"], r["label"], r["budget"]), []).append(
            r
        )
    lines = [
        "| benchmark | tasks | method | budget | final acc (%) | avg inc acc (%) | "
        "forgetting (%) | memory (MB) | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (bm, tasks, label, budget), rs in sorted(
        groups.items(), key=lambda kv: (*map(str, kv[0][:3]), kv[0][3] or 0.0)
    ):
        accs = [_mean_std([r[k] for r in rs]) for k in ("final_acc", "avg_inc_acc", "forgetting")]
        mb = statistics.mean(r["memory_bytes"] for r in rs) / 1e6
        shown = "-" if budget is None else f"{budget:g}"
        cells = [bm, tasks, label, shown, *accs, f"{mb:.2f}", len(rs)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    _plot_summary(groups, out / "summary.png")
    return table


def _plot_summary(groups: Dict[Tuple, List[Dict]], path: Path) -> None:
    plt = _pyplot()
    panels = sorted({(bm, tasks) for bm, tasks, _, _ in groups}, key=str)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (bm, tasks) in zip(axes[0], panels):
        labels = sorted({lab for b, t, lab, _ in groups if (b, t) == (bm, tasks)})
        for i, lab in enumerate(labels):
            pts = sorted(
                (budget, statistics.mean(r["final_acc"] for r in rs))
                for (b, t, la, budget), rs in groups.items()
                if (b, t, la) == (bm, tasks, lab)
            )
            if pts[0][0] is None:  # no memory: a reference line
                ax.axhline(pts[0][1], ls="--", color=f"C{i}", label=lab)
            else:
                ax.plot(
                    [p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{i}", label=lab
                )
        budgets = {budget for b, t, _, budget in groups if (b, t) == (bm, tasks)} - {None}
        if len(budgets) > 1 and min(budgets) > 0:
            ax.set_xscale("log")
        ax.set_title(f"{bm}, {tasks} tasks", fontsize=9)
        ax.set_xlabel("memory budget (fraction of the data seen)")
        ax.set_ylabel("final accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
