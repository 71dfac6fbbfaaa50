"""The partial-input recipe, decided by measurement on the validation split.

Staged searches on an embedded benchmark (``--benchmark cluttered_fmnist`` or
``fmnist_pretrained``), every run on validation images held out from the stream's training
pool (never the test set), final average accuracy after 5 experiences x 2 classes. Each
stage starts from the best setting so far (mean over its budgets and seeds) and varies one
lever; core tokensets run at 1% and 5% of the bytes. Two plans:

``--plan paper`` (3 seeds; writes ``chosen_paper.json`` and ``ablation.md``), from the
paper's recipe with GradLRP tokens:

0. ``train``: optimiser settings for every method, chosen once: Adam at each learning rate x
   epochs, scored by the whole-sample coreset at 5% (the reference the method must beat).
1. ``mode``: replay of stored tokens: zero fill (0 in normalised space), sparse, mask token.
2. ``dropout``: token dropout on new data: off, fixed keep rate t (paper), per-sample keep
   rate in [t, 1], dropout on half of each batch.
3. ``choice``: which tokens: top-k by score, Gumbel top-k sampled from the scores, or compact
   (the disc of tokens around the spot whose 3 x 3 neighbourhood scores highest).
4. ``scorer``: random, rollout, GradLRP, AtMan tokens (random selector).
5. ``selector``: random, herding, GradMatch samples (best scorer).
6. ``split``: the sample/token split of a budget r, t = r ** e for e in 1/3, 1/2, 2/3.

``--plan matched`` (5 seeds; writes ``chosen.json``, which ``accuracy_vs_bytes.py`` reads,
and ``matched.md``), from ``chosen_paper.json`` with its training settings:

1. ``dropout``: which tokens dropped new data keeps: random (the paper), or matched to the
   memory (its scorer and token choice on the batch) with scores computed every step, every
   epoch or once per experience. The cheapest setting within ``TOLERANCE`` of the best is
   chosen (cost: random < experience < epoch < step). Controls at the chosen setting, not
   candidates: the whole-sample coreset (t = 1) with new data dropped to the core tokenset's
   keep rate t at random and matched to rollout, and a core tokenset with random memory
   tokens with new data dropped at random and by rollout.
2. ``mode``, 3. ``choice``, 4. ``scorer`` (AtMan's matched scores are computed once per
   experience when the chosen refresh is every step or epoch: T + 1 forwards per image),
   5. ``selector`` (random, herding, GradMatch samples), 6. ``split`` as above and e = 1/4
   (fewer samples with more tokens each), 7. ``weight``: the memory-loss weight alone (0.5,
   1, 2, 3, 4), 8. ``memory``: memory rows per step (32, 64, 128) at the memory loss weight chosen,
   9. ``new data``: how much of the new data the matched dropout keeps (a plasticity lever: t on
   every sample, a rate per sample in [t, 1], t on half of each batch with the rest whole),
   10. ``loss``: new data's cross-entropy over every class or over its own experience's
   classes (ER-ACE, ``CoreTokensetReplayPlugin(new_data_loss="local")``), or over its
   classes with class-balanced rows of it also in the memory's all-class loss (as ER-ACE's
   buffer holds the current task, ``new_data_loss="balanced"``), chosen for the
   core tokenset and, by the same rule, for the whole-sample coreset (tested as
   ``--inference`` says); the coreset's choice lands in ``chosen.json`` under ``coreset``,
   which ``accuracy_vs_bytes.py`` applies to its coreset rows. 11. ``augment``: replayed
   records as stored, mirrored with probability 0.5, moved by up to 2 whole tokens along each
   grid axis, or both (``CoreTokensetReplayPlugin(replay_shift=, replay_flip=)``); for the
   coreset, whose whole-image records cannot move, as stored or mirrored, chosen for it by
   the same rule as its loss. 12. ``head``: the classifier head's learning rate as a
   multiple of the backbone's (1, 3, 10, 30, 100x). 13. ``training``: the backbone's
   learning rate and the epochs per experience (1e-4 with 2, 3, 4, 6 or 8 epochs; 2.5e-5
   with 4 or 8; 5e-5 or 2e-4 with 4).
   Stages 12-13 are chosen for each method by the same rule; a value both choose becomes
   every row's training setting (``chosen.json``'s ``training``, the references' too).
   ``--start chosen.json`` re-chooses some stages from a recipe already chosen (e.g. on
   another backbone: ``--backbone NAME --start results/recipe_ablation/<benchmark>/chosen.json
   --stages weight "new data"``); its ``chosen.json`` lands in the backbone's folder.
   ``--tag T`` names a further round's files ``matched_T.md``, ``matched_T.csv`` and
   ``chosen_T.json`` (and the inference plan's ``inference_T.*``), so an earlier round's
   report stays, while its runs are reused. ``--only LABEL ...`` runs only those options of
   the stages run, beside the option the recipe already has (its reference row).

``--plan inference`` (5 seeds; writes ``inference.json``, which ``accuracy_vs_bytes.py``
reads, and ``inference.md``), from ``chosen.json`` (or the recipe ``--start`` names): how each method classifies test images,
whole or from its top tokens by rollout of the current model, fed in the recipe's replay
mode (mask token, zero fill or sparse; recorded in ``inference.json``), at
t = the memory's keep rate r^e or 50%, for the core tokenset and the whole-sample coreset at
1% and 5%; the cheapest option within ``TOLERANCE`` of the best is chosen per method (a rule,
so it applies at every budget). ``--plan composite`` (5 seeds; ``composite.md``): replayed samples that look whole, each memory
record written into a new-data scene whose own top tokens are removed
(``CoreTokensetReplayPlugin(composite=True)``), new data trained whole or dropped as the
recipe says, against the chosen recipe; control: random memory tokens composited alike (``--only``
runs some of those rows).
``--backbone NAME`` runs any plan on another embedded
pretraining (results in ``results/recipe_ablation/NAME``; the recipe is read from the
benchmark's folder).

The paper and matched plans run the references once (whole-sample coreset and Avalanche's replay, naive,
cumulative; the matched plan: the coreset at 1, 2 and 5%, naive and cumulative). Every
core-tokenset run records the share of its stored tokens that fall on the object (Cluttered
Fashion-MNIST) and checks the provenance of every stored record; reports show final
accuracy and the plasticity (mean accuracy on each task right after training on it, the
first excluded). Runs are resumable and never reused for other settings
(``<out>/runs/<run>/result.json``)::

    python experiments/recipe_ablation.py --benchmark cluttered_fmnist --plan matched --jobs 2
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from avalanche_cts.harness.config import RunConfig, fingerprint
from avalanche_cts.harness.execute import execute_cells
from avalanche_cts.harness.grid import Cell
from avalanche_cts.harness.options import option_keys
from avalanche_cts.harness.pretrain import PRESET_BACKBONES
from avalanche_cts.harness.report import aggregate, plasticity, plot_accuracy_vs_memory, write_csv

from common import (BASE_SETTINGS, MODELS, PEFT, finish_args, inference_at, inference_mode,
                    make_parser)

RESULTS = Path(__file__).resolve().parent / "results" / "recipe_ablation"
LRS = (1e-4, 3e-4, 1e-3)
EPOCHS = (2, 4)
STAGE_BUDGETS = (0.01, 0.05)
REFERENCE_BUDGETS = (0.01, 0.05, 0.2)
MATCHED_REFERENCE_BUDGETS = (0.01, 0.02, 0.05)

MODE_OPTIONS = [(f"replay {m}", dict(replay_mode=m)) for m in ("zero", "sparse", "mask")]
CHOICE_OPTIONS = [("top-k", dict(token_choice="topk")), ("Gumbel top-k", dict(token_choice="gumbel")),
                  ("compact", dict(token_choice="compact"))]
SCORER_OPTIONS = [(f"scorer {s}", dict(scorer=s)) for s in ("random", "rollout", "gradlrp", "atman")]
SELECTOR_OPTIONS = [(f"selector {s}", dict(selector=s)) for s in ("random", "herding", "gradmatch")]
"""Stages both plans share."""

# each stage: (name, [(label, RunConfig changes)])
STAGES: List[Tuple[str, List[Tuple[str, Dict]]]] = [
    ("mode", MODE_OPTIONS),
    ("dropout", [("dropout off", dict(dropout=1.0)),
                 ("dropout fixed t", dict(dropout=None, dropout_schedule="fixed",
                                          dropout_fraction=1.0)),
                 ("dropout uniform [t, 1]", dict(dropout=None, dropout_schedule="uniform",
                                                 dropout_fraction=1.0)),
                 ("dropout t on half", dict(dropout=None, dropout_schedule="fixed",
                                            dropout_fraction=0.5))]),
    ("choice", CHOICE_OPTIONS),
    ("scorer", SCORER_OPTIONS),
    ("selector", SELECTOR_OPTIONS),
    ("split", [(f"t = r^{e:.2g}", dict(retention_exponent=e)) for e in (1 / 3, 0.5, 2 / 3)]),
]
START = dict(BASE_SETTINGS, method="core_tokenset", scorer="gradlrp")
"""The paper's recipe (zero fill, dropout at keep rate t, top-k tokens) with GradLRP tokens."""

