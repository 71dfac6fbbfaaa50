"""A memory on top of the rehearsal-free methods: CODA-Prompt and InfLoRA, each alone, with a
core tokenset and with a whole-sample coreset of the same bytes (issue 27).

Every memory runs on the PEFT strategy (``RunConfig(method=..., options={"base": ...,
"base_options": ...})``) with the base's own optimiser settings (``PEFT`` in
``common.py``: Adam at 0.005, cosine) and the epochs of the recipe ablation's
``chosen.json``; the core tokenset starts from that recipe, the coreset is our buffer at
t = 1 (random samples, new data trained whole). Every row is tested on whole images. Two
plans, resumable (``<out>/runs/<plan>/<run>/result.json``, keyed by the settings'
fingerprint, never reused for other settings):

``--plan validation`` (validation split, 5 seeds, budgets 1% and 5%, or
``--validation-budgets``): for each base (``--bases``) and
memory, one lever at a time from the start (the best setting so far, mean final accuracy over
budgets and seeds): the memory-loss weight (0.5, 1, 2); for the core tokenset the replay mode
(mask, zero) and, on CODA-Prompt, the query that selects the prompts of dropped new data
(``partial``: the partial input's own; ``whole``: the whole image's). Writes
``chosen_<base>_<memory>.json`` (e.g. ``chosen_coda_prompt_core_tokenset.json``) and
``validation.md`` (mean ± std and plasticity of every option, the bases alone beside them).

``--plan test`` (test split), from those choices: each base alone, + core tokenset and +
coreset at each budget (1% and 5%; ``fmnist_pretrained``: 1%); ``--seeds`` (0-4) for every
row, ``--seeds-1pct`` (0-9; ``fmnist_pretrained``: ``--seeds``) for the 1% rows and the bases
alone. Writes ``table.md`` (mean ± std, plasticity, paired per-seed differences with 95%
Student-t intervals of each memory row against its base alone and of the core tokenset
against the same-bytes coreset on the same base) and ``paired.json``::

    python experiments/peft_memory.py --benchmark cluttered_fmnist --plan validation --jobs 2
    python experiments/peft_memory.py --benchmark cluttered_fmnist --plan test --jobs 2
    python experiments/peft_memory.py --benchmark fmnist_pretrained --plan validation --jobs 2
    python experiments/peft_memory.py --benchmark fmnist_pretrained --plan test --jobs 2

``--smoke`` runs either plan at a tiny size (2 experiences, 3 training and 2 evaluation
images per class, 1 epoch, seed 0; the test plan's 1% rows seeds 0 and 1) into
``results/peft_memory/<benchmark>_smoke``: it checks the pipeline, its numbers mean nothing.

Cost, one core per run (measured on a loaded 2-core machine, validation split, seed 0, 5%:
CODA-Prompt + core tokenset 103 s, InfLoRA + core tokenset 99 s, CODA-Prompt alone 53 s; a
coreset run costs about as much as a core tokenset run): on Cluttered Fashion-MNIST the
validation plan is 160 runs (15 settings x 2 budgets x 5 seeds, the bases alone 2 x 5), about
4.3 core-hours (2.2 h with ``--jobs 2``), the test plan 80 runs, about 2 core-hours (1 h);
Split Fashion-MNIST runs cost about 4x less (validation about 35 min, test about 5 min with
``--jobs 2``). The smoke runs of both plans take about 20 s.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from avalanche_cts.harness.config import RunConfig, fingerprint
from avalanche_cts.harness.execute import execute_cells
from avalanche_cts.harness.grid import Cell
from avalanche_cts.harness.pretrain import PRESET_BACKBONES
from avalanche_cts.strategies.prompt import QUERIES

from accuracy_vs_bytes import _by_seed, _paired
from common import BASE_SETTINGS, MODELS, PEFT, finish_args, make_parser
from recipe_ablation import _head, _row, _score, _settings

HERE = Path(__file__).resolve().parent / "results"
RESULTS = HERE / "peft_memory"
BASES = ("CODA-Prompt", "InfLoRA")
"""The rehearsal-free methods (labels of ``PEFT``), in table order."""
MEMORIES = {"core tokenset": "core_tokenset", "coreset": "coreset"}
"""Row label -> memory method."""
WEIGHTS = (0.5, 1.0, 2.0)
MODES = ("mask", "zero")
QUERY_LABELS = {"partial": "partial input", "whole": "whole image"}
"""What selects CODA-Prompt's prompts for dropped new data (``CODAPrompt(query=...)``)."""
VALIDATION_BUDGETS = (0.01, 0.05)
VALIDATION_SEEDS = (0, 1, 2, 3, 4)
TEST_SEEDS = (0, 1, 2, 3, 4)
SEEDS_1PCT = tuple(range(10))
TEST_BUDGETS = {"cluttered_fmnist": (0.01, 0.05), "fmnist_pretrained": (0.01,)}
SMOKE = dict(n_experiences=2, train_per_class=3, val_per_class=2, test_per_class=2, epochs=1,
             validation_budgets=(0.05,), seeds=[0], seeds_1pct=[0, 1])
