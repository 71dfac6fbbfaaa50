"""Figures and tables of run results (the dicts :func:`avalanche_cts.harness.runner.run` returns).

* :func:`plot_run`: one run's accuracy matrix (heat map) and its accuracy on the seen
  experiences after each one.
* :func:`write_csv`: rows (dicts) as a CSV file.
* :func:`read_result`: a ``result.json``, checked to be one written by a run.
* :func:`write_summary`: results of a grid (by cell) as ``summary.csv`` (one row per run),
  ``summary.md`` (mean ± std over seeds) and ``summary.png`` (final accuracy against the
  memory budget, one line per method/selector/scorer, one panel per task count);
  :func:`stored_results` reads every ``<out>/<cell>/result.json`` under a folder.
* :func:`aggregate` (mean and std over seeds), :func:`format_table`, :func:`format_matrix`,
  :func:`plot_accuracy_vs_memory` (error bars, references, y from 0) and
  :func:`plot_matrices` (heat maps): what the demo and the benchmark scripts report.
* :func:`plot_metric_over_tasks`: metrics on the tasks seen so far after each task, one panel
  per metric (the paper's BLEU-4/ROUGE-L over tasks).
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .._files import atomic_write, write_text
from . import METHODS
from .facts import MethodFacts

__all__ = [
    "aggregate",
    "format_matrix",
    "format_table",
    "mean_std",
    "paired_difference",
    "method_facts",
    "plot_accuracy_vs_memory",
    "plot_matrices",
    "plot_metric_over_tasks",
    "plasticity",
    "plot_run",
    "read_result",
    "save_figure",
    "stored_results",
    "summary_rows",
    "write_csv",
    "write_summary",
]


def write_csv(path: Path, rows: Sequence[Dict], fieldnames: Optional[Sequence[str]] = None) -> None:
    """Write ``rows`` to ``path`` with a header (default columns: the first row's keys)."""
    if not rows and fieldnames is None:
        raise ValueError(f"nothing to write to {path}: no rows and no fieldnames")

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fieldnames or rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically (format from the file name's suffix) and close it."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix[1:] or "png"))
    _pyplot().close(fig)


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
    save_figure(fig, path, 120)


def method_facts(method: str) -> MethodFacts:
    """The registered facts of ``method`` (a method no longer registered: no memory)."""
    return METHODS.facts(method) if method in METHODS else MethodFacts()


def with_inference(label: str, cfg: Dict) -> str:
    """``label`` of a run whose config mapping is ``cfg``, with its inference when not whole:
    ``"core_tokenset @top0.215 rollout mask"`` (results stored before the setting existed
    were evaluated on whole images)."""
    keep = cfg.get("inference", "whole")
    if keep == "whole":
        return label
    return f"{label} @top{keep:g} {cfg['inference_scorer']} {cfg['inference_mode']}"


def run_label(cfg: Dict, text: str) -> str:
    """``text`` (a method's report label or title) of a run whose config mapping is ``cfg``,
    after the PEFT strategy a memory method runs on (``options["base"]``, by its title:
    ``"CODA-Prompt + core tokenset"``) and with its inference when not whole."""
    base = cfg.get("options", {}).get("base")
    if base is not None:
        text = f"{method_facts(base).title or base} + {text}"
    return with_inference(text, cfg)


def _label(cfg: Dict) -> str:
    return run_label(cfg, method_facts(cfg["method"]).report_label(cfg))


def _uses_memory(cfg: Dict, result: Dict) -> bool:
    return result["memory_bytes"] > 0 or method_facts(cfg["method"]).uses_memory


_RESULT_KEYS = {"config": dict, "settings": dict, "acc_matrix": list, "final_acc": float,
                "avg_inc_acc": float, "forgetting": float, "memory_bytes": int,
                "wall_time_s": float}
_CONFIG_KEYS = ("method", "selector", "scorer", "budget", "token_retention", "seed")


def read_result(path: Path) -> Dict:
    """The result a run wrote at ``path``; ``ValueError`` naming the file when it is not
    JSON or not a run's result (hand-edited, or written by something else)."""
    path = Path(path)
    remedy = "delete it (or move it out of the results folder) to rerun that run"
    try:
        result = json.loads(path.read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a text file ({e}): {remedy}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): {remedy}") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path} holds a JSON {type(result).__name__}, not a run's result: "
                         f"{remedy}")
    wrong = [k for k, t in _RESULT_KEYS.items() if not isinstance(result.get(k), t)
             and not (t is float and isinstance(result.get(k), int))]
    cfg = result.get("config")
    if isinstance(cfg, dict):
        wrong += [f"config.{k}" for k in _CONFIG_KEYS if k not in cfg]
    if wrong or not result["acc_matrix"]:
        raise ValueError(f"{path} is not a result written by avalanche-cts (missing or "
                         f"malformed: {', '.join(wrong) or 'acc_matrix'}): {remedy}")
    return result


def stored_results(out: Path) -> Dict[str, Dict]:
    """Every ``<cell>/result.json`` under ``out`` by cell folder name (:func:`read_result`)."""
    return {f.parent.name: read_result(f) for f in sorted(Path(out).glob("*/result.json"))}


def summary_rows(results: Dict[str, Dict]) -> List[Dict]:
    """One row per run of ``results`` (cell name -> result), sorted by cell; ``budget`` is
    None for methods without a memory (naive, cumulative, PEFT baselines)."""
    rows = []
    for cell, r in sorted(results.items()):
        cfg, info = r["config"], r.get("benchmark") or {}
        rows.append(
            dict(
                cell=cell,
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


def _pct(values: List[float]) -> str:
    """``"mean ± std"`` in % (sample std over seeds), or the value of a single run."""
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    m, s = mean_std(values)
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def write_summary(out: Path, results: Dict[str, Dict]) -> str:
    """Write ``summary.{csv,md,png}`` under ``out`` from ``results`` (cell name -> result);
    return the table."""
    out = Path(out)
    rows = summary_rows(results)
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
        accs = [_pct([r[k] for r in rs]) for k in ("final_acc", "avg_inc_acc", "forgetting")]
        mb = statistics.mean(r["memory_bytes"] for r in rs) / 1e6
        shown = "-" if budget is None else f"{budget:g}"
        cells = [bm, tasks, label, shown, *accs, f"{mb:.2f}", len(rs)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    table = "\n".join(lines)
    write_text(out / "summary.md", table + "\n")
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
    save_figure(fig, path, 120)


# ------------------------------------------------------------ seeds aggregated
def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_difference(mine: Dict[int, float], other: Dict[int, float], level: float = 0.95
                      ) -> Optional[Dict]:
    """Per-seed differences ``mine[s] - other[s]`` (points, ×100) on the seeds both hold, with
    their mean, sample std, Student-t confidence interval of the mean at ``level`` and the
    number of seeds ``mine`` is ahead; ``None`` with fewer than 2 shared seeds.

    :return: ``{"seeds", "differences", "mean", "std", "low", "high", "better"}``.
    """
    from scipy.stats import t as student_t

    seeds = sorted(set(mine) & set(other))
    if len(seeds) < 2:
        return None
    d = [100 * (mine[s] - other[s]) for s in seeds]
    mean, sd = mean_std(d)
    half = float(student_t.ppf(0.5 + level / 2, len(d) - 1)) * sd / len(d) ** 0.5
    return dict(seeds=seeds, differences=d, mean=mean, std=sd, low=mean - half,
                high=mean + half, better=sum(x > 0 for x in d))


_METRICS = ("final_acc", "avg_inc_acc", "forgetting", "plasticity")


def plasticity(matrix: Sequence[Sequence[float]]) -> float:
    """Mean accuracy on each task right after training on it, the first task excluded:
    ``mean_{i>0} acc[i][i]`` (a model that stops learning new tasks scores ~0 here while
    its final accuracy can look like a model's that learns every task weakly). ``nan`` for
    a single task."""
    diag = [matrix[i][i] for i in range(1, len(matrix))]
    return sum(diag) / len(diag) if diag else float("nan")


def aggregate(results: Sequence[Dict], label: Callable[[Dict], str]) -> List[Dict]:
    """Rows of mean and std over seeds, one per ``(label(result), budget)`` in first-seen
    order: ``label, budget, n, <metric>_mean, <metric>_std`` for final accuracy, average
    incremental accuracy and forgetting, mean memory bytes and records, the token retention
    and the mean accuracy matrix. ``budget`` is None for methods without a memory."""
    groups: Dict[Tuple[str, Optional[float]], List[Dict]] = {}
    for r in results:
        cfg = r["config"]
        budget = cfg["budget"] if _uses_memory(cfg, r) else None
        groups.setdefault((label(r), budget), []).append(r)
    rows = []
    for (lab, budget), rs in groups.items():
        row = dict(label=lab, budget=budget, n=len(rs),
                   retention=_retention(rs[0]["config"]),
                   memory_bytes=statistics.fmean(r["memory_bytes"] for r in rs),
                   memory_records=statistics.fmean(r["memory_records"] for r in rs),
                   wall_time_s=statistics.fmean(r["wall_time_s"] for r in rs))
        for m in _METRICS:
            values = [plasticity(r["acc_matrix"]) if m == "plasticity" else r[m] for r in rs]
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(values)
        mats = [r["acc_matrix"] for r in rs]
        row["acc_matrix"] = [[statistics.fmean(m[i][j] for m in mats) for j in range(len(mats[0][i]))]
                             for i in range(len(mats[0]))]
        rows.append(row)
    return rows


def _retention(cfg: Dict) -> Optional[float]:
    from .config import RunConfig

    return RunConfig.from_dict({k: v for k, v in cfg.items()}).retention()


def format_table(rows: Sequence[Dict]) -> str:
    """A plain-text table of :func:`aggregate` rows (accuracies in %, mean ± std)."""
    head = (f"{'method':<22}{'budget':>7}{'t':>7}{'records':>9}{'bytes':>10}"
            f"{'final acc':>15}{'avg inc acc':>15}{'forgetting':>15}{'plasticity':>15}{'runs':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        budget = "" if r["budget"] is None else f"{100 * r['budget']:g}%"
        t = "" if r["retention"] is None else f"{r['retention']:.3g}"
        cells = [f"{100 * r[m + '_mean']:6.1f} ± {100 * r[m + '_std']:4.1f}" for m in _METRICS]
        lines.append(f"{r['label']:<22}{budget:>7}{t:>7}{r['memory_records']:>9.0f}"
                     f"{r['memory_bytes']:>10.0f}{cells[0]:>15}{cells[1]:>15}{cells[2]:>15}"
                     f"{cells[3]:>15}{r['n']:>5}")
    return "\n".join(lines)


def format_matrix(row: Dict) -> str:
    """The mean accuracy matrix of an :func:`aggregate` row as text (rows: after training
    experience i; columns: test experience j; %)."""
    m = row["acc_matrix"]
    budget = "" if row["budget"] is None else f" at {100 * row['budget']:g}%"
    lines = [f"{row['label']}{budget} (mean of {row['n']} seeds, %):",
             "          " + "".join(f"{'exp ' + str(j + 1):>8}" for j in range(len(m[0])))]
    for i, r in enumerate(m):
        lines.append(f"after {i + 1:<4}" + "".join(f"{100 * v:>8.1f}" for v in r))
    return "\n".join(lines)


def plot_accuracy_vs_memory(rows: Sequence[Dict], path: Path, title: str,
                            metric: str = "final_acc") -> None:
    """Accuracy (mean ± std over seeds, error bars) against the memory budget for every
    label with a memory; labels without one (naive, cumulative, ...) are horizontal lines
    with a band of ± std. The y-axis starts at 0; series are shifted sideways and drawn
    with distinct markers, so equal values stay visible."""
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    series = [lab for lab in dict.fromkeys(r["label"] for r in rows)
              if any(r["budget"] is not None for r in rows if r["label"] == lab)]
    markers = "osD^vP*Xh<>"
    for i, lab in enumerate(series):
        pts = sorted((r["budget"], r[f"{metric}_mean"], r[f"{metric}_std"]) for r in rows
                     if r["label"] == lab and r["budget"] is not None)
        shift = 1.0 + 0.035 * (i - (len(series) - 1) / 2)
        ax.errorbar([100 * b * shift for b, _, _ in pts], [100 * m for _, m, _ in pts],
                    yerr=[100 * s for _, _, s in pts], marker=markers[i % len(markers)],
                    capsize=3, lw=1.4, ms=5, color=f"C{i}", label=lab)
    refs = [r for r in rows if r["budget"] is None]
    for k, r in enumerate(refs):
        m, s = 100 * r[f"{metric}_mean"], 100 * r[f"{metric}_std"]
        color = ("0.35", "0.6", "0.8")[k % 3]
        ax.axhline(m, color=color, ls=("--", ":", "-.")[k % 3], lw=1.2,
                   label=f"{r['label']} ({m:.1f})")
        ax.axhspan(m - s, m + s, color=color, alpha=0.15, lw=0)
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None})
    if budgets:
        ax.set_xscale("log")
        ax.set_xticks([100 * b for b in budgets])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 100)
    ax.set_xlabel("memory budget (% of the bytes of the data seen)")
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%), mean ± std")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    save_figure(fig, path, 120)


def plot_matrices(rows: Sequence[Dict], path: Path, title: str) -> None:
    """Heat maps of the mean accuracy matrices of :func:`aggregate` rows (one panel each)."""
    plt = _pyplot()
    n = len(rows)
    cols = min(4, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.1 * cols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows):
        m = r["acc_matrix"]
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(m)):
            for j in range(len(m[i])):
                ax.text(j, i, f"{100 * m[i][j]:.0f}", ha="center", va="center", fontsize=6,
                        color="k" if m[i][j] > 0.6 else "w")
        budget = "" if r["budget"] is None else f" {100 * r['budget']:g}%"
        ax.set_title(f"{r['label']}{budget}", fontsize=8)
        ax.set_xticks(range(len(m[0])), [str(j + 1) for j in range(len(m[0]))], fontsize=6)
        ax.set_yticks(range(len(m)), [str(i + 1) for i in range(len(m))], fontsize=6)
        ax.set_xlabel("test experience", fontsize=7)
        ax.set_ylabel("after training", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, 110)


def plot_metric_over_tasks(curves: Dict[str, Dict[str, List[List[float]]]], path: Path,
                           title: str) -> None:
    """One panel per metric: for every label, the metric after each task (mean ± std over the
    runs' curves). ``curves[label][metric]`` lists one curve per run (values in [0, 1])."""
    plt = _pyplot()
    metrics = list(dict.fromkeys(m for per in curves.values() for m in per))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    markers = "osD^vP*Xh<>"
    for ax, metric in zip(axes[0], metrics):
        tasks = 1
        for i, (label, per) in enumerate(curves.items()):
            runs = per.get(metric) or []
            if not runs:
                continue
            tasks = max(tasks, len(runs[0]))
            stats = [mean_std([r[t] for r in runs]) for t in range(len(runs[0]))]
            x = range(1, len(stats) + 1)
            ax.errorbar(list(x), [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats],
                        marker=markers[i % len(markers)], capsize=3, lw=1.4, ms=5, color=f"C{i}",
                        label=label)
        ax.set_xlabel("tasks trained")
        ax.set_ylabel(f"{metric.replace('_', '-')} on the tasks seen (%)")
        ax.set_xticks(list(range(1, tasks + 1)))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, 120)