MATCHED_SEEDS = (0, 1, 2, 3, 4)
TOLERANCE = 0.01
"""A cheaper dropout or inference setting within this much final accuracy of the best is
chosen."""
_REFRESH_COST = {"random": 0, "experience": 1, "epoch": 2, "step": 3}


def _weight(weight: float) -> Dict:
    """The memory-loss weight (1, the plugin's default, removes a weight the start recipe
    sets, so the settings of a weight-1 run do not depend on where the stage started)."""
    return dict(options={"plugin": {"mem_weight": None if weight == 1.0 else weight}})


def _loss(kind: str) -> Dict:
    """New data's cross-entropy: over every class (``"all"``, the plugin's default, removes a
    setting the start recipe has), over its experience's classes (``"local"``, ER-ACE), or
    that with class-balanced rows also in the memory's loss (``"balanced"``)."""
    return dict(options={"plugin": {"new_data_loss": None if kind == "all" else kind}})


LOSS_OPTIONS = [("new data: cross-entropy over every class", _loss("all")),
                ("new data: over its experience's classes (ER-ACE)", _loss("local")),
                ("new data: over its classes, and class-balanced rows over every class in the "
                 "memory's loss", _loss("balanced"))]


def _aug(flip: float, shift: int) -> Dict:
    """Replayed records mirrored with probability ``flip`` and moved by up to ``shift``
    tokens (0: the plugin's default, no setting)."""
    return dict(options={"plugin": {"replay_flip": flip or None, "replay_shift": shift or None}})


