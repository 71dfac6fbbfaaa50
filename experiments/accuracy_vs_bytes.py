"""Accuracy against memory in bytes on the test split: the README's headline (and Table 1).

For an embedded benchmark and the recipe chosen on its validation split
(``experiments/recipe_ablation.py --plan matched`` writes ``chosen.json``), budgets 1, 2, 5,
10 and 20% of the bytes of the data seen:

* the headline rows, ``--seeds`` (default 5): the whole-sample coreset of our buffer (t = 1,
  random samples), the core tokenset with the chosen recipe, and the same with random tokens;
* controls at 1% and 5%, the same seeds: the coreset with new data dropped to the core
  tokenset's keep rate t at random and by the recipe's scorer, the core tokenset with random
  memory tokens and new data dropped by the scorer, and the core tokenset with random
  dropout of new data (the paper's);
* references, seeds 0-2 (``--reference-seeds``): Avalanche's replay (``ClassBalancedBuffer``
  resized to the same bytes), core tokens (every sample, t = r), naive fine-tuning,
  cumulative training and the rehearsal-free InfLoRA and CODA-Prompt.

Every method uses the training settings chosen on the validation split. Writes
``<out>/table.md`` (mean ± std, the plasticity column, paired per-seed differences of the
core tokenset against every other row), ``table.csv``, ``accuracy_vs_memory.png`` (error
bars) and ``matrices.png``; runs are resumable (``<out>/runs``) and never reused for other
settings. ``--style small_items`` runs the same rows on a second scene style (Cluttered
Fashion-MNIST only; the recipe is not tuned on it)::

    python experiments/accuracy_vs_bytes.py --benchmark cluttered_fmnist --jobs 2
    python experiments/accuracy_vs_bytes.py --benchmark cluttered_fmnist --style small_items \
        --seeds 0 1 2 --budgets 0.01 0.05 --only "coreset (ours, t = 1)" "core tokenset" \
        "core tokenset, random tokens"
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from avalanche_cts.harness import METHODS
from avalanche_cts.harness.config import RunConfig
from avalanche_cts.harness.execute import cell_data, execute_cells
from avalanche_cts.harness.grid import Cell
from avalanche_cts.harness.pretrain import PRESET_BACKBONES
from avalanche_cts.harness.runner import StaleResultError, load_result, run_settings
from avalanche_cts.harness.report import (aggregate, format_table, paired_difference, plasticity,
                                          plot_accuracy_vs_memory, plot_matrices, write_csv)

from common import BASE_SETTINGS, MODELS, PEFT, finish_args, inference_at, make_parser

HERE = Path(__file__).resolve().parent / "results"
BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2)
CONTROL_BUDGETS = (0.01, 0.05)
HEADLINE_SEEDS = (0, 1, 2, 3, 4)
REFERENCE_SEEDS = (0, 1, 2)
STYLES = {"small_items": dict(item=20, fragments=[5, 8], fragment_size=[6, 12], texture=80,
                              grain=24)}
"""Second scene styles of Cluttered Fashion-MNIST: ``small_items`` (20 px items, 12% of the
tokens on the object instead of 18%, 5-8 clutter fragments, stronger texture)."""
TOKENSET = "core tokenset"
CORESET = "coreset (ours, t = 1)"


def rows(recipe: Dict, coreset: Optional[Dict] = None
         ) -> List[Tuple[str, Dict, Sequence[float], bool]]:
    """``(label, RunConfig changes, budgets, headline seeds?)`` of every row of the table;
    ``coreset``: changes chosen on validation for the whole-sample coreset rows
    (``chosen.json``'s ``coreset``, e.g. its new-data loss)."""
    tokenset = dict(recipe, method="core_tokenset")
    scorer = recipe["scorer"]
    at_t = dict(coreset_at_t=True)  # dropout = the core tokenset's keep rate at this budget
    rows_ = [
        (CORESET, dict(method="coreset", selector="random", **(coreset or {})), BUDGETS, True),
        (TOKENSET, tokenset, BUDGETS, True),
        ("core tokenset, random tokens", dict(tokenset, scorer="random"), BUDGETS, True),
    ]
    if recipe.get("dropout_tokens") == "matched":
        rows_ += [
            ("control: core tokenset, random dropout of new data",
             dict(tokenset, dropout_tokens="random"), CONTROL_BUDGETS, True),
            (f"control: random memory tokens, new data dropped by {scorer}",
             dict(tokenset, scorer="random", options={"plugin": dict(
                 recipe.get("options", {}).get("plugin", {}), dropout_scorer=scorer)}),
             CONTROL_BUDGETS, True),
            (f"control: coreset, new data dropped by {scorer} to t",
             dict(tokenset, method="coreset", selector="random", **at_t), CONTROL_BUDGETS, True),
        ]
    rows_ += [
        ("control: coreset, new data dropped at random to t",
         dict(tokenset, method="coreset", selector="random", dropout_tokens="random", **at_t),
         CONTROL_BUDGETS, True),
        ("Avalanche replay", dict(method="replay"), BUDGETS, False),
        ("core tokens (t = r)", dict(recipe, method="core_tokens", selector="random"),
         (0.01, 0.02, 0.05), False),
        ("naive", dict(method="naive"), (0.0,), False),
        ("cumulative", dict(method="cumulative"), (0.0,), False),
        *[(name, cfg, (0.0,), False) for name, cfg in PEFT.items()],
    ]
    return rows_


def inference_rule(method: str, inference: Dict) -> Tuple[object, str]:
    """The inference rule (``"whole"``, ``"t"`` or a keep rate) a row gets and the form it
    feeds the kept tokens in (``mask``, ``zero`` or ``sparse``; files written before the form
    was recorded used the mask token): the rule chosen on validation for its method (core
    tokenset rows, controls included: the core tokenset's; whole-sample coreset rows: the
    coreset's); references are tested whole."""
    name = {"coreset": CORESET, "core_tokenset": TOKENSET}.get(method)
    chosen = inference.get(name, {}) if name else {}
    return chosen.get("rule", "whole"), chosen.get("mode", "mask")


def make_cells(args, chosen: Dict, inference: Dict) -> List[Cell]:
    model = MODELS[args.benchmark]
    base = RunConfig(model=model, pretrained=True, batch_size=64, backbone=args.backbone,
                     **dict(BASE_SETTINGS, **chosen["training"]))
    exponent = chosen["recipe"]["retention_exponent"]
    sources = {"buffer": {"keep_sources": True}}  # provenance and object hits of token memories
    cells = []
    for label, change, budgets, headline in rows(chosen["recipe"], chosen.get("coreset")):
        change = dict(change)
        at_t = change.pop("coreset_at_t", False)
        plugin = change.pop("options", {}).get("plugin")
        options = dict(sources) if METHODS.facts(change["method"]).memory == "tokens" else {}
        if plugin:
            options["plugin"] = plugin
        rule, mode = inference_rule(change["method"], inference)
        for seed in (args.seeds if headline else [s for s in args.reference_seeds
                                                  if s in args.seeds]):
            for r in budgets:
                extra = dict(dropout=r ** exponent) if at_t else {}
                extra["inference"] = inference_at(rule, r, exponent)
                if rule != "whole":
                    extra["inference_mode"] = mode
                cfg = replace(base, budget=r, seed=seed, options=options, **dict(change, **extra))
                bench = dict(name=args.benchmark, n_experiences=5, seed=seed,
                             train_per_class=args.train_per_class,
                             test_per_class=args.test_per_class,
                             heldout_per_class=PRESET_BACKBONES[model].heldout_per_class)
                if args.style:
                    bench["style"] = STYLES[args.style]
                cells.append(Cell(len(cells), run_key(label, r, seed, cfg), cfg,
                                  bench, dict(label=label)))
    return cells


def run_key(label: str, budget: float, seed: int, cfg: RunConfig) -> str:
    """A run's folder name under ``<out>/runs`` (:data:`KEY_SEED` reads its seed back); top-token
    inference adds its keep rate, and its form unless it is the mask token."""
    inf = "" if cfg.inference == "whole" else f"-inf{cfg.inference:.3g}" + (
        "" if cfg.inference_mode == "mask" else f"-{cfg.inference_mode}")
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in
                   f"{label}-r{budget:g}-s{seed}{inf}")


