"""The main job: core tokensets against coresets and Avalanche replay at equal bytes.

On an embedded stream (default: Split Fashion-MNIST with the shipped ``vit_fmnist_tiny``,
5 experiences x 2 classes; ``--benchmark cluttered_fmnist`` for the paper-regime stream) it
trains naive fine-tuning and cumulative training (the floor and the ceiling), Avalanche's
replay, a whole-sample coreset and a core tokenset with the default recipe
(:data:`~avalanche_cts.memory.recipe.DEFAULT_RECIPE`, rollout tokens) at the same memory budgets in
bytes, for several seeds, with the training settings chosen on the benchmark's validation
split, and reports what a continual-learning
researcher expects: final and average incremental accuracy and forgetting (mean ± std over
seeds), the accuracy matrix of every method (printed and drawn as heat maps) and accuracy
against memory with error bars. Settings, data and library version are recorded.

Every run is saved when it finishes (``<out>/<run>/result.json``, ``state.pt`` after each
experience): an interrupted job resumes; a run is reused only when every setting that shaped
it matches, otherwise the demo stops and names the differences (``--force`` reruns).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

from ..memory import recipe
from . import METHODS
from ..scorers import SCORERS
from ..selectors import SELECTORS

__all__ = ["DEMO_METHODS", "add_arguments", "add_recipe_arguments", "main", "recipe_settings"]

DEMO_METHODS = ("naive", "cumulative", "replay", "coreset", "core_tokens", "core_tokenset")
_DEFAULT_METHODS = ("naive", "cumulative", "replay", "coreset", "core_tokenset")
_BENCHMARKS = {"cluttered_fmnist": "vit_clutter_tiny", "fmnist_pretrained": "vit_fmnist_tiny"}
TRAINING = {"fmnist_pretrained": dict(lr=3e-4, epochs=4), "cluttered_fmnist": dict(lr=1e-4, epochs=4)}
"""Adam settings per benchmark, chosen on its validation split by the 5% coreset
(``experiments/recipe_ablation.py``, stage 0)."""


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's options, defaults from :data:`~avalanche_cts.memory.recipe.DEFAULT_RECIPE`."""
    d = recipe.DEFAULT_RECIPE
    p.add_argument("--token-choice", default=d.token_choice, choices=recipe.TOKEN_CHOICES,
                   help="how tokens follow the scores")
    p.add_argument("--replay-mode", default=d.replay_mode, choices=recipe.REPLAY_MODES,
                   help="how stored tokens are fed back")
    p.add_argument("--dropout", type=float, default=d.dropout, metavar="KEEP",
                   help="token keep rate on new data (None: the memory's retention; 1: off)")
    p.add_argument("--dropout-schedule", default=d.dropout_schedule,
                   choices=recipe.DROPOUT_SCHEDULES, help="fixed keep rate or drawn per sample")
    p.add_argument("--dropout-fraction", type=float, default=d.dropout_fraction, metavar="F",
                   help="share of each new-data batch with token dropout")
    p.add_argument("--dropout-tokens", default=d.dropout_tokens, choices=recipe.DROPOUT_TOKENS,
                   help="which tokens dropped new data keeps: random, or matched to the memory "
                        "(its scorer and token choice)")
    p.add_argument("--dropout-refresh", default=d.dropout_refresh, choices=recipe.DROPOUT_REFRESH,
                   help="when matched scores are computed")


def recipe_settings(args: argparse.Namespace) -> Dict:
    """The ``RunConfig`` fields of :func:`add_recipe_arguments`."""
    return {k: getattr(args, k) for k in ("token_choice", "replay_mode", "dropout",
                                          "dropout_schedule", "dropout_fraction",
                                          "dropout_tokens", "dropout_refresh")}


def _keep_or_whole(text: str):
    if text == "whole":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'whole' or a keep rate in (0, 1], got {text!r}")


def add_inference_arguments(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """How test images are classified (``RunConfig.inference*``); ``defaults=False`` leaves
    an option that is not given as ``None`` (the config's own setting stays)."""
    given = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--inference", type=_keep_or_whole, default=given("whole"),
                   metavar="whole|KEEP",
                   help="classify test images whole, or each from its top KEEP share of "
                        "tokens under --inference-scorer run on the current model (no label)")
    p.add_argument("--inference-scorer", default=given("rollout"), choices=SCORERS.names(),
                   help="scorer of top-token inference")
    p.add_argument("--inference-mode", default=given("mask"), choices=recipe.REPLAY_MODES,
                   help="how top-token inference feeds the kept tokens")