AUGMENT_OPTIONS = [("records replayed as stored", _aug(0, 0)),
                   ("records mirrored (p = 0.5)", _aug(0.5, 0)),
                   ("records moved by up to 2 tokens", _aug(0, 2)),
                   ("records mirrored (p = 0.5) and moved by up to 2 tokens", _aug(0.5, 2))]

WEIGHT_OPTIONS = [(f"memory weight {w:g}", _weight(w)) for w in (0.5, 1.0, 2.0, 3.0, 4.0)]

HEAD_OPTIONS = [(f"head learning rate x{s:g}", dict(head_lr_scale=float(s)))
                for s in (1, 3, 10, 30, 100)]
"""The classifier head's learning rate as a multiple of the backbone's (``head_lr_scale``)."""
TRAINING_OPTIONS = [(f"lr {lr:g}, {epochs} epochs", dict(lr=lr, epochs=epochs))
                    for lr, epochs in ((1e-4, 2), (1e-4, 3), (1e-4, 4), (1e-4, 6), (1e-4, 8),
                                       (2.5e-5, 4), (2.5e-5, 8), (5e-5, 4), (2e-4, 4))]
"""The backbone's learning rate and the epochs per experience (stage 0 of the paper plan chose
them once, for the 5% coreset, before the head trained faster than the backbone)."""
TRAINING_FIELDS = ("head_lr_scale", "lr", "epochs")
"""Training settings chosen per method; where the core tokenset and the coreset choose the
same value it becomes every row's (``chosen.json``'s ``training``)."""

CORESET_STAGES: Dict[str, List[Tuple[str, Dict]]] = {
    "head": HEAD_OPTIONS,
    "training": TRAINING_OPTIONS,
    "weight": WEIGHT_OPTIONS,
    "loss": LOSS_OPTIONS,
    "augment": AUGMENT_OPTIONS[:2],
}
"""Stages chosen for the whole-sample coreset too, by the same rule (its options)."""

MATCHED_STAGES: List[Tuple[str, List[Tuple[str, Dict]]]] = [
    ("dropout", [("random dropout", dict(dropout_tokens="random"))] + [
        (f"matched, scores every {r}", dict(dropout_tokens="matched", dropout_refresh=r))
        for r in ("step", "epoch", "experience")]),
    ("mode", MODE_OPTIONS),
    ("choice", CHOICE_OPTIONS),
    ("scorer", SCORER_OPTIONS),
    ("selector", SELECTOR_OPTIONS),
    ("split", [(f"t = r^{e:.2g}", dict(retention_exponent=e)) for e in (0.25, 1 / 3, 0.5, 2 / 3)]),
    ("weight", WEIGHT_OPTIONS),
    ("memory", [(f"memory batch {b}", dict(batch_size_mem=b)) for b in (32, 64, 128)]),
    ("new data", [("keep rate t on every new sample", dict(dropout_schedule="fixed",
                                                            dropout_fraction=1.0)),
                  ("keep rate per sample in [t, 1]", dict(dropout_schedule="uniform",
                                                          dropout_fraction=1.0)),
                  ("keep rate t on half of each batch", dict(dropout_schedule="fixed",
                                                             dropout_fraction=0.5))]),
    ("loss", LOSS_OPTIONS),
    ("augment", AUGMENT_OPTIONS),
    ("head", HEAD_OPTIONS),
    ("training", TRAINING_OPTIONS),
]


INFERENCE_METHODS = {"core tokenset": "recipe", "coreset (ours, t = 1)": dict(method="coreset")}
"""Methods whose inference is chosen (``"recipe"``: the chosen core-tokenset recipe)."""
INFERENCE_OPTIONS = {"whole": "whole", "top t = r^e": "t", "top 50%": 0.5}
"""Label -> inference rule (:func:`common.inference_at`); cheapest first. Tokens by rollout
of the current model, fed in the recipe's replay mode (mask token, zero fill or sparse), the
form the core tokenset trains on."""


_COMPOSITE = {"plugin": {"composite": True}}
COMPOSITE_ROWS: List[Tuple[str, Dict]] = [
    ("core tokenset (chosen recipe)", {}),
    ("composite replay, new data whole", dict(dropout=1.0, options=_COMPOSITE)),
    ("composite replay, new data dropped as the recipe", dict(options=_COMPOSITE)),
    ("control: random memory tokens, composite replay (scene tokens removed by rollout), new "
     "data whole", dict(scorer="random", dropout=1.0, options={
         "plugin": {"composite": True, "composite_scorer": "rollout"}})),
]
"""Rows of the composite plan: changes to the chosen recipe."""