KEY_SEED = re.compile(r"-s(\d+)(?:-inf|$)")
"""The seed in a :func:`run_key`."""


def selected(args, cell: Cell) -> bool:
    """Whether ``--only`` and ``--budgets`` ask for ``cell`` (rows without memory: any budget)."""
    budget = cell.cfg.budget
    return ((not args.only or cell.axes["label"] in args.only)
            and (not args.budgets or budget == 0 or any(abs(budget - b) < 1e-9
                                                         for b in args.budgets)))


def check_only(only: Optional[Sequence[str]], cells: Sequence[Cell]) -> None:
    """Refuse ``--only`` labels that name no row (a typo would otherwise run nothing)."""
    labels = list(dict.fromkeys(c.axes["label"] for c in cells))
    unknown = [x for x in only or () if x not in labels]
    if unknown:
        raise SystemExit(f"--only: no row is called {', '.join(map(repr, unknown))}; the rows "
                         f"of this table are {', '.join(map(repr, labels))}")


def report_args(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``--seeds`` and ``--reference-seeds`` widened to every seed that has a
    run in ``<out>/runs``, so that an invocation for a few rows or seeds rewrites the report
    over all that is stored rather than over its own seeds only."""
    runs = args.out / "runs"
    found = {int(m.group(1)) for d in (runs.iterdir() if runs.is_dir() else ())
             if (m := KEY_SEED.search(d.name))}
    return argparse.Namespace(**dict(vars(args), seeds=sorted(set(args.seeds) | found),
                                     reference_seeds=sorted(set(args.reference_seeds) | found)))


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


def _by_seed(results: List[Dict], label: str, budget: float) -> Dict[int, float]:
    return {r["config"]["seed"]: r["final_acc"] for r in results
            if r["label"] == label and abs(r["config"]["budget"] - budget) < 1e-9}


def _paired(mine: Dict[int, float], other: Dict[int, float], **info) -> Optional[Dict]:
    d = paired_difference(mine, other)
    return None if d is None else dict(info, **d)


def paired_differences(results: List[Dict]) -> List[Dict]:
    """Per budget and row, the core tokenset minus that row on the same seeds (points); then
    the 1% core tokenset minus the coreset at every larger budget (the paper's claim) and
    minus every row without a memory (naive, cumulative, the rehearsal-free methods)."""
    out = []
    labels = [lab for lab in dict.fromkeys(r["label"] for r in results) if lab != TOKENSET]
    for b in BUDGETS:
        mine = _by_seed(results, TOKENSET, b)
        out += filter(None, (_paired(mine, _by_seed(results, label, b), budget=b, versus=label)
                             for label in labels))
    smallest = _by_seed(results, TOKENSET, BUDGETS[0])
    out += filter(None, (_paired(smallest, _by_seed(results, CORESET, b), budget=BUDGETS[0],
                                 versus=f"{CORESET} at {100 * b:g}%") for b in BUDGETS[1:]))
    without = [lab for lab in labels if all(r["config"]["budget"] == 0
                                            for r in results if r["label"] == lab)]
    out += filter(None, (_paired(smallest, _by_seed(results, label, 0.0), budget=BUDGETS[0],
                                 versus=f"{label} (no memory)") for label in without))
    return out


def _cell(results: List[Dict], label: str, budget, metric) -> str:
    vals = [metric(r) for r in results if r["label"] == label and
            (budget is None or abs(r["config"]["budget"] - budget) < 1e-9)]
    if not vals:
        return "–"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{100 * statistics.fmean(vals):.1f} ± {100 * sd:.1f}"


def write_report(args, cells: List[Cell], results: List[Dict], chosen: Dict) -> str:
    labels = {c.key: c.axes["label"] for c in cells}
    for c, r in zip(cells, results):
        r["label"] = labels[c.key]
    table = aggregate(results, lambda r: r["label"])
    style = f", scene style {args.style}" if args.style else ""
    title = (f"{args.benchmark}{style}, test split, 5 x 2 classes, {args.train_per_class} images "
             f"per class, seeds {args.seeds}")
    plot_accuracy_vs_memory(table, args.out / "accuracy_vs_memory.png", title)
    plot_matrices(table, args.out / "matrices.png", title)
    write_csv(args.out / "table.csv", [{k: v for k, v in r.items() if k != "acc_matrix"}
                                       for r in table])
    final = lambda r: r["final_acc"]  # noqa: E731
    plastic = lambda r: plasticity(r["acc_matrix"])  # noqa: E731
    head = ("| method | " + " | ".join(f"{100 * b:g}%" for b in BUDGETS)
            + " | plasticity 1% | plasticity 5% | on object | seeds |")
    lines = [f"# Final average accuracy vs memory: {title}", "",
             f"mean ± std (%); plasticity: mean accuracy on each task right after training on it "
             f"(the first excluded); training {chosen['training']}; recipe "
             f"`{json.dumps(chosen['recipe'])}`; backbone `{args.backbone or 'default'}`; "
             f"inference of test images {chosen['inference'] or 'whole'} (other rows: whole; "
             f"chosen on the validation split)", "", head,
             "|---|" + "---|" * (len(BUDGETS) + 4)]
    for label in dict.fromkeys(r["label"] for r in results):
        rs = [r for r in results if r["label"] == label]
        if all(r["memory_bytes"] == 0 and METHODS.facts(r["config"]["method"]).memory != "tokens"
               for r in rs):
            cells_ = [_cell(results, label, None, final) + " (no memory)"] + [""] * (len(BUDGETS) - 1)
            plast = [_cell(results, label, None, plastic), ""]
        else:
            cells_ = [_cell(results, label, b, final) for b in BUDGETS]
            plast = [_cell(results, label, b, plastic) for b in CONTROL_BUDGETS]
        hits = [r["memory_diagnostics"]["object_hit_rate"] for r in rs
                if "object_hit_rate" in r.get("memory_diagnostics", {})]
        hit = f"{statistics.fmean(hits):.2f}" if hits else "–"
        seeds = sorted({r["config"]["seed"] for r in rs})
        lines.append(f"| {label} | " + " | ".join(cells_ + plast) + f" | {hit} | {len(seeds)} |")
    diffs = paired_differences(results)
    lines += ["", f"## Paired per-seed differences: {TOKENSET} minus each row (points)", "",
              "| budget | versus | mean ± std | 95% interval | better on | per seed |",
              "|---|---|---|---|---|---|"]
    for d in diffs:
        lines.append(f"| {100 * d['budget']:g}% | {d['versus']} | {d['mean']:+.1f} ± {d['std']:.1f} "
                     f"| [{d['low']:+.1f}, {d['high']:+.1f}] | {d['better']}/{len(d['seeds'])} | "
                     + " / ".join(f"{x:+.1f}" for x in d["differences"]) + " |")
    lines += ["", "```", format_table(table), "```"]
    text = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(text)
    (args.out / "paired.json").write_text(json.dumps(diffs, indent=1))
    return text


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = make_parser(__doc__, "test", 200)
    p.set_defaults(seeds=list(HEADLINE_SEEDS))
    p.add_argument("--style", choices=sorted(STYLES),
                   help="a second scene style (cluttered_fmnist; results in <out>_<style>)")
    p.add_argument("--chosen", type=Path, default=None,
                   help="chosen.json of the recipe ablation (default: its results folder)")
    p.add_argument("--inference", type=Path, default=None,
                   help="inference.json of the recipe ablation's inference plan (default: its "
                        "results folder for this backbone; without one every row is tested "
                        "on whole images)")
    p.add_argument("--reference-seeds", type=int, nargs="+", default=list(REFERENCE_SEEDS),
                   help="seeds of the reference rows, those of --seeds among them (default: "
                        "%(default)s)")
    p.add_argument("--only", nargs="+", metavar="LABEL", help="run only these rows")
    p.add_argument("--budgets", type=float, nargs="+", metavar="R",
                   help="run only these budgets (default: all); the report shows every "
                        "finished run of the grid")
    p.add_argument("--force", action="store_true",
                   help="rerun the selected runs whose stored results were made with other "
                        "settings (e.g. after the recipe was re-chosen)")
    args = p.parse_args(argv)
    if args.style and args.benchmark != "cluttered_fmnist":
        p.error("--style applies to --benchmark cluttered_fmnist")
    if args.out is None and (args.backbone or args.style):  # named by the backbone first
        args.out = HERE / "accuracy_vs_bytes" / "_".join(
            [args.backbone or args.benchmark] + ([args.style] if args.style else []))
    args = finish_args(args, HERE / "accuracy_vs_bytes")
    args.chosen = args.chosen or HERE / "recipe_ablation" / args.benchmark / "chosen.json"
    args.inference = args.inference or (HERE / "recipe_ablation" /
                                        (args.backbone or args.benchmark) / "inference.json")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if not args.chosen.is_file():
        raise SystemExit(f"{args.chosen} not found: run experiments/recipe_ablation.py "
                         f"--benchmark {args.benchmark} first (it chooses the settings)")
    chosen = json.loads(args.chosen.read_text())
    inference = json.loads(args.inference.read_text()) if args.inference.is_file() else {}
    chosen["inference"] = {k: v["rule"] for k, v in inference.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    cells = make_cells(args, chosen, inference)
    check_only(args.only, cells)

    def progress(i, n, cell, res, seconds):
        print(f"[{i}/{n}] {cell.key}: {res['final_acc']:.3f} ({seconds / 60:.1f} min)", flush=True)

    execute_cells([c for c in cells if selected(args, c)], args.out / "runs", jobs=args.jobs,
                  force=args.force, progress=progress)
    report = report_args(args)  # every seed stored here, not only this invocation's
    done = stored(make_cells(report, chosen, inference), args.out / "runs")
    print(write_report(report, [c for c, _ in done], [r for _, r in done], chosen))


if __name__ == "__main__":
    main()