"""``--smoke`` sizes."""

Stage = Tuple[str, List[Tuple[str, Dict]]]
"""(stage name, [(option label, settings change)])."""
Group = Tuple[str, RunConfig, Sequence[float], Sequence[int]]
"""(row label, settings, budgets, seeds)."""


def base_method(base: str) -> str:
    """The method name of a base label of ``PEFT`` (``"CODA-Prompt"`` -> ``coda_prompt``)."""
    return PEFT[base]["method"]


def _weight(w: float) -> Dict:
    return {"options": {"plugin": {"mem_weight": w}}}


def stages(base: str, memory: str) -> List[Stage]:
    """The validation levers of ``memory`` on ``base``, in order: the memory weight; for the
    core tokenset the replay mode and, on CODA-Prompt, the query of dropped new data."""
    out = [("weight", [(f"memory weight {w:g}", _weight(w)) for w in WEIGHTS])]
    if memory == "core tokenset":
        out.append(("mode", [(f"replay {m}", dict(replay_mode=m)) for m in MODES]))
        if base_method(base) == "coda_prompt":
            out.append(("query", [(f"query of the {QUERY_LABELS[q]}",
                                   {"options": {"base_options": {"query": q}}})
                                  for q in QUERIES]))
    return out


def start(base: str, memory: str, recipe: Dict) -> Dict:
    """The settings a base + memory starts from (then the levers of :func:`stages`): the
    recipe's core tokenset or the whole-sample coreset (weight 1), on ``base`` with its
    optimiser and keywords (CODA-Prompt's query set, so that every option is a setting)."""
    peft = PEFT[base]
    on_base = dict(lr=peft["lr"], head_lr_scale=peft["head_lr_scale"],
                   lr_schedule=peft["lr_schedule"],
                   options={"base": peft["method"], "base_options": dict(peft["options"]),
                            "buffer": {"keep_sources": True}})
    if base_method(base) == "coda_prompt" and memory == "core tokenset":
        on_base = _settings(on_base, {"options": {"base_options": {"query": "partial"}}})
    mem = (dict(recipe, method="core_tokenset") if memory == "core tokenset"
           else dict(method="coreset", selector="random", **_weight(1.0)))
    return _settings(mem, on_base)


def config(args, training: Dict, *layers: Dict) -> RunConfig:
    """A run's settings: :data:`BASE_SETTINGS`, the training settings, then ``layers``;
    tested on whole images."""
    return RunConfig(model=MODELS[args.benchmark], pretrained=True, batch_size=64,
                     backbone=args.backbone, inference="whole",
                     **_settings(BASE_SETTINGS, training, *layers))


def alone(args, training: Dict, base: str) -> RunConfig:
    """``base`` without a memory (its own optimiser settings, budget 0)."""
    return replace(config(args, training, PEFT[base]), budget=0.0)


def _bench(args, plan: str, seed: int) -> Dict:
    """The benchmark arguments of ``plan`` (validation or test images) for ``seed``."""
    bench = dict(name=args.benchmark, n_experiences=args.n_experiences, seed=seed,
                 train_per_class=args.train_per_class,
                 heldout_per_class=PRESET_BACKBONES[MODELS[args.benchmark]].heldout_per_class)
    if plan == "validation":
        return dict(bench, validation=True, test_per_class=args.val_per_class)
    return dict(bench, test_per_class=args.test_per_class)


