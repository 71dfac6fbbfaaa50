"""Cost of matched token dropout: training-step time against random dropout, in one run.

Cluttered Fashion-MNIST with the shipped ``vit_clutter_tiny`` (T = 64), the chosen training
settings (Adam 1e-4, batch 64), a 1% core tokenset filled from the first experience (so
every step also replays memory), then the second experience trained for ``--epochs`` epochs
with each dropout: random (the paper) and matched to the memory's scorer (rollout, GradLRP,
AtMan) with scores computed every step, once per epoch or once per experience. Every
setting starts from the same model and memory; the time per step includes the scoring
passes of the epoch/experience refreshes. Settings are timed in interleaved rounds
(``--rounds``) and the median per setting is reported, as a ratio to random dropout
measured in the same round, beside the validation accuracy each setting reached in the
recipe ablation (``recipe_ablation.py --plan matched``). Writes ``dropout_cost.{json,md}``::

    python experiments/dropout_cost.py       # about 25 minutes on one free CPU core
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List

import torch

from avalanche.training import Naive

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.benchmarks import cluttered_fashion_mnist
from avalanche_cts.harness.pretrain import BACKBONES, load_pretrained

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = [("random", "random", "step")] + [
    (scorer, "matched", refresh) for scorer in ("rollout", "gradlrp", "atman")
    for refresh in ("step", "epoch", "experience")]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=4,
                   help="epochs per experience (the chosen training: 4)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--ablation", type=Path,
                   default=RESULTS / "recipe_ablation" / "cluttered_fmnist" / "matched.csv",
                   help="the recipe ablation's rows, for the accuracy column")
    p.add_argument("--table-only", action="store_true",
                   help="only rewrite dropout_cost.md from dropout_cost.json")
    return p.parse_args()


def _plugin(scorer: str, tokens: str, refresh: str, memory: CoreTokensetBuffer):
    return CoreTokensetReplayPlugin(copy.deepcopy(memory), replay_mode="zero",
                                    dropout_tokens=tokens, dropout_refresh=refresh,
                                    dropout_scorer=scorer if tokens == "matched" else None, seed=0)


def time_setting(model, memory, exp, setting, epochs: int) -> Dict:
    """Seconds per training step of one setting (fresh copies of model and memory)."""
    scorer, tokens, refresh = setting
    m = copy.deepcopy(model)
    plugin = _plugin(scorer, tokens, refresh, memory)
    strategy = Naive(model=m, optimizer=torch.optim.Adam(m.parameters(), 1e-4),
                     train_mb_size=64, train_epochs=epochs, eval_mb_size=512,
                     plugins=[plugin], evaluator=None)
    plugin.after_training_exp = lambda *a, **k: None  # time training only, not memory writes
    torch.manual_seed(0)
    t0 = time.perf_counter()
    strategy.train(exp)
    seconds = time.perf_counter() - t0
    steps = strategy.clock.train_exp_iterations
    return dict(seconds=seconds, steps=steps, scored_images=plugin.dropout.scored_images)


def main() -> None:
    args = parse_args()
    if args.table_only:
        print(write_table(args.out, args.ablation))
        return
    torch.set_num_threads(args.threads)
    spec = BACKBONES["cluttered_fmnist"]
    model = load_pretrained(spec, num_classes=10, seed=0)
    bm = cluttered_fashion_mnist(5, seed=0, train_per_class=args.train_per_class,
                                 test_per_class=10, heldout_per_class=spec.heldout_per_class,
                                 normalization=model)
    exps = list(bm.train_stream)
    memory = CoreTokensetBuffer(budget_fraction=0.01, token_retention=0.01 ** (1 / 3),
                                selector="herding", scorer="rollout", token_choice="topk")
    first = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-4),
                  train_mb_size=64, train_epochs=1, eval_mb_size=512,
                  plugins=[CoreTokensetReplayPlugin(memory, replay_mode="zero", seed=0)],
                  evaluator=None)
    first.train(exps[0])
    print(f"memory: {memory}", flush=True)
    rows: Dict[tuple, List[Dict]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for s in SETTINGS:
            res = time_setting(model, memory, exps[1], s, args.epochs)
            rows[s].append(res)
            print(f"round {r + 1}: {s}: {res['seconds'] / res['steps']:.3f} s/step", flush=True)
    out = []
    for s in SETTINGS:
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(rows[s], rows[SETTINGS[0]])]
        per_step = [a["seconds"] / a["steps"] for a in rows[s]]
        out.append(dict(scorer=s[0], dropout_tokens=s[1], dropout_refresh=s[2],
                        seconds_per_step=statistics.median(per_step),
                        ratio_to_random=statistics.median(ratios),
                        ratio_min=min(ratios), ratio_max=max(ratios),
                        scored_images_per_experience=rows[s][0]["scored_images"],
                        steps=rows[s][0]["steps"]))
    info = dict(device=f"cpu x{args.threads} thread(s)", model=spec.model, benchmark="cluttered_fmnist",
                train_images=len(exps[1].dataset), epochs=args.epochs, batch=64, rounds=args.rounds,
                memory_records=memory.num_records)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dropout_cost.json").write_text(json.dumps(dict(info, rows=out), indent=1))
    print(write_table(args.out, args.ablation))


def _accuracy(ablation: Path) -> Dict[tuple, str]:
    """Validation accuracy (1% / 5%, mean over seeds) of the ablation rows that used each
    setting: the dropout stage (zero fill) for random and rollout dropout, the scorer stage
    (the chosen replay mode) for every scorer at the chosen refresh."""
    import csv

    rows = list(csv.DictReader(ablation.open()))
    chosen = json.loads((ablation.parent / "chosen.json").read_text())["recipe"]

    def cell(stage: str, label: str) -> str:
        vals = {b: [float(r["final_acc"]) for r in rows if r["stage"] == stage and
                    r["label"] == label and abs(float(r["budget"]) - b) < 1e-9] for b in (0.01, 0.05)}
        if not all(vals.values()):
            return "–"
        return " / ".join(f"{100 * statistics.fmean(v):.1f}" for v in vals.values()) + f" ({stage})"

    out = {("random", "random", "step"): cell("dropout", "random dropout")}
    for refresh in ("step", "epoch", "experience"):
        out[("rollout", "matched", refresh)] = cell("dropout", f"matched, scores every {refresh}")
    for scorer in ("gradlrp", "atman"):
        out[(scorer, "matched", chosen["dropout_refresh"])] = cell("scorer", f"scorer {scorer}")
    return out


def write_table(out_dir: Path, ablation: Path) -> str:
    """``dropout_cost.md`` from ``dropout_cost.json`` and, when it exists, the validation
    accuracy of each setting from the recipe ablation's ``matched.csv``."""
    res = json.loads((out_dir / "dropout_cost.json").read_text())
    acc = _accuracy(ablation) if ablation.is_file() else {}
    lines = [f"# Matched dropout: cost per training step ({res['device']}, {res['model']}, "
             f"{res['train_images']} images x {res['epochs']} epochs, batch 64, median of "
             f"{res['rounds']} interleaved rounds)", "",
             "| new data dropped by | scores computed | s / step | x random dropout (min-max) "
             "| images scored per experience | validation accuracy % 1% / 5% (ablation stage) |",
             "|---|---|---|---|---|---|"]
    for row in res["rows"]:
        key = (row["scorer"], row["dropout_tokens"], row["dropout_refresh"])
        by = "random tokens" if row["dropout_tokens"] == "random" else f"{row['scorer']} (matched)"
        when = "–" if row["dropout_tokens"] == "random" else f"every {row['dropout_refresh']}"
        lines.append(f"| {by} | {when} | {row['seconds_per_step']:.3f} | "
                     f"{row['ratio_to_random']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) "
                     f"| {row['scored_images_per_experience']} | {acc.get(key, '–')} |")
    text = "\n".join(lines) + "\n"
    (out_dir / "dropout_cost.md").write_text(text)
    return text

if __name__ == "__main__":
    main()
