"""The paper's Table 1 on Split Fashion-MNIST: final accuracy vs % of bytes retained.

Groups of rows (each at every budget, for every seed):

* coresets: whole samples chosen by each selector (random, herding, CRAIG, GradMatch);
* core tokens: every sample, ``t = r`` of its tokens, ranked by each scorer;
* core tokensets: ``√r`` of the samples x ``√r`` of their tokens, each selector x the best
  scorers (default AtMan, GradLRP, and random tokens as the reference);
* joint: the single-stage ``joint_grad`` selector (samples and tokens from one gradient pass);
* naive fine-tuning (no memory) as the floor.

Each run goes through :func:`avalanche_cts.experiment.run` and is saved as
``<out>/runs/<key>.json`` when it finishes; a rerun skips finished cells (resumable).
The table (``table1.md``), per-run rows (``table1.csv``) and the plot (``table1.png``) are
rewritten from all finished runs at the end (``--report-only`` to only do that).

Default settings target a CPU and run the whole table (333 runs) in under an hour on two
cores (``--jobs``: one process per core, one thread each): ``vit_fmnist_tiny`` starting
from the pretrained backbone of :mod:`avalanche_cts.pretrain` (pretrained once, about three
CPU-minutes, then cached; ``--from-scratch`` for a random initialisation), 300 training and
200 test images per class, 2 epochs per experience, batch 64, sparse replay, budgets
1/5/10/20/50%, every scorer in the core-tokens rows, every selector x (AtMan, GradLRP, random) in
the core-tokenset rows, 3 seeds. Larger settings for a GPU::

    python benchmarks/table1.py --device cuda --train-per-class 5500 --test-per-class 1000 \
        --epochs 5 --out benchmarks/results/table1_gpu
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from avalanche_cts.benchmarks.fmnist import split_fashion_mnist
from avalanche_cts.experiment import RunConfig, run, save_result
from avalanche_cts.harness.report import write_csv

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = ("coreset", "core_tokens", "core_tokenset", "joint", "naive")


@dataclass(frozen=True)
class Cell:
    """One run: its row of the table and its configuration."""

    group: str
    label: str
    cfg: RunConfig

    @property
    def key(self) -> str:
        """File name of the run (``RunConfig.key`` omits a coreset's selector)."""
        c = self.cfg
        if c.method == "naive":
            return f"naive_s{c.seed}"
        return f"{c.method}_{c.selector}_{c.scorer}_r{c.budget:g}_s{c.seed}"


def make_cells(args) -> List[Cell]:
    base = RunConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     device=args.device, replay_mode=args.replay_mode)
    rows: List[Tuple[str, str, Dict]] = []
    if "naive" in args.groups:
        rows.append(("naive", "naive (no memory)", dict(method="naive")))
    for sel in args.selectors if "coreset" in args.groups else ():
        rows.append(("coreset", f"coreset {sel}", dict(method="coreset", selector=sel)))
    for sc in args.scorers if "core_tokens" in args.groups else ():
        rows.append(("core_tokens", f"core tokens {sc}", dict(method="core_tokens", scorer=sc)))
    for sel in args.tokenset_selectors if "core_tokenset" in args.groups else ():
        for sc in args.best_scorers:
            rows.append(("core_tokenset", f"core tokenset {sel}+{sc}",
                         dict(method="core_tokenset", selector=sel, scorer=sc)))
    if "joint" in args.groups:
        rows.append(("joint", "joint_grad (single stage)",
                     dict(method="core_tokenset", selector="joint_grad", scorer="random")))
    cells = []
    for seed in args.seeds:
        for group, label, kw in rows:
            for r in [0.0] if group == "naive" else args.budgets:
                cells.append(Cell(group, label, replace(base, seed=seed, budget=r, **kw)))
    return cells


def settings(args) -> Dict:
    """What makes results comparable: a results folder holds one setting."""
    keys = ("model", "pretrained", "train_per_class", "test_per_class", "epochs", "batch_size",
            "lr", "replay_mode", "experiences")
    return {k: getattr(args, k) for k in keys}