def make_cells(args, plan: str, groups: Sequence[Group]) -> List[Cell]:
    """One cell per group, budget and seed, named by its settings (a setting shared by two
    stages or rows runs once)."""
    cells = []
    for label, cfg, budgets, seeds in groups:
        for seed in seeds:
            for r in budgets:
                c = replace(cfg, budget=r, seed=seed)
                key = f"{c.method}-r{r:g}-s{seed}-{fingerprint(c.shaping())[:10]}"
                cells.append(Cell(len(cells), key, c, _bench(args, plan, seed),
                                  dict(label=label)))
    return cells


def execute(args, plan: str, groups: Sequence[Group]) -> Dict[str, List[Dict]]:
    """Run the groups' cells (each setting once); results by row label, each with its
    ``label``."""
    cells = make_cells(args, plan, groups)
    unique = list({c.key: c for c in cells}.values())

    def progress(i, n, cell, res, seconds):
        print(f"  [{i}/{n}] {cell.key}: {res['final_acc']:.3f} ({seconds / 60:.1f} min)",
              flush=True)

    done = execute_cells([replace(c, index=i) for i, c in enumerate(unique)],
                         args.out / "runs" / plan, jobs=args.jobs, progress=progress)
    by_key = {c.key: r for c, r in zip(unique, done)}
    out: Dict[str, List[Dict]] = {}
    for c in cells:
        out.setdefault(c.axes["label"], []).append(dict(by_key[c.key], label=c.axes["label"]))
    return out


# ------------------------------------------------------------------ validation
def choose(args, training: Dict, base: str, memory: str, recipe: Dict
           ) -> Tuple[Dict, List[Tuple[str, Dict[str, List[Dict]], str]]]:
    """One lever at a time from :func:`start`; returns the chosen settings and, per stage,
    ``(stage, results by option, chosen option)``."""
    current, log = start(base, memory, recipe), []
    seeds = args.seeds
    for stage, options in stages(base, memory):
        print(f"{base} + {memory}, stage {stage}: " + ", ".join(o for o, _ in options))
        res = execute(args, "validation", [
            (label, config(args, training, current, change), args.validation_budgets, seeds)
            for label, change in options])
        label, change = max(options, key=lambda o: _score(res[o[0]]))
        current = _settings(current, change)
        print(f"  chosen: {label} ({100 * _score(res[label]):.1f})")
        log.append((stage, res, label))
    return current, log


def chosen_path(folder: Path, base: str, memory: str) -> Path:
    return folder / f"chosen_{base_method(base)}_{MEMORIES[memory]}.json"


def run_validation(args, recipe_file: Dict) -> str:
    """The validation plan: the bases alone, then every base + memory's levers; writes the
    choices and ``validation.md``."""
    training = _training(args, recipe_file["training"])
    refs = execute(args, "validation", [(base, alone(args, training, base), (0.0,), args.seeds)
                                        for base in args.bases])
    sections = []
    for base in args.bases:
        for memory in MEMORIES:
            settings, log = choose(args, training, base, memory, recipe_file["recipe"])
            chosen_path(args.out, base, memory).write_text(json.dumps(dict(
                base=base, memory=memory, training=training, settings=settings,
                choices={stage: label for stage, _, label in log}, seeds=args.seeds),
                indent=1))
            sections.append((f"{base} + {memory}", log))
    return write_validation(args, training, refs, sections)


def write_validation(args, training: Dict, refs: Dict[str, List[Dict]], sections) -> str:
    lines = [f"# A memory on CODA-Prompt and InfLoRA: {args.benchmark}, validation split", "",
             f"Final average accuracy and plasticity (mean accuracy on each task right after "
             f"training on it, the first excluded), %, mean ± std over seeds {args.seeds}; "
             f"{args.n_experiences} experiences, {args.train_per_class} training and "
             f"{args.val_per_class} validation images per class; training `{json.dumps(training)}`"
             f" (the bases' own learning rate and schedule); backbone "
             f"`{args.backbone or 'default'}`; whole-image inference. Each stage varies one "
             f"lever from the best setting so far (mean over budgets and seeds).", "",
             "## The bases alone", ""] + _head(args.validation_budgets)
    lines += [_row(f"{k} (no memory)", v, (0.0,), len(args.validation_budgets))
              for k, v in refs.items()]
    for title, log in sections:
        lines += ["", f"## {title}", ""]
        for stage, res, label in log:
            lines += [f"Stage {stage} (chosen: {label}):", ""] + _head(args.validation_budgets)
            lines += [_row(k, v, args.validation_budgets) for k, v in res.items()] + [""]
    text = "\n".join(lines) + "\n"
    (args.out / "validation.md").write_text(text)
    return text