def inference_settings(args: argparse.Namespace) -> Dict:
    """The ``RunConfig`` fields of :func:`add_inference_arguments` that were given."""
    names = ("inference", "inference_scorer", "inference_mode")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options (shown by ``avalanche-cts demo --help`` with their defaults)."""
    p.add_argument("--benchmark", default="fmnist_pretrained", choices=sorted(_BENCHMARKS),
                   help="embedded stream (its pretrained backbone comes with it)")
    p.add_argument("--methods", nargs="+", default=list(_DEFAULT_METHODS), choices=DEMO_METHODS,
                   metavar="METHOD", help=f"methods, from {', '.join(DEMO_METHODS)}")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.05],
                   metavar="R", help="memory budgets, fractions in (0, 1] of the bytes seen")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="seeds (the table shows mean ± std over them)")
    p.add_argument("--selector", default="random", choices=SELECTORS.names(), help="sample selector")
    p.add_argument("--scorer", default="rollout", choices=SCORERS.names(),
                   help="token scorer (rollout: best on the validation split)")
    add_recipe_arguments(p)
    add_inference_arguments(p)
    p.add_argument("--retention-exponent", type=float,
                   default=recipe.DEFAULT_RECIPE.retention_exponent, metavar="E",
                   help="core tokenset split of a budget r: t = r ** E tokens per sample "
                        "(default: %(default).3g)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per experience (default %(default)s: the benchmark's chosen setting, 4)")
    p.add_argument("--batch-size", type=int, default=64, help="new-data (and memory) batch")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default %(default)s: the benchmark's chosen "
                        "setting, 3e-4 on fmnist_pretrained, 1e-4 on cluttered_fmnist)")
    p.add_argument("--head-lr-scale", type=float, default=None, metavar="K",
                   help="the classifier head's learning rate as a multiple of --lr (default: 1)")
    p.add_argument("--train-per-class", type=int, default=300, help="training images per class")
    p.add_argument("--test-per-class", type=int, default=200, help="test images per class")
    p.add_argument("--from-scratch", dest="pretrained", action="store_false",
                   help="start from a random initialisation instead of the pretrained backbone "
                        "(pretrained: %(default)s)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist)")
    p.add_argument("--out", default="results/demo", metavar="DIR", help="output folder")
    p.add_argument("--jobs", type=int, default=2, metavar="N",
                   help="runs in parallel, one process and one torch thread each")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--force", action="store_true",
                   help="rerun every run, replacing stored results")


def demo_cells(args) -> List:
    """The demo's runs as grid cells (one per method, budget and seed)."""
    from .config import RunConfig
    from .grid import Cell
    from .pretrain import PRESET_BACKBONES

    model = _BENCHMARKS[args.benchmark]
    train = dict(TRAINING[args.benchmark])
    train.update({k: getattr(args, k) for k in ("lr", "epochs", "head_lr_scale")
                  if getattr(args, k) is not None})
    bench = dict(name=args.benchmark, n_experiences=5, train_per_class=args.train_per_class,
                 test_per_class=args.test_per_class)
    if args.pretrained:  # the stream leaves out exactly the backbone's pretraining images
        bench["heldout_per_class"] = PRESET_BACKBONES[model].heldout_per_class
    if args.data_root:
        bench["data_root"] = args.data_root
    cells = []
    for seed in args.seeds:
        for method in args.methods:
            budgets = args.budgets if METHODS.facts(method).uses_memory else [0.0]
            for r in budgets:
                cfg = RunConfig(
                    method=method, budget=r, model=model, pretrained=args.pretrained,
                    selector=args.selector, scorer=args.scorer, **recipe_settings(args),
                    **inference_settings(args), retention_exponent=args.retention_exponent, batch_size=args.batch_size,
                    seed=seed, device=args.device, **train)
                key = f"{method}" + (f"-budget={r:g}" if r else "") + f"-seed={seed}"
                if cfg.inference != "whole":
                    key += (f"-inference={cfg.inference:g}-{cfg.inference_scorer}"
                            f"-{cfg.inference_mode}")
                cells.append(Cell(len(cells), key, cfg, dict(bench, seed=seed), {}))
    return cells


def _label(result: Dict) -> str:
    from .report import run_label

    method = result["config"]["method"]
    return run_label(result["config"], METHODS.facts(method).title or method)


def write_report(results: List[Dict], out: Path, title: str) -> str:
    """Write ``results.json``, ``results.csv``, ``accuracy_vs_memory.png`` and
    ``accuracy_matrices.png``; return the text report (table and matrices)."""
    from .. import __version__
    from .._files import write_text
    from .report import (
        aggregate,
        format_matrix,
        format_table,
        plot_accuracy_vs_memory,
        plot_matrices,
        write_csv,
    )

    rows = aggregate(results, _label)
    write_text(out / "results.json", json.dumps(dict(version=__version__, title=title,
                                                    summary=rows, runs=results), indent=1))
    write_csv(out / "results.csv", [{k: v for k, v in r.items() if k != "acc_matrix"}
                                    for r in rows])
    plot_accuracy_vs_memory(rows, out / "accuracy_vs_memory.png", title)
    plot_matrices(rows, out / "accuracy_matrices.png", title + ": mean accuracy matrices")
    text = format_table(rows) + "\n\n" + "\n\n".join(format_matrix(r) for r in rows)
    write_text(out / "results.txt", title + "\n\n" + text + "\n")
    return text


def run_cells(cells: List, args: argparse.Namespace) -> List[Dict]:
    """Run a job's cells into ``args.out`` (``args.jobs`` processes, ``args.force``),
    printing each finished run; returns the results in cell order."""
    from .execute import execute_cells

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(len(c.key) for c in cells) + 2

    def progress(i, n, cell, res, seconds):
        print(f"[{i}/{n}] {cell.key:<{width}} final {res.get('metric', 'accuracy')} "
              f"{res['final_acc']:.3f}  ({seconds:.0f} s)", flush=True)

    return execute_cells(cells, out, jobs=args.jobs, force=args.force, progress=progress)


def main(args: argparse.Namespace) -> List[Dict]:
    """Run the demo's runs (resumable, in parallel) and write the report into ``args.out``."""
    start = time.perf_counter()
    out = Path(args.out)
    cells = demo_cells(args)
    results = run_cells(cells, args)
    cfg = cells[0].cfg
    title = (f"{args.benchmark}, 5 x 2 classes, {args.train_per_class} images per class, "
             f"{cfg.epochs} epochs, lr {cfg.lr:g}, {len(args.seeds)} seeds")
    print(write_report(results, out, title))
    print(f"\nresults in {out}/ (results.txt, results.json, results.csv, accuracy_vs_memory.png, "
          f"accuracy_matrices.png); {time.perf_counter() - start:.0f} s")
    return results