def _bench(args, seed: int) -> Dict:
    return dict(name=args.benchmark, n_experiences=5, seed=seed, validation=True,
                train_per_class=args.train_per_class, test_per_class=args.val_per_class,
                heldout_per_class=PRESET_BACKBONES[MODELS[args.benchmark]].heldout_per_class)


Group = Tuple[str, RunConfig, Sequence[float], Optional[Callable[[float], Dict]]]
"""(label, settings, budgets, per-budget changes or None)."""


def _cells(args, label: str, base: RunConfig, budgets: Sequence[float],
           per_budget: Optional[Callable[[float], Dict]] = None) -> List[Cell]:
    cells = []
    for seed in args.seeds:
        for r in budgets:
            cfg = replace(base, budget=r, seed=seed, **(per_budget(r) if per_budget else {}))
            # named by the settings: a setting shared by two stages runs once
            key = f"{cfg.method}-r{r:g}-s{seed}-{fingerprint(cfg.shaping())[:10]}"
            cells.append(Cell(len(cells), key, cfg, _bench(args, seed), dict(label=label)))
    return cells


def _run(args, groups: Sequence) -> Dict[str, List[Dict]]:
    """Run every group (:data:`Group`, the last item optional); return results by label."""
    cells, labels = [], []
    for label, cfg, budgets, *per_budget in groups:
        for c in _cells(args, label, cfg, budgets, *per_budget):
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


def _settings(*layers: Dict) -> Dict:
    """Later layers override earlier ones; ``options`` mappings merge one level deep (an
    option that is not a mapping, e.g. ``base``, is replaced; a value ``None`` removes the
    option, and a mapping left empty is dropped)."""
    out: Dict = {}
    for layer in layers:
        for k, v in layer.items():
            if k == "options":
                merged = {n: dict(o) if isinstance(o, dict) else o
                          for n, o in out.get("options", {}).items()}
                for n, o in v.items():
                    merged[n] = dict(merged.get(n, {}), **o) if isinstance(o, dict) else o
                    if isinstance(o, dict):
                        merged[n] = {m: x for m, x in merged[n].items() if x is not None}
                out["options"] = {n: o for n, o in merged.items() if o != {}}
            else:
                out[k] = v
    return out


def _base(args, *layers: Dict) -> RunConfig:
    """A run's settings: ``BASE_SETTINGS``, then ``layers``; the memories record where each
    record came from (``keep_sources``, not counted in the bytes) when the method has one."""
    method = _settings(BASE_SETTINGS, *layers).get("method", RunConfig.method)
    valid = option_keys(method)
    sources = {"options": {"buffer": {"keep_sources": True}}} \
        if valid is None or "buffer" in valid else {}
    settings = _settings(BASE_SETTINGS, sources, *layers)
    return RunConfig(model=MODELS[args.benchmark], pretrained=True, batch_size=64,
                     backbone=args.backbone, **settings)


def _shared_training(train: Dict, recipe: Dict, coreset: Optional[Dict]) -> Dict:
    """``train`` with the training settings that both methods chose alike on their own
    (:data:`TRAINING_FIELDS`), so that every row of the test table, the references
    included, trains with them."""
    coreset = coreset or {}
    shared = {k: recipe[k] for k in TRAINING_FIELDS
              if k in recipe and recipe[k] == coreset.get(k)}
    return dict(train, **shared)


def choose_training(args) -> Tuple[Dict, Dict[str, List[Dict]]]:
    """Stage 0: the learning rate and epochs that serve the 5% coreset best."""
    print("stage train: optimiser settings, scored by the 5% coreset")
    groups = [(f"train lr {lr:g} e{ep}", _base(args, dict(lr=lr, epochs=ep, method="coreset")),
               (0.05,)) for lr in LRS for ep in EPOCHS]
    res = _run(args, groups)
    best = max(res, key=lambda k: _score(res[k]))
    cfg = res[best][0]["config"]
    return dict(lr=cfg["lr"], epochs=cfg["epochs"], optimizer=cfg["optimizer"]), res


def _plasticity(results: List[Dict]) -> float:
    return statistics.fmean(plasticity(r["acc_matrix"]) for r in results)


def _pick(stage: str, options: List[Tuple[str, Dict]], res: Dict[str, List[Dict]],
          floor: Optional[float] = None) -> Tuple[str, Dict]:
    """The best option by mean final accuracy; with a plasticity ``floor`` (a share, 0-1),
    the best of the options whose mean plasticity reaches it (all options when none does);
    in the matched plan's dropout stage the cheapest within :data:`TOLERANCE` of the best."""
    if floor is not None:
        options = [o for o in options if _plasticity(res[o[0]]) >= floor] or options
    best = max(options, key=lambda o: _score(res[o[0]]))
    if stage != "dropout" or "dropout_tokens" not in best[1]:
        return best

    def cost(o):
        c = o[1]
        return _REFRESH_COST["random" if c["dropout_tokens"] == "random" else c["dropout_refresh"]]

    near = [o for o in options if _score(res[o[0]]) >= _score(res[best[0]]) - TOLERANCE]
    return min(near, key=cost)