# ------------------------------------------------------------------------ test
def memory_label(base: str, memory: str) -> str:
    return f"{base} + {memory}"


def test_groups(args, choices: Dict[Tuple[str, str], Dict]) -> List[Group]:
    """Every row of the test table: each base alone, then + each memory at each budget, with
    the settings chosen on validation; the 1% rows and the bases alone on ``--seeds-1pct``
    (with ``--seeds``), the others on ``--seeds``."""
    many = sorted(set(args.seeds) | set(args.seeds_1pct))
    training = next(iter(choices.values()))["training"]
    groups: List[Group] = []
    for base in args.bases:
        groups.append((base, alone(args, training, base), (0.0,), many))
        for memory in MEMORIES:
            cfg = config(args, training, choices[base, memory]["settings"])
            groups += [(memory_label(base, memory), cfg, (r,), many if r == 0.01 else args.seeds)
                       for r in args.budgets]
    return groups


def paired_differences(results: List[Dict], budgets: Sequence[float],
                       bases: Sequence[str] = BASES) -> List[Dict]:
    """Per base of ``bases``, memory and budget: the memory row minus its base alone, and the
    core tokenset minus the coreset of the same bytes on the same base (points, on the seeds
    both hold)."""
    out = []
    for base in bases:
        base_alone = _by_seed(results, base, 0.0)
        coreset = memory_label(base, "coreset")
        for memory in MEMORIES:
            label = memory_label(base, memory)
            for r in budgets:
                mine = _by_seed(results, label, r)
                versus = [(f"{base} alone", base_alone)]
                if memory != "coreset":
                    versus.append((f"{coreset} at {100 * r:g}%", _by_seed(results, coreset, r)))
                out += filter(None, (_paired(mine, other, row=label, budget=r, versus=name)
                                     for name, other in versus))
    return out


def write_test(args, results: Dict[str, List[Dict]], choices) -> str:
    flat = [r for rs in results.values() for r in rs]
    budgets = tuple(args.budgets)
    diffs = paired_differences(flat, budgets, args.bases)
    picked = "; ".join(f"{memory_label(b, m)}: {json.dumps(c['choices'])}"
                       for (b, m), c in choices.items())
    lines = [f"# A memory on CODA-Prompt and InfLoRA: {args.benchmark}, test split", "",
             f"Final average accuracy and plasticity (mean accuracy on each task right after "
             f"training on it, the first excluded), %, mean ± std; seeds {args.seeds} for every "
             f"row, {sorted(set(args.seeds) | set(args.seeds_1pct))} for the 1% rows and the "
             f"bases alone; {args.n_experiences} experiences, {args.train_per_class} training "
             f"and {args.test_per_class} test images per class; backbone "
             f"`{args.backbone or 'default'}`; whole-image inference. Chosen on validation: "
             f"{picked}.", ""] + _head(budgets)
    for label, rs in results.items():
        row_budgets = (0.0,) if label in BASES else budgets
        lines.append(_row(label + (" (no memory)" if label in BASES else ""), rs, row_budgets,
                          len(budgets)))
    lines += ["", "## Paired per-seed differences (points): the row minus the other", "",
              "| row | budget | versus | mean ± std | 95% interval | better on | per seed |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {d['row']} | {100 * d['budget']:g}% | {d['versus']} | {d['mean']:+.1f} ± "
              f"{d['std']:.1f} | [{d['low']:+.1f}, {d['high']:+.1f}] | "
              f"{d['better']}/{len(d['seeds'])} | "
              + " / ".join(f"{x:+.1f}" for x in d["differences"]) + " |" for d in diffs]
    text = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(text)
    (args.out / "paired.json").write_text(json.dumps(diffs, indent=1))
    return text


