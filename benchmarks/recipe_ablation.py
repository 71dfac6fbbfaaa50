"""The partial-input recipe, decided by measurement on the validation split.

A staged search on an embedded benchmark (``--benchmark cluttered_fmnist`` or
``fmnist_pretrained``), every run on validation images held out from the stream's training
pool (never the test set), 3 seeds, final average accuracy after 5 experiences x 2 classes:

0. ``train``: optimiser settings for every method, chosen once: Adam at each learning rate x
   epochs, scored by the whole-sample coreset at 5% (the reference the method must beat).
1. ``mode``: replay of stored tokens: zero fill (0 in normalised space), sparse, mask token.
2. ``dropout``: token dropout on new data: off, fixed keep rate t (paper), per-sample keep
   rate in [t, 1], dropout on half of each batch.
3. ``choice``: which tokens: top-k by score, Gumbel top-k sampled from the scores.
4. ``scorer``: random, rollout, GradLRP, AtMan tokens (random selector).
5. ``selector``: random, herding, GradMatch samples (best scorer).
6. ``split``: the sample/token split of a budget r, t = r ** e for e in 1/3, 1/2, 2/3.

Each stage starts from the best setting so far (mean over its budgets and seeds) and varies
one lever. Core tokensets run at 1% and 5% of the bytes in stages 1-6; the references
(whole-sample coreset of our buffer and Avalanche's replay at 1, 5 and 20%, naive,
cumulative) run once with the chosen training settings; ``accuracy_vs_bytes.py`` runs every
budget on the test split. Every core-tokenset run records the
share of its stored tokens that fall on the object (Cluttered Fashion-MNIST) and checks the
provenance of every stored record.

Runs are resumable and never reused for other settings (``<out>/runs/<run>/result.json``).
Writes ``<out>/ablation.md`` (all rows, mean ± std), ``ablation.csv``, ``chosen.json``
(training settings and the winning recipe) and ``references.png``::

    python benchmarks/recipe_ablation.py --benchmark cluttered_fmnist --jobs 2
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from avalanche_cts.harness.config import RunConfig, fingerprint
from avalanche_cts.harness.execute import execute_cells
from avalanche_cts.harness.grid import Cell
from avalanche_cts.harness.pretrain import PRESET_BACKBONES
from avalanche_cts.harness.report import aggregate, plot_accuracy_vs_memory, write_csv

from common import BASE_SETTINGS, MODELS, PEFT, finish_args, make_parser

RESULTS = Path(__file__).resolve().parent / "results" / "recipe_ablation"
LRS = (1e-4, 3e-4, 1e-3)
EPOCHS = (2, 4)
STAGE_BUDGETS = (0.01, 0.05)
REFERENCE_BUDGETS = (0.01, 0.05, 0.2)

# each stage: (name, [(label, RunConfig changes)])
STAGES: List[Tuple[str, List[Tuple[str, Dict]]]] = [
    ("mode", [(f"replay {m}", dict(replay_mode=m)) for m in ("zero", "sparse", "mask")]),
    ("dropout", [("dropout off", dict(dropout=1.0)),
                 ("dropout fixed t", dict(dropout=None, dropout_schedule="fixed",
                                          dropout_fraction=1.0)),
                 ("dropout uniform [t, 1]", dict(dropout=None, dropout_schedule="uniform",
                                                 dropout_fraction=1.0)),
                 ("dropout t on half", dict(dropout=None, dropout_schedule="fixed",
                                            dropout_fraction=0.5))]),
    ("choice", [("top-k", dict(token_choice="topk")), ("Gumbel top-k", dict(token_choice="gumbel"))]),
    ("scorer", [(f"scorer {s}", dict(scorer=s)) for s in ("random", "rollout", "gradlrp", "atman")]),
    ("selector", [(f"selector {s}", dict(selector=s)) for s in ("random", "herding", "gradmatch")]),
    ("split", [(f"t = r^{e:.2g}", dict(retention_exponent=e)) for e in (1 / 3, 0.5, 2 / 3)]),
]
START = dict(BASE_SETTINGS, method="core_tokenset", scorer="gradlrp")
"""The paper's recipe (zero fill, dropout at keep rate t, top-k tokens) with GradLRP tokens."""


