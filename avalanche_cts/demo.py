"""The main job: core tokensets vs whole-sample replay on Split Fashion-MNIST at equal bytes.

Every (method, budget) run is saved as it finishes (``<out>/runs/<key>.json``); a rerun
skips finished runs, so an interrupted job resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence

from .experiment import RunConfig, default_token_retention, run, save_result
from .report import write_csv

__all__ = ["DEMO_METHODS", "add_arguments", "main", "write_report"]

DEMO_METHODS = ("naive", "replay", "coreset", "core_tokens", "core_tokenset")
_LABELS = {
    "naive": "Naive (no replay)",
    "replay": "Avalanche replay (ClassBalancedBuffer)",
    "coreset": "random coreset (ours, whole samples)",
    "core_tokens": "core tokens (t = r)",
    "core_tokenset": "core tokenset (t = sqrt r)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--out", default="results/demo", help="output folder (default: %(default)s)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.05, 0.10],
                   help="memory budgets as fractions of the bytes of the data seen")
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=DEMO_METHODS)
    p.add_argument("--replay-mode", default="sparse", choices=("zero", "sparse"),
                   help="sparse: kept tokens only (default; measured better from scratch); "
                        "zero: zero-filled images (paper)")
    p.add_argument("--selector", default="random")
    p.add_argument("--scorer", default="random")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-per-class", type=int, default=1000,
                   help="training images per class (6000 = all)")
    p.add_argument("--test-per-class", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="rerun finished runs")


def _configs(args) -> List[RunConfig]:
    base = RunConfig(selector=args.selector, scorer=args.scorer, replay_mode=args.replay_mode,
                     epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     seed=args.seed, device=args.device)
    out = []
    for method in args.methods:
        budgets = [0.0] if method == "naive" else args.budgets
        for r in budgets:
            out.append(replace(base, method=method, budget=r))
    return out


def _row(res: Dict) -> Dict:
    cfg = res["config"]
    t = (default_token_retention(cfg["method"], cfg["budget"])
         if cfg["method"] in ("coreset", "core_tokens", "core_tokenset") else None)
    return dict(method=cfg["method"], budget=cfg["budget"],
                token_retention="" if t is None else round(t, 4),
                records=res["memory_records"], memory_bytes=res["memory_bytes"],
                final_acc=round(res["final_acc"], 4), avg_inc_acc=round(res["avg_inc_acc"], 4),
                forgetting=round(res["forgetting"], 4), wall_time_s=round(res["wall_time_s"], 1))


def write_report(results: Sequence[Dict], out: Path) -> str:
    """Write ``results.json``, ``results.csv`` and ``accuracy_vs_memory.png``; return the table."""
    rows = [_row(r) for r in results]
    (out / "results.json").write_text(json.dumps(list(results), indent=1))
    write_csv(out / "results.csv", rows)
    _plot(rows, out / "accuracy_vs_memory.png")
    head = f"{'method':<15}{'budget':>8}{'t':>8}{'records':>9}{'bytes':>10}{'final acc':>11}" \
           f"{'forgetting':>12}{'time s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<15}{r['budget']:>8.2%}{str(r['token_retention']):>8}"
                     f"{r['records']:>9}{r['memory_bytes']:>10}{r['final_acc']:>11.4f}"
                     f"{r['forgetting']:>12.4f}{r['wall_time_s']:>8.1f}")
    table = "\n".join(lines)
    (out / "results.txt").write_text(table + "\n")
    return table


def _plot(rows: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in DEMO_METHODS:
        pts = sorted((r["budget"], r["final_acc"]) for r in rows if r["method"] == method)
        if not pts:
            continue
        if method == "naive":
            ax.axhline(pts[0][1], color="grey", ls="--", label=_LABELS[method])
        else:
            ax.plot([100 * b for b, _ in pts], [a for _, a in pts], "o-", label=_LABELS[method])
    ax.set_xscale("log")
    budgets = sorted({r["budget"] for r in rows if r["method"] != "naive"})
    ax.set_xticks([100 * b for b in budgets], [f"{100 * b:g}%" for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("memory budget (% of the bytes of the data seen)")
    ax.set_ylabel("final average accuracy")
    ax.set_title("Split Fashion-MNIST, 5 x 2 classes, ViT from scratch")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> List[Dict]:
    """Run the demo grid (resumable) and write the report into ``args.out``."""
    import warnings

    import torch
    from tqdm import tqdm

    warnings.filterwarnings("ignore", message="No loggers specified")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="avalanche")

    from .benchmarks.fmnist import split_fashion_mnist

    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    bm = split_fashion_mnist(5, seed=args.seed, data_root=args.data_root,
                             train_per_class=args.train_per_class,
                             test_per_class=args.test_per_class)
    configs = _configs(args)
    results = []
    start = time.perf_counter()
    bar = tqdm(configs, desc="demo runs", unit="run")
    for cfg in bar:
        path = out / "runs" / f"{cfg.key()}.json"
        bar.set_postfix_str(cfg.key())
        if path.exists() and not args.force:
            results.append(json.loads(path.read_text()))
            continue
        res = run(cfg, bm, log=tqdm.write)
        res["hardware"] = dict(device=args.device, torch_threads=torch.get_num_threads())
        save_result(res, path)
        results.append(res)
    table = write_report(results, out)
    print(table)
    print(f"\nresults in {out}/ (results.json, results.csv, accuracy_vs_memory.png); "
          f"total {time.perf_counter() - start:.0f} s")
    return results