def _stage_options(stage: str, options: List[Tuple[str, Dict]], current: Dict
                   ) -> List[Tuple[str, Dict]]:
    """AtMan's matched scores once per experience when the recipe scores more often."""
    if stage != "scorer" or current.get("dropout_tokens") != "matched" or \
            current.get("dropout_refresh") == "experience":
        return options
    return [(f"{label} (matched scores once per experience)",
             dict(change, dropout_refresh="experience")) if change.get("scorer") == "atman"
            else (label, change) for label, change in options]


def _only(args, options: List[Tuple[str, Dict]], current: Dict) -> List[Tuple[str, Dict]]:
    """``options`` that ``--only`` names, and the one ``current`` already has (the stage's
    reference row); all of them without ``--only``."""
    if not args.only:
        return options
    return [(label, change) for label, change in options
            if label in args.only or _settings(current, change) == current]


def run_stages(args, train: Dict, start: Dict, stages: List[Tuple[str, List[Tuple[str, Dict]]]]
               ) -> Tuple[Dict, List[Tuple[str, Dict[str, List[Dict]]]]]:
    """One lever at a time from the best setting so far."""
    current = dict(start)
    log = []
    by_name = dict(stages)
    for stage in args.stages or list(by_name):
        options = _only(args, _stage_options(stage, by_name[stage], current),
                        _settings(train, current))
        print(f"stage {stage}: " + ", ".join(label for label, _ in options))
        groups = [(label, _base(args, train, current, change), STAGE_BUDGETS)
                  for label, change in options]
        res = _run(args, groups)
        best = _pick(stage, options, res, args.plasticity_floor)
        current = _settings(current, best[1])
        print(f"  chosen: {best[0]} ({100 * _score(res[best[0]]):.1f}, plasticity "
              f"{100 * _plasticity(res[best[0]]):.1f})")
        log.append((stage, res))
        if stage == "dropout" and args.plan == "matched":
            log.append(("dropout controls", run_controls(args, train, current)))
        if stage in CORESET_STAGES:
            options = _only(args, CORESET_STAGES[stage],
                            _settings(train, dict(method="coreset"), args.coreset or {}))
            res = run_coreset_options(args, train, current, options)
            label, change = _pick(stage, [(f"coreset, {k}", c) for k, c in options], res,
                                  args.plasticity_floor)
            # None removed: a default is no setting; earlier stages' choices stay
            merged = _settings(args.coreset or {}, change)
            args.coreset = {k: v for k, v in merged.items() if v} or None
            print(f"  coreset: {label}")
            log.append((f"{stage}, coreset", res))
    return current, log


def run_coreset_options(args, train: Dict, current: Dict, options: List[Tuple[str, Dict]]
                        ) -> Dict[str, List[Dict]]:
    """The whole-sample coreset with each of a :data:`CORESET_STAGES` stage's ``options``
    on top of its choices so far (a method's loss or augmentation is chosen for it alone, as
    its inference is), tested as ``--inference`` says."""
    e = current["retention_exponent"]
    rules = json.loads(args.inference.read_text()) if args.inference else {}
    rule = rules.get("coreset (ours, t = 1)", {}).get("rule", "whole")
    return _run(args, [(f"coreset, {label}",
                        _base(args, train, dict(method="coreset"), args.coreset or {}, change),
                        STAGE_BUDGETS, lambda r: dict(inference=inference_at(rule, r, e)))
                       for label, change in options])


def run_inference(args, train: Dict, recipe: Dict) -> Tuple[Dict, Dict[str, List[Dict]]]:
    """The inference plan: every method of :data:`INFERENCE_METHODS` with every option of
    :data:`INFERENCE_OPTIONS` (the coreset with its own choices, ``chosen.json``'s
    ``coreset``); returns ``({method: chosen label}, results by row label)``."""
    e, mode = recipe["retention_exponent"], inference_mode(recipe)
    groups = []
    for method, change in INFERENCE_METHODS.items():
        layer = recipe if change == "recipe" else \
            _settings(change, getattr(args, "coreset", None) or {})
        for option, rule in INFERENCE_OPTIONS.items():
            shape = {} if rule == "whole" else dict(inference_mode=mode)
            groups.append((f"{method}, {option}", _base(args, train, layer, shape),
                           STAGE_BUDGETS,
                           lambda r, rule=rule: dict(inference=inference_at(rule, r, e))))
    res = _run(args, groups)
    chosen = {}
    for method in INFERENCE_METHODS:
        scores = {o: _score(res[f"{method}, {o}"]) for o in INFERENCE_OPTIONS}
        best = max(scores.values())
        chosen[method] = next(o for o in INFERENCE_OPTIONS if scores[o] >= best - TOLERANCE)
    return chosen, res


def run_composite(args, train: Dict, recipe: Dict) -> Dict[str, List[Dict]]:
    """The composite plan: the chosen recipe against its memory replayed inside new-data
    scenes (:data:`COMPOSITE_ROWS`), whole-image inference."""
    return _run(args, [(label, _base(args, train, recipe, change), STAGE_BUDGETS)
                       for label, change in COMPOSITE_ROWS
                       if not args.only or label in args.only])