def _bench(args, seed: int) -> Dict:
    return dict(name=args.benchmark, n_experiences=5, seed=seed, validation=True,
                train_per_class=args.train_per_class, test_per_class=args.val_per_class,
                heldout_per_class=PRESET_BACKBONES[MODELS[args.benchmark]].heldout_per_class)


def _cells(args, label: str, base: RunConfig, budgets: Sequence[float]) -> List[Cell]:
    cells = []
    for seed in args.seeds:
        for r in budgets:
            cfg = replace(base, budget=r, seed=seed)
            # named by the settings: a setting shared by two stages runs once
            key = f"{cfg.method}-r{r:g}-s{seed}-{fingerprint(cfg.shaping())[:10]}"
            cells.append(Cell(len(cells), key, cfg, _bench(args, seed), dict(label=label)))
    return cells


def _run(args, groups: List[Tuple[str, RunConfig, Sequence[float]]]) -> Dict[str, List[Dict]]:
    """Run every (label, config, budgets) group; return results by label."""
    cells, labels = [], []
    for label, cfg, budgets in groups:
        for c in _cells(args, label, cfg, budgets):
            cells.append(replace(c, index=len(cells)))
            labels.append(label)

    def progress(i, n, cell, res, seconds):
        print(f"  [{i}/{n}] {cell.key}: {res['final_acc']:.3f} ({seconds / 60:.1f} min)", flush=True)

    results = execute_cells(cells, args.out / "runs", jobs=args.jobs, progress=progress)
    out: Dict[str, List[Dict]] = {}
    for label, res in zip(labels, results):
        out.setdefault(label, []).append(dict(res, label=label))
    return out


def _score(results: List[Dict]) -> float:
    return statistics.fmean(r["final_acc"] for r in results)


def _base(args, train: Dict) -> RunConfig:
    settings = dict(BASE_SETTINGS, options={"buffer": {"keep_sources": True}})
    settings.update(train)
    return RunConfig(model=MODELS[args.benchmark], pretrained=True, batch_size=64, **settings)


def choose_training(args) -> Tuple[Dict, Dict[str, List[Dict]]]:
    """Stage 0: the learning rate and epochs that serve the 5% coreset best."""
    print("stage train: optimiser settings, scored by the 5% coreset")
    groups = [(f"train lr {lr:g} e{ep}", _base(args, dict(lr=lr, epochs=ep, method="coreset")),
               (0.05,)) for lr in LRS for ep in EPOCHS]
    res = _run(args, groups)
    best = max(res, key=lambda k: _score(res[k]))
    cfg = res[best][0]["config"]
    return dict(lr=cfg["lr"], epochs=cfg["epochs"], optimizer=cfg["optimizer"]), res


def run_stages(args, train: Dict) -> Tuple[Dict, List[Tuple[str, Dict[str, List[Dict]]]]]:
    """Stages 1-6: one lever at a time from the best setting so far."""
    current = dict(START)
    log = []
    stages = dict(STAGES)
    for stage in args.stages or list(stages):
        options = stages[stage]
        print(f"stage {stage}: " + ", ".join(label for label, _ in options))
        groups = [(label, _base(args, dict(train, **dict(current, **change))), STAGE_BUDGETS)
                  for label, change in options]
        res = _run(args, groups)
        best = max(options, key=lambda o: _score(res[o[0]]))
        current.update(best[1])
        print(f"  best: {best[0]} ({100 * _score(res[best[0]]):.1f})")
        log.append((stage, res))
    return current, log


def run_references(args, train: Dict) -> Dict[str, List[Dict]]:
    groups = [(name, _base(args, dict(train, method=m)), budgets) for name, m, budgets in (
        ("coreset (ours, t = 1)", "coreset", REFERENCE_BUDGETS),
        ("Avalanche replay", "replay", REFERENCE_BUDGETS),
        ("naive", "naive", (0.0,)), ("cumulative", "cumulative", (0.0,)))]
    groups += [(name, _base(args, dict(train, **peft)), (0.0,)) for name, peft in PEFT.items()]
    return _run(args, groups)


