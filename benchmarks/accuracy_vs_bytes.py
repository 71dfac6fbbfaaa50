"""Accuracy against memory in bytes on the test split: the README's headline (and Table 1).

For an embedded benchmark and the recipe chosen on its validation split
(``benchmarks/recipe_ablation.py`` writes ``chosen.json``), 3 seeds, budgets 1, 2, 5, 10 and
20% of the bytes of the data seen:

* whole samples: the coreset of our buffer (t = 1, random samples) and Avalanche's replay
  (``ClassBalancedBuffer`` resized to the same bytes);
* core tokens (every sample, t = r) and core tokensets (t = r ** e) with the chosen recipe,
  selector and scorer, and the same core tokenset with random tokens;
* references without memory bytes: naive fine-tuning, cumulative training, and the
  rehearsal-free InfLoRA and CODA-Prompt.

Every method uses the training settings chosen on the validation split. Writes
``<out>/table.md`` (mean ± std), ``table.csv``, ``accuracy_vs_memory.png`` (error bars) and
``matrices.png``; runs are resumable (``<out>/runs``) and never reused for other settings::

    python benchmarks/accuracy_vs_bytes.py --benchmark cluttered_fmnist --jobs 2
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from avalanche_cts.harness.config import TOKEN_METHODS, RunConfig
from avalanche_cts.harness.execute import cell_data, execute_cells
from avalanche_cts.harness.grid import Cell
from avalanche_cts.harness.pretrain import PRESET_BACKBONES
from avalanche_cts.harness.runner import StaleResultError, load_result, run_settings
from avalanche_cts.harness.report import (aggregate, format_table, plot_accuracy_vs_memory,
                                          plot_matrices, write_csv)

from common import BASE_SETTINGS, MODELS, PEFT, finish_args, make_parser

HERE = Path(__file__).resolve().parent / "results"
BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2)


def rows(recipe: Dict) -> List[tuple]:
    """``(label, RunConfig changes, budgets)`` of every row of the table."""
    tokenset = dict(recipe, method="core_tokenset")
    return [
        ("coreset (ours, t = 1)", dict(method="coreset", selector="random"), BUDGETS),
        ("Avalanche replay", dict(method="replay"), BUDGETS),
        ("core tokens (t = r)", dict(recipe, method="core_tokens", selector="random"), BUDGETS),
        ("core tokenset", tokenset, BUDGETS),
        ("core tokenset, random tokens", dict(tokenset, scorer="random"), BUDGETS),
        ("naive", dict(method="naive"), (0.0,)),
        ("cumulative", dict(method="cumulative"), (0.0,)),
        *[(name, cfg, (0.0,)) for name, cfg in PEFT.items()],
    ]


def make_cells(args, chosen: Dict) -> List[Cell]:
    model = MODELS[args.benchmark]
    base = RunConfig(model=model, pretrained=True, batch_size=64,
                     **dict(BASE_SETTINGS, **chosen["training"]))
    sources = {"buffer": {"keep_sources": True}}  # provenance and object hits of token memories
    cells = []
    for label, change, budgets in rows(chosen["recipe"]):
        change = dict(change)
        options = change.pop("options", sources if change["method"] in TOKEN_METHODS else {})
        for seed in args.seeds:
            for r in budgets:
                cfg = replace(base, budget=r, seed=seed, options=options, **change)
                bench = dict(name=args.benchmark, n_experiences=5, seed=seed,
                             train_per_class=args.train_per_class,
                             test_per_class=args.test_per_class,
                             heldout_per_class=PRESET_BACKBONES[model].heldout_per_class)
                key = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in
                              f"{label}-r{r:g}-s{seed}")
                cells.append(Cell(len(cells), key, cfg, bench, dict(label=label)))
    return cells


def selected(args, cell: Cell) -> bool:
    """Whether ``--only`` and ``--budgets`` ask for ``cell`` (rows without memory: any budget)."""
    budget = cell.cfg.budget
    return ((not args.only or cell.axes["label"] in args.only)
            and (not args.budgets or budget == 0 or any(abs(budget - b) < 1e-9
                                                         for b in args.budgets)))


def stored(cells: Sequence[Cell], runs: Path) -> List[Tuple[Cell, Dict]]:
    """The cells with a finished result made with exactly their settings (a result made with
    other settings, e.g. before the recipe was re-chosen, is left out and named)."""
    found = []
    for c in cells:
        try:
            res = load_result(runs / c.key / "result.json", run_settings(c.cfg, cell_data(c)))
        except StaleResultError as e:
            print(f"not in the report: {e}")
            continue
        if res is not None:
            found.append((c, res))
    return found


def write_report(args, cells: List[Cell], results: List[Dict], chosen: Dict) -> str:
    labels = {c.key: c.axes["label"] for c in cells}
    for c, r in zip(cells, results):
        r["label"] = labels[c.key]
    table = aggregate(results, lambda r: r["label"])
    title = (f"{args.benchmark}, test split, 5 x 2 classes, {args.train_per_class} images per "
             f"class, {len(args.seeds)} seeds")
    plot_accuracy_vs_memory(table, args.out / "accuracy_vs_memory.png", title)
    plot_matrices(table, args.out / "matrices.png", title)
    write_csv(args.out / "table.csv", [{k: v for k, v in r.items() if k != "acc_matrix"}
                                       for r in table])
    head = "| method | " + " | ".join(f"{100 * b:g}%" for b in BUDGETS) + " | on object |"
    lines = [f"# Final average accuracy vs memory: {title}", "",
             f"mean ± std (%); training {chosen['training']}; recipe "
             f"`{json.dumps(chosen['recipe'])}` (chosen on the validation split)", "", head,
             "|---|" + "---|" * (len(BUDGETS) + 1)]
    for label in dict.fromkeys(r["label"] for r in table):
        rs = [r for r in table if r["label"] == label]
        by = {r["budget"]: r for r in rs}
        if None in by:
            cells_ = [f"{100 * by[None]['final_acc_mean']:.1f} ± "
                      f"{100 * by[None]['final_acc_std']:.1f} (no memory)"] + [""] * (len(BUDGETS) - 1)
        else:
            cells_ = [f"{100 * by[b]['final_acc_mean']:.1f} ± {100 * by[b]['final_acc_std']:.1f}"
                      if b in by else "–" for b in BUDGETS]
        hits = [res["memory_diagnostics"]["object_hit_rate"] for res in results
                if res["label"] == label and "object_hit_rate" in res.get("memory_diagnostics", {})]
        hit = f"{statistics.fmean(hits):.2f}" if hits else "–"
        lines.append(f"| {label} | " + " | ".join(cells_) + f" | {hit} |")
    lines += ["", "```", format_table(table), "```"]
    text = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(text)
    return text


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = make_parser(__doc__, "test", 200)
    p.add_argument("--chosen", type=Path, default=None,
                   help="chosen.json of the recipe ablation (default: its results folder)")
    p.add_argument("--only", nargs="+", metavar="LABEL", help="run only these rows")
    p.add_argument("--budgets", type=float, nargs="+", metavar="R",
                   help="run only these budgets (default: all); the report shows every "
                        "finished run of the grid")
    p.add_argument("--force", action="store_true",
                   help="rerun the selected runs whose stored results were made with other "
                        "settings (e.g. after the recipe was re-chosen)")
    args = finish_args(p.parse_args(argv), HERE / "accuracy_vs_bytes")
    args.chosen = args.chosen or HERE / "recipe_ablation" / args.benchmark / "chosen.json"
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if not args.chosen.is_file():
        raise SystemExit(f"{args.chosen} not found: run benchmarks/recipe_ablation.py "
                         f"--benchmark {args.benchmark} first (it chooses the settings)")
    chosen = json.loads(args.chosen.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    cells = make_cells(args, chosen)

    def progress(i, n, cell, res, seconds):
        print(f"[{i}/{n}] {cell.key}: {res['final_acc']:.3f} ({seconds / 60:.1f} min)", flush=True)

    execute_cells([c for c in cells if selected(args, c)], args.out / "runs", jobs=args.jobs,
                  force=args.force, progress=progress)
    done = stored(cells, args.out / "runs")
    print(write_report(args, [c for c, _ in done], [r for _, r in done], chosen))


if __name__ == "__main__":
    main()