def write_plan(args, name: str, title: str, note: str, res: Dict[str, List[Dict]],
               footer: str = "") -> str:
    """``<name>.md``: a plan's table (mean ± std and plasticity per budget)."""
    lines = [f"# {title} on {args.benchmark} (validation split)", "",
             f"Final average accuracy and plasticity, %, mean ± std over seeds {args.seeds}; "
             f"backbone `{args.backbone or 'default'}`; {note}", ""]
    lines += _head(STAGE_BUDGETS) + [_row(k, v, STAGE_BUDGETS) for k, v in res.items()]
    text = "\n".join(lines + ["", footer, ""])
    (args.out / f"{name}.md").write_text(text)
    return text


def write_inference(args, mode: str, chosen: Dict[str, str], res: Dict[str, List[Dict]]) -> str:
    """``inference.md`` and ``inference.json`` of the inference plan."""
    (args.out / _named("inference", args.tag, ".json")).write_text(json.dumps(
        {m: dict(option=o, rule=INFERENCE_OPTIONS[o], mode=mode)
         for m, o in chosen.items()}, indent=1))
    return write_plan(
        args, _named("inference", args.tag, ""), "Inference of test images",
        f"recipe `{args.start_name}`; top tokens by rollout of the current model (no label), "
        f"fed as the recipe's replay mode ({mode}). Cost per "
        "test image against a whole forward: "
        "`experiments/results/inference_cost/inference_cost.md`.", res,
        f"Chosen (the cheapest option within {100 * TOLERANCE:g} points of the best): "
        + "; ".join(f"{m}: {o}" for m, o in chosen.items()))


def run_controls(args, train: Dict, current: Dict) -> Dict[str, List[Dict]]:
    """Is it the memory or the recipe? The whole-sample coreset with new data dropped to the
    core tokenset's keep rate (at random and matched to its scorer), and random memory
    tokens with new data dropped at random and by the scorer."""
    e, scorer = current["retention_exponent"], current["scorer"]
    refresh = current.get("dropout_refresh", "step")
    at_t = (lambda r: dict(dropout=r ** e))
    coreset = dict(method="coreset", selector="random")
    groups = [
        ("control: coreset, new data dropped at random to t",
         _base(args, train, current, coreset, dict(dropout_tokens="random")), STAGE_BUDGETS, at_t),
        (f"control: coreset, new data dropped by {scorer} to t",
         _base(args, train, current, coreset, dict(dropout_tokens="matched",
                                                   dropout_refresh=refresh)), STAGE_BUDGETS, at_t),
        ("control: random memory tokens, new data dropped at random",
         _base(args, train, current, dict(scorer="random", dropout_tokens="random")), STAGE_BUDGETS),
        (f"control: random memory tokens, new data dropped by {scorer}",
         _base(args, train, current, dict(scorer="random", dropout_tokens="matched",
                                          dropout_refresh=refresh,
                                          options={"plugin": {"dropout_scorer": scorer}})),
         STAGE_BUDGETS),
    ]
    return _run(args, groups)


def run_references(args, train: Dict) -> Dict[str, List[Dict]]:
    if args.plan == "matched":
        rows = (("coreset (ours, t = 1)", "coreset", MATCHED_REFERENCE_BUDGETS),
                ("naive", "naive", (0.0,)), ("cumulative", "cumulative", (0.0,)))
        return _run(args, [(name, _base(args, train, dict(method=m)), budgets)
                           for name, m, budgets in rows])
    groups = [(name, _base(args, dict(train, method=m)), budgets) for name, m, budgets in (
        ("coreset (ours, t = 1)", "coreset", REFERENCE_BUDGETS),
        ("Avalanche replay", "replay", REFERENCE_BUDGETS),
        ("naive", "naive", (0.0,)), ("cumulative", "cumulative", (0.0,)))]
    groups += [(name, _base(args, dict(train, **peft)), (0.0,)) for name, peft in PEFT.items()]
    return _run(args, groups)


def _cell(results: List[Dict], budget: float, metric: Callable[[Dict], float]) -> str:
    values = [metric(r) for r in results if abs(r["config"]["budget"] - budget) < 1e-9]
    if not values:
        return "–"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def _row(label: str, results: List[Dict], budgets: Sequence[float], columns: int = 0) -> str:
    """A table row: final accuracy and plasticity per budget (a row without memory, budgets
    ``(0.0,)``, fills the first column of each and leaves ``columns - 1`` blank)."""
    blank = [""] * max(0, columns - len(budgets))
    cells = [_cell(results, b, lambda r: r["final_acc"]) for b in budgets] + blank
    cells += [_cell(results, b, lambda r: plasticity(r["acc_matrix"])) for b in budgets] + blank
    hits = [r["memory_diagnostics"]["object_hit_rate"] for r in results
            if "object_hit_rate" in r.get("memory_diagnostics", {})]
    hit = f"{statistics.fmean(hits):.2f}" if hits else "–"
    return f"| {label} | " + " | ".join(cells) + f" | {hit} |"