def _row(label: str, results: List[Dict], budgets: Sequence[float]) -> str:
    cells = []
    for b in budgets:
        accs = [r["final_acc"] for r in results if abs(r["config"]["budget"] - b) < 1e-9]
        if not accs:
            cells.append("–")
            continue
        m = statistics.fmean(accs)
        s = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cells.append(f"{100 * m:.1f} ± {100 * s:.1f}")
    hits = [r["memory_diagnostics"]["object_hit_rate"] for r in results
            if "object_hit_rate" in r.get("memory_diagnostics", {})]
    hit = f"{statistics.fmean(hits):.2f}" if hits else "–"
    return f"| {label} | " + " | ".join(cells) + f" | {hit} |"


def write_report(args, train: Dict, train_res, stages, recipe: Dict, refs) -> str:
    head = "| setting | " + " | ".join(f"{100 * b:g}%" for b in STAGE_BUDGETS) + " | on object |"
    lines = [f"# Recipe ablation on {args.benchmark} (validation split)", "",
             f"Final average accuracy (%), mean ± std over seeds {args.seeds}; 5 x 2 classes, "
             f"{args.train_per_class} training and {args.val_per_class} validation images per "
             f"class; pretrained {MODELS[args.benchmark]}. 'on object': share of stored tokens "
             f"on the object (random tokens: the object's share of the image).", "",
             "## Stage 0: training settings (5% whole-sample coreset)", "",
             "| setting | 5% | on object |", "|---|---|---|"]
    lines += [_row(k, v, (0.05,)) for k, v in train_res.items()]
    lines += ["", f"Chosen: Adam, lr {train['lr']:g}, {train['epochs']} epochs per experience.", ""]
    for stage, res in stages:
        lines += [f"## Stage {stage}", "", head, "|---|" + "---|" * (len(STAGE_BUDGETS) + 1)]
        lines += [_row(k, v, STAGE_BUDGETS) for k, v in res.items()]
        lines.append("")
    skipped = [s for s, _ in STAGES if s not in {stage for stage, _ in stages}]
    if skipped:
        lines += [f"Stages not run: {', '.join(skipped)} (they keep the start setting: "
                  f"{', '.join(f'{k}={START[k]!r}' for k in ('token_choice', 'selector', 'retention_exponent'))}).", ""]
    lines += ["## References (same training settings)", ""]
    if not refs:
        lines += ["Not run here (`--no-references`): `accuracy_vs_bytes.py` runs them on the "
                  "test split.", ""]
    else:
        lines += ["| method | " + " | ".join(f"{100 * b:g}%" for b in REFERENCE_BUDGETS) + " | |",
                  "|---|" + "---|" * (len(REFERENCE_BUDGETS) + 1)]
    for k, v in refs.items():
        budgets = REFERENCE_BUDGETS if v[0]["config"]["budget"] > 0 else (0.0,)
        lines.append(_row(k, v, budgets))
    lines += ["", "## Winning recipe", "", "```json", json.dumps(recipe, indent=1), "```"]
    text = "\n".join(lines) + "\n"
    (args.out / "ablation.md").write_text(text)
    rows = [dict(stage=stage, label=r["label"], budget=r["config"]["budget"],
                 seed=r["config"]["seed"], final_acc=r["final_acc"],
                 object_hit_rate=r.get("memory_diagnostics", {}).get("object_hit_rate", ""))
            for stage, res in [("train", train_res)] + stages + [("reference", refs)]
            for rs in res.values() for r in rs]
    write_csv(args.out / "ablation.csv", rows)
    (args.out / "chosen.json").write_text(json.dumps(dict(training=train, recipe=recipe), indent=1))
    if refs:
        ref_rows = aggregate([r for rs in refs.values() for r in rs], lambda r: r["label"])
        plot_accuracy_vs_memory(ref_rows, args.out / "references.png",
                                f"{args.benchmark}, validation split: references")
    return text


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = make_parser(__doc__, "val", 100)
    p.add_argument("--stages", nargs="*", choices=[s for s, _ in STAGES],
                   help="run only these stages, in this order (default: all, in the order "
                        "above; skipped ones keep the start setting)")
    p.add_argument("--no-references", dest="references", action="store_false",
                   help="skip the reference runs (accuracy_vs_bytes.py runs them on the test "
                        "split)")
    return finish_args(p.parse_args(argv), RESULTS)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train, train_res = choose_training(args)
    print(f"training settings: {train}")
    recipe, stages = run_stages(args, train)
    refs = run_references(args, train) if args.references else {}
    print(write_report(args, train, train_res, stages, recipe, refs))


if __name__ == "__main__":
    main()