def check_settings(args, out: Path) -> None:
    path = out / "settings.json"
    mine = settings(args)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != mine:
            raise SystemExit(f"{out} holds results of other settings {saved}; use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mine, indent=1))


_BENCHES: Dict[int, object] = {}


def run_cell(args, cell: Cell, out: Path, data_root) -> Dict:
    """Run one cell and save its JSON (in a worker process when ``--jobs`` > 1)."""
    from avalanche_cts.pretrain import load_pretrained

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = cell.cfg
    if cfg.seed not in _BENCHES:
        _BENCHES[cfg.seed] = split_fashion_mnist(
            args.experiences, seed=cfg.seed, data_root=data_root,
            train_per_class=args.train_per_class, test_per_class=args.test_per_class)
    bench = _BENCHES[cfg.seed]
    model = (load_pretrained(cfg.model, num_classes=bench.n_classes, seed=cfg.seed)
             if args.pretrained else None)
    res = run(cfg, bench, log=None, model=model)
    res.update(group=cell.group, label=cell.label, settings=settings(args))
    save_result(res, out / "runs" / f"{cell.key}.json")
    return res


def run_cells(args, cells: List[Cell], out: Path) -> None:
    """Run the unfinished cells, ``args.jobs`` at a time (one process each)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    from avalanche_cts.pretrain import pretrain_backbone, stream_data_root

    data_root = args.data_root
    if args.pretrained:  # once, before workers start, so they only read the cache
        data_root = stream_data_root(data_root=args.data_root)
        pretrain_backbone(args.model, data_root=args.data_root)
    todo = [c for c in cells if not (out / "runs" / f"{c.key}.json").exists()]
    todo.sort(key=lambda c: c.cfg.scorer != "atman")  # slowest first: better load balance
    print(f"{len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run "
          f"in {args.jobs} process(es)", flush=True)
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_cell, args, c, out, data_root): c for c in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            cell, res = futures[fut], fut.result()
            done = time.perf_counter() - start
            eta = done / i * (len(todo) - i)
            print(f"[{i}/{len(todo)}] {cell.key:<45} final acc {res['final_acc']:.3f}  "
                  f"{res['wall_time_s']:6.1f} s  (elapsed {done / 60:.1f} min, "
                  f"eta {eta / 60:.1f} min)", flush=True)


def load_results(cells: List[Cell], out: Path) -> List[Dict]:
    results = []
    for cell in cells:
        path = out / "runs" / f"{cell.key}.json"
        if path.exists():
            results.append(dict(json.loads(path.read_text()), group=cell.group, label=cell.label))
    return results


def summarise(results: List[Dict]) -> Dict[Tuple[str, str], Dict[float, List[float]]]:
    """``(group, label) -> budget -> final accuracies over seeds``, in cell order."""
    table: Dict[Tuple[str, str], Dict[float, List[float]]] = {}
    for r in results:
        row = table.setdefault((r["group"], r["label"]), {})
        row.setdefault(r["config"]["budget"], []).append(r["final_acc"])
    return table


def mean_std(v: List[float]) -> Tuple[float, float]:
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0


def write_table(table, budgets: List[float], args, out: Path) -> str:
    head = ["method"] + [f"{100 * b:g}%" for b in budgets]
    lines = [f"# Table 1 on Split Fashion-MNIST ({args.experiences} experiences): "
             f"final average accuracy",
             "", f"mean ± std over seeds (n per cell in brackets when incomplete); settings: "
             f"{json.dumps(settings(args))}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seeds = len(args.seeds)
    for (group, label), cols in table.items():
        cells = []
        for b in [0.0] * len(budgets) if group == "naive" else budgets:
            v = cols.get(b)
            if not v:
                cells.append("–")
                continue
            m, s = mean_std(v)
            partial = f" [{len(v)}]" if len(v) < seeds else ""
            cells.append(f"{100 * m:.1f} ± {100 * s:.1f}{partial}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    best = best_at(table, min(budgets), ("core_tokenset", "joint"))
    if best:
        lines += ["", f"Best core tokenset at {100 * min(budgets):g}%: {best[0]} "
                      f"({100 * best[1]:.1f})."]
        for b in budgets[1:3]:
            cs = best_at(table, b, ("coreset",))
            if cs:
                lines.append(f"Best coreset at {100 * b:g}%: {cs[0]} ({100 * cs[1]:.1f}).")
    text = "\n".join(lines) + "\n"
    (out / "table1.md").write_text(text)
    return text


def best_at(table, budget: float, groups: Tuple[str, ...]):
    scored = [(label, statistics.fmean(cols[budget])) for (g, label), cols in table.items()
              if g in groups and cols.get(budget)]
    return max(scored, key=lambda x: x[1]) if scored else None


def write_runs_csv(results: List[Dict], out: Path) -> None:
    fields = ["group", "label", "budget", "seed", "final_acc", "avg_inc_acc", "forgetting",
              "memory_bytes", "memory_records", "memory_tokens", "wall_time_s"]
    write_csv(out / "table1.csv", [dict({k: r.get(k) for k in fields}, budget=r["config"]["budget"],
                                        seed=r["config"]["seed"]) for r in results], fields)


def plot(table, budgets: List[float], out: Path) -> None:
    """Three panels (coresets, core tokens, core tokensets + joint), mean ± std over seeds;
    the best coreset per budget is drawn dotted in the token panels for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    panels = (("coreset", "coresets"), ("core_tokens", "core tokens"),
              ("core_tokenset", "core tokensets + joint"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    naive = [statistics.fmean(c[0.0]) for (g, _), c in table.items() if g == "naive" and c.get(0.0)]
    best = [(b, best_at(table, b, ("coreset",))) for b in budgets]
    best = [(100 * b, 100 * x[1]) for b, x in best if x]
    for ax, (group, title) in zip(axes, panels):
        for (g, label), cols in table.items():
            if g != group and not (group == "core_tokenset" and g == "joint"):
                continue
            xs = sorted(cols)
            stats = [mean_std(cols[b]) for b in xs]
            ax.errorbar([100 * b for b in xs], [100 * m for m, _ in stats],
                        yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                        lw=2.5 if g == "joint" else 1.2, label=label)
        if group != "coreset" and best:
            ax.plot(*zip(*best), "k:", label="best coreset")
        if naive:
            ax.axhline(100 * naive[0], color="grey", ls="--", label="naive")
        ax.set_xscale("log")
        ax.set_xticks([100 * b for b in budgets])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title)
        ax.set_xlabel("% of bytes retained")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("final average accuracy (%)")
    fig.tight_layout()
    fig.savefig(out / "table1.png", dpi=120)
    plt.close(fig)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS / "table1")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2, 0.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    p.add_argument("--selectors", nargs="+", default=["random", "herding", "craig", "gradmatch"])
    p.add_argument("--scorers", nargs="+",
                   default=["random", "rollout", "gradcam", "gradlrp", "atman"],
                   help="scorers of the core-tokens rows")
    p.add_argument("--tokenset-selectors", nargs="+",
                   default=["random", "herding", "craig", "gradmatch"],
                   help="selectors paired with the best scorers in the core-tokenset rows")
    p.add_argument("--best-scorers", nargs="+", default=["atman", "gradlrp", "random"],
                   help="scorers paired with every selector in the core-tokenset rows")
    p.add_argument("--model", default="vit_fmnist_tiny")
    p.add_argument("--from-scratch", dest="pretrained", action="store_false",
                   help="start from a random initialisation instead of the pretrained "
                        "backbone of avalanche_cts.pretrain")
    p.add_argument("--experiences", type=int, default=5)
    p.add_argument("--train-per-class", type=int, default=300)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--replay-mode", default="sparse", choices=("zero", "sparse"),
                   help="sparse: kept tokens only (the demo's default); zero: paper zero-fill")
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--jobs", type=int, default=None,
                   help="cells run in parallel, one process each (default: CPU: one per core, "
                        "with one thread each; CUDA: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: 1 when --jobs > 1, else torch's)")
    p.add_argument("--report-only", action="store_true", help="only rebuild table and plot")
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 1 if args.device.startswith("cuda") else max(1, os.cpu_count() or 1)
    if args.threads is None and args.jobs > 1:
        args.threads = 1
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    check_settings(args, out)
    cells = make_cells(args)
    if not args.report_only:
        run_cells(args, cells, out)
    results = load_results(cells, out)
    if not results:
        print("no finished runs yet")
        return
    table = summarise(results)
    print(write_table(table, args.budgets, args, out))
    write_runs_csv(results, out)
    plot(table, args.budgets, out)
    print(f"saved {out / 'table1.md'}, {out / 'table1.csv'}, {out / 'table1.png'}")


if __name__ == "__main__":
    main()