def _head(budgets: Sequence[float]) -> List[str]:
    cols = [f"{100 * b:g}%" for b in budgets] + [f"plasticity {100 * b:g}%" for b in budgets]
    return ["| setting | " + " | ".join(cols) + " | on object |",
            "|---|" + "---|" * (len(cols) + 1)]


def write_report(args, train: Dict, train_res, stages, recipe: Dict, refs) -> str:
    matched = args.plan == "matched"
    lines = [f"# Recipe ablation on {args.benchmark} (validation split, plan {args.plan})", "",
             f"Final average accuracy and plasticity (mean accuracy on each task right after "
             f"training on it, the first excluded), %, mean ± std over seeds {args.seeds}; "
             f"5 x 2 classes, {args.train_per_class} training and {args.val_per_class} "
             f"validation images per class; pretrained {MODELS[args.benchmark]}. 'on object': "
             f"share of stored tokens on the object (random tokens: the object's share of the "
             f"image).", ""]
    if matched:
        lines += [f"Start (`{args.start_name}`): `{json.dumps(train)}`, "
                  f"`{json.dumps(args.start)}`.", ""]
    else:
        lines += ["## Stage 0: training settings (5% whole-sample coreset)", ""]
        lines += _head((0.05,))
        lines += [_row(k, v, (0.05,)) for k, v in train_res.items()]
        lines += ["", f"Chosen: Adam, lr {train['lr']:g}, {train['epochs']} epochs per experience.", ""]
    if args.plasticity_floor is not None:
        lines += [f"Each stage's option: the best mean final accuracy among the options whose "
                  f"mean plasticity is at least {100 * args.plasticity_floor:.1f}% (all when "
                  f"none is).", ""]
    for stage, res in stages:
        lines += [f"## Stage {stage}", ""] + _head(STAGE_BUDGETS)
        lines += [_row(k, v, STAGE_BUDGETS) for k, v in res.items()]
        lines.append("")
    plan_stages = MATCHED_STAGES if matched else STAGES
    skipped = [s for s, _ in plan_stages if s not in {stage for stage, _ in stages}]
    if skipped:
        lines += [f"Stages not run: {', '.join(skipped)} (they keep the start setting).", ""]
    budgets_ref = MATCHED_REFERENCE_BUDGETS if matched else REFERENCE_BUDGETS
    lines += ["## References (same training settings)", ""]
    if not refs:
        lines += ["Not run here (`--no-references`): `accuracy_vs_bytes.py` runs them on the "
                  "test split.", ""]
    else:
        lines += _head(budgets_ref)
    for k, v in refs.items():
        budgets = budgets_ref if v[0]["config"]["budget"] > 0 else (0.0,)
        lines.append(_row(k + ("" if budgets != (0.0,) else " (no memory)"), v, budgets,
                          len(budgets_ref)))
    lines += ["", "## Winning recipe", "", "```json", json.dumps(recipe, indent=1), "```"]
    text = "\n".join(lines) + "\n"
    report = _named("matched", args.tag, "") if matched else "ablation"
    (args.out / f"{report}.md").write_text(text)
    rows = [dict(stage=stage, label=r["label"], budget=r["config"]["budget"],
                 seed=r["config"]["seed"], final_acc=r["final_acc"],
                 plasticity=plasticity(r["acc_matrix"]),
                 object_hit_rate=r.get("memory_diagnostics", {}).get("object_hit_rate", ""))
            for stage, res in [("train", train_res)] + stages + [("reference", refs)]
            for rs in res.values() for r in rs]
    write_csv(args.out / f"{report}.csv", rows)
    coreset = {"coreset": args.coreset} if args.coreset else {}
    (args.out / (_named("chosen", args.tag, ".json") if matched else "chosen_paper.json")).write_text(
        json.dumps(dict(training=_shared_training(train, recipe, args.coreset), recipe=recipe,
                        **coreset), indent=1))
    if refs and not matched:
        ref_rows = aggregate([r for rs in refs.values() for r in rs], lambda r: r["label"])
        plot_accuracy_vs_memory(ref_rows, args.out / "references.png",
                                f"{args.benchmark}, validation split: references")
    return text


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = make_parser(__doc__, "val", 100)
    p.add_argument("--plan", choices=("paper", "matched", "inference", "composite"),
                   default="matched",
                   help="which staged search (see above; default: %(default)s)")
    p.add_argument("--stages", nargs="*",
                   choices=sorted({s for s, _ in STAGES} | {s for s, _ in MATCHED_STAGES}),
                   help="run only these stages of the plan, in this order (default: all, in "
                        "the order above; skipped ones keep the start setting)")
    p.add_argument("--start", type=Path, default=None,
                   help="matched plan: start the stages from this chosen.json (training and "
                        "recipe) instead of the benchmark's chosen_paper.json")
    p.add_argument("--tag", default=None, metavar="T",
                   help="matched and inference plans: write matched_T.md, chosen_T.json, "
                        "inference_T.json ... beside the earlier rounds' files (default: no tag)")
    p.add_argument("--only", nargs="+", metavar="LABEL",
                   help="composite plan: run only these rows; a plan with stages: only these "
                        "options of its --stages, beside the option the recipe already has "
                        "(default: all of them)")
    p.add_argument("--inference", type=Path, default=None,
                   help="inference.json whose coreset rule the loss stage's coreset rows are "
                        "tested with (default: whole images)")
    p.add_argument("--plasticity-floor", type=float, default=None, metavar="P",
                   help="choose each stage's option among those whose mean plasticity (a share, "
                        "0-1) is at least P, e.g. 0.8 x the reference coreset's on validation "
                        "(default: the best final accuracy alone)")
    p.add_argument("--no-references", dest="references", action="store_false",
                   help="skip the reference runs (accuracy_vs_bytes.py runs them on the test "
                        "split)")
    p.set_defaults(seeds=None)
    args = p.parse_args(argv)
    plan_stages = {"paper": STAGES, "matched": MATCHED_STAGES}.get(args.plan)
    unknown = [s for s in args.stages or () if plan_stages is None or s not in dict(plan_stages)]
    if unknown:
        p.error(f"--stages {' '.join(unknown)}: not a stage of --plan {args.plan} "
                + (f"(its stages: {', '.join(s for s, _ in plan_stages)})" if plan_stages else
                   "(it has no stages; leave --stages out)"))
    if args.plan == "composite":
        rows, what = [label for label, _ in COMPOSITE_ROWS], "rows of --plan composite"
    else:
        staged = dict(plan_stages or ())
        rows = [label for s in args.stages or staged for label, _ in staged.get(s, ())]
        what = f"options of the stages run ({' '.join(args.stages or staged) or 'none'})"
    if args.only and set(args.only) - set(rows):
        p.error(f"--only {' '.join(map(repr, sorted(set(args.only) - set(rows))))}: names no "
                f"{what}; valid: " + ", ".join(map(repr, rows)))
    if args.plasticity_floor is not None and not 0 <= args.plasticity_floor <= 1:
        p.error(f"--plasticity-floor is a share of new-task accuracy in [0, 1], got "
                f"{args.plasticity_floor:g} (e.g. 0.481 for 48.1%)")
    if args.tag is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.tag):
        p.error(f"--tag {args.tag!r}: use letters, digits, '_' or '-' (it names files)")
    if args.start is not None and not args.start.is_file():
        p.error(f"--start {args.start}: no such file; pass a chosen.json the matched plan wrote")
    if args.inference is not None and not args.inference.is_file():
        p.error(f"--inference {args.inference}: no such file; pass an inference.json the "
                f"inference plan wrote, or leave it out to test the coreset on whole images")
    args.coreset = None  # choices for the coreset (chosen.json's "coreset"; see main)
    args.recipe_dir = args.out or RESULTS / args.benchmark
    if args.backbone and args.out is None:
        args.out = RESULTS / args.backbone
    args = finish_args(args, RESULTS)
    if args.seeds is None:
        args.seeds = [0, 1, 2] if args.plan == "paper" else list(MATCHED_SEEDS)
    return args