def read_choices(folder: Path, bases: Sequence[str] = BASES) -> Dict[Tuple[str, str], Dict]:
    """The validation plan's choice of every base of ``bases`` + memory; ``SystemExit``
    naming the command when one is missing."""
    choices = {}
    for base in bases:
        for memory in MEMORIES:
            path = chosen_path(folder, base, memory)
            if not path.is_file():
                raise SystemExit(f"{path} not found: run this script with --plan validation "
                                 f"first (or pass --choices with its folder)")
            choices[base, memory] = json.loads(path.read_text())
    return choices


def run_test(args) -> str:
    choices = read_choices(args.choices, args.bases)
    return write_test(args, execute(args, "test", test_groups(args, choices)), choices)


# ------------------------------------------------------------------------ main
def _training(args, training: Dict) -> Dict:
    """The recipe ablation's training settings (``--smoke``: 1 epoch)."""
    return dict(training, epochs=SMOKE["epochs"]) if args.smoke else dict(training)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = make_parser(__doc__, "test", 200)
    p.add_argument("--plan", choices=("validation", "test"), required=True)
    p.add_argument("--val-per-class", type=int, default=100,
                   help="validation images per class (default: %(default)s)")
    p.add_argument("--seeds-1pct", type=int, nargs="+", default=None,
                   help="seeds of the test plan's 1%% rows and bases alone (default: 0-9; "
                        "fmnist_pretrained: --seeds)")
    p.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="test plan budgets (default: 0.01 0.05; fmnist_pretrained: 0.01)")
    p.add_argument("--recipe", type=Path, default=None,
                   help="the recipe ablation's chosen.json (default: its results folder)")
    p.add_argument("--choices", type=Path, default=None,
                   help="folder of the validation plan's chosen_*.json (default: --out)")
    p.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES),
                   help="the rehearsal-free methods to run, in table order (default: all; a "
                        "later run with all of them rewrites the tables from the stored runs)")
    p.add_argument("--validation-budgets", type=float, nargs="+",
                   default=list(VALIDATION_BUDGETS),
                   help="budgets the validation plan chooses on (mean over them; default: "
                        "%(default)s)")
    p.add_argument("--smoke", action="store_true", help="a tiny run of the plan (see above)")
    p.set_defaults(seeds=None)
    args = p.parse_args(argv)
    args.n_experiences = 5
    args.bases = [b for b in BASES if b in args.bases]
    bad = [r for r in args.validation_budgets if not 0 < r <= 1]
    if bad:
        p.error(f"--validation-budgets {bad}: a budget is a share of the training data in "
                f"(0, 1], e.g. 0.01 for 1%")
    if args.smoke:
        args.out = args.out or RESULTS / f"{args.benchmark}_smoke"
        for k in ("n_experiences", "train_per_class", "val_per_class", "test_per_class",
                  "validation_budgets"):
            setattr(args, k, SMOKE[k])
        args.seeds, args.seeds_1pct = (args.seeds or SMOKE["seeds"],
                                       args.seeds_1pct or SMOKE["seeds_1pct"])
    if args.backbone and args.out is None:
        args.out = RESULTS / args.backbone
    args = finish_args(args, RESULTS)
    if args.seeds is None:
        args.seeds = list(VALIDATION_SEEDS if args.plan == "validation" else TEST_SEEDS)
    if args.seeds_1pct is None:
        args.seeds_1pct = list(SEEDS_1PCT if args.benchmark == "cluttered_fmnist" else args.seeds)
    args.budgets = args.budgets or list(TEST_BUDGETS[args.benchmark])
    args.recipe = args.recipe or HERE / "recipe_ablation" / args.benchmark / "chosen.json"
    args.choices = args.choices or args.out
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.plan == "test":
        print(run_test(args))
        return
    if not args.recipe.is_file():
        raise SystemExit(f"{args.recipe} not found: run experiments/recipe_ablation.py "
                         f"--benchmark {args.benchmark} first (it chooses the core tokenset)")
    print(run_validation(args, json.loads(args.recipe.read_text())))


if __name__ == "__main__":
    main()