def _project_path(path: Path) -> str:
    """``path`` relative to the project when it is inside it (reports name no machine's
    folders), else its name."""
    try:
        return str(path.resolve().relative_to(RESULTS.parents[2]))
    except ValueError:
        return path.name


def _named(stem: str, tag: Optional[str], suffix: str) -> str:
    """A report's file name: ``stem`` with ``_tag`` when a tag is given."""
    return f"{stem}{'' if tag is None else '_' + tag}{suffix}"


def _read(path: Path, plan: str) -> Dict:
    if not path.is_file():
        raise SystemExit(f"{path} not found: run this script with {plan} first")
    return json.loads(path.read_text())


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.plan in ("inference", "composite"):
        source = args.start or args.recipe_dir / "chosen.json"
        chosen = _read(source, "--plan matched")
        args.start_name = _project_path(source)
        train, recipe = chosen["training"], chosen["recipe"]
        args.coreset = chosen.get("coreset")  # the coreset is tested as it was chosen
        print(write_inference(args, inference_mode(recipe), *run_inference(args, train, recipe))
              if args.plan == "inference" else
              write_plan(args, _named("composite", args.tag, ""),
                         "Replayed samples that look whole",
                         f"recipe `{args.start_name}`; whole-image inference.",
                         run_composite(args, train, recipe)))
        return
    if args.plan == "paper":
        train, train_res = choose_training(args)
        print(f"training settings: {train}")
        recipe, stages = run_stages(args, train, START, STAGES)
    else:
        start = args.start or args.recipe_dir / "chosen_paper.json"
        chosen = _read(start, "--plan paper")
        args.start_name = start.name if args.start is None else _project_path(start)
        train, train_res, args.start = chosen["training"], {}, chosen["recipe"]
        args.coreset = chosen.get("coreset")  # a later round keeps the coreset's choices
        recipe, stages = run_stages(args, train, args.start, MATCHED_STAGES)
    refs = run_references(args, train) if args.references else {}
    print(write_report(args, train, train_res, stages, recipe, refs))


if __name__ == "__main__":
    main()
