"""The embedded vision-language job: sequential VQA and class-incremental captioning with a tiny
BLIP on generated scenes, core tokensets against a coreset and fine-tuning at equal bytes.

Streams (:mod:`avalanche_cts.benchmarks.vl.scenes`): VQA in three visually distinct tasks
(colour of a shape on texture, counting a shape on flat grey, what is left of a shape on dark;
exact match after the official VQA normalisation; one answer per question, so no soft
accuracy) and captioning in five class tasks (BLEU-4, ROUGE-L after COCO's PTB tokenisation).
The model is the pretrained ``blip_vqa_tiny`` / ``blip_caption_tiny`` (:mod:`.pretrain_vl`,
pretrained once and cached). Methods: naive fine-tuning (the floor), a whole-sample coreset
(``coreset``, t = 1) and core tokensets (``core_tokenset``) with random and GradLRP tokens, all
with the same selector and memory budget in bytes; optionally cumulative training (the ceiling).

Writes ``results.txt`` (table and task x task matrices), ``results.json``, ``results.csv``,
``vqa_matrices.png`` / ``caption_matrices.png`` (mean matrices) and
``caption_over_tasks.png`` (BLEU-4 and ROUGE-L on the tasks seen so far after each task).
Every run is saved (``<out>/<run>/result.json``, ``state.pt``): an interrupted job resumes; a run
is reused only when every setting that shaped it matches, the metrics' definitions included
(a result made with other metrics is refused: rerun it with ``--force``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

from ..memory.settings import check_retention
from . import METHODS
from .demo import add_recipe_arguments, recipe_settings

__all__ = ["VL_DEMO_METHODS", "add_arguments", "main"]

VL_DEMO_METHODS = ("naive", "coreset", "core_tokenset_random", "core_tokenset_gradlrp",
                   "cumulative")
_DEFAULT_METHODS = VL_DEMO_METHODS[:4]
_LABELS = {"naive": "naive", "cumulative": "cumulative", "coreset": "coreset (t = 1)",
           "core_tokenset_random": "core tokenset, random tokens",
           "core_tokenset_gradlrp": "core tokenset, GradLRP tokens"}
_STREAMS = {"vqa": ("scene_vqa", "blip_vqa_tiny"), "caption": ("scene_captions", "blip_caption_tiny")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The job's options (``avalanche-cts demo-vl --help`` shows them with their defaults)."""
    p.add_argument("--streams", nargs="+", default=["vqa", "caption"], choices=sorted(_STREAMS),
                   help="which streams")
    p.add_argument("--methods", nargs="+", default=list(_DEFAULT_METHODS),
                   choices=VL_DEMO_METHODS, metavar="METHOD",
                   help=f"methods, from {', '.join(VL_DEMO_METHODS)}")
    p.add_argument("--budget", type=float, default=0.1, metavar="R",
                   help="memory budget: fraction of the bytes of the images seen")
    p.add_argument("--token-retention", type=float, default=0.25, metavar="T",
                   help="tokens kept per stored sample by core tokensets (samples: R / T)")
    p.add_argument("--selector", default="gradmatch", help="sample selector of every memory")
    add_recipe_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S", help="seeds")
    p.add_argument("--vqa-train", type=int, default=600, help="training questions per VQA task")
    p.add_argument("--caption-train", type=int, default=400, help="training images per caption task")
    p.add_argument("--test", type=int, default=100, help="test items per task")
    p.add_argument("--vqa-epochs", type=int, default=10, help="epochs per VQA task")
    p.add_argument("--caption-epochs", type=int, default=8, help="epochs per captioning task")
    p.add_argument("--batch-size", type=int, default=32, help="new-data (and memory) batch")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    p.add_argument("--out", default="results/vl_demo", metavar="DIR", help="output folder")
    p.add_argument("--jobs", type=int, default=2, metavar="N",
                   help="runs in parallel, one process and one torch thread each")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--force", action="store_true", help="rerun every run, replacing stored results")


def demo_cells(args) -> List:
    """The job's runs as grid cells (one per stream, method and seed)."""
    from .config import RunConfig
    from .grid import Cell

    cells = []
    for stream in args.streams:
        bench_name, model = _STREAMS[stream]
        n_train = args.vqa_train if stream == "vqa" else args.caption_train
        epochs = args.vqa_epochs if stream == "vqa" else args.caption_epochs
        for seed in args.seeds:
            bench = dict(name=bench_name, n_train=n_train, n_test=args.test, seed=seed)
            for method in args.methods:
                base, _, scorer = method.partition("_tokenset_")
                kw = dict(method="core_tokenset" if scorer else base, scorer=scorer or "random")
                if scorer:
                    kw["token_retention"] = args.token_retention
                cfg = RunConfig(
                    budget=args.budget if METHODS.facts(kw["method"]).uses_memory else 0.0,
                    selector=args.selector, **recipe_settings(args), model=model,
                    pretrained=True, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                    optimizer="adamw", weight_decay=0.05, seed=seed, device=args.device,
                    eval_batch_size=100, **kw)
                key = f"{stream}-{method}-seed={seed}"
                cells.append(Cell(len(cells), key, cfg, bench, dict(method=method)))
    return cells


def _label(result: Dict) -> str:
    cfg = result["config"]
    if cfg["method"] == "core_tokenset":
        matched = cfg.get("dropout_tokens") == "matched" and cfg["scorer"] != "random"
        return _LABELS[f"core_tokenset_{cfg['scorer']}"] + (", new data matched" if matched else "")
    return _LABELS[cfg["method"]]


def _seen_curve(result: Dict, metric: str) -> List[float]:
    """Mean of ``metric`` over the tasks seen so far, after each task."""
    m = result["metric_matrices"][metric]
    return [sum(m[i][: i + 1]) / (i + 1) for i in range(len(m))]


def _metrics_note(runs: List[Dict], kind: str, soft: bool) -> str:
    """How the stream's numbers were computed (recorded in each run's settings)."""
    defined = "; ".join(sorted({v for r in runs
                                for v in r.get("settings", {}).get("metrics", {}).values()}))
    if kind == "caption":
        return f"metrics: {defined or 'not recorded'}"
    extra = ("soft acc: the official VQA accuracy" if soft
             else "no soft accuracy: one answer per question")
    return (f"metrics: {defined or 'not recorded'}; exact match of the normalised answer; "
            f"{extra}")


def write_report(results: List[Dict], out: Path) -> str:
    """Write the report files (module docstring); return the text report."""
    from .. import __version__
    from .._files import write_text
    from .report import aggregate, format_matrix, plot_matrices, plot_metric_over_tasks, write_csv

    text, summary = [], []
    for kind, name in (("vqa", "VQA exact match"), ("caption", "captioning BLEU-4")):
        runs = [r for r in results if r.get("kind") == kind]
        if not runs:
            continue
        rows = aggregate(runs, _label)
        extra = "VQA_SoftAcc" if kind == "vqa" else "ROUGE_L"
        for row in rows:
            mine = [r for r in runs if _label(r) == row["label"]]
            if all(extra in r.get("metric_summaries", {}) for r in mine):
                vals = [r["metric_summaries"][extra]["final_acc"] for r in mine]
                row[f"{extra}_final_mean"] = sum(vals) / len(vals)
            row["stream"] = kind
        soft = any(f"{extra}_final_mean" in row for row in rows)
        summary += rows
        text.append(f"{name} ({len(runs[0]['acc_matrix'])} tasks, mean over "
                    f"{rows[0]['n']} seed(s)):\n" + _table(rows, kind, soft)
                    + "\n" + _metrics_note(runs, kind, soft))
        text += [format_matrix(r) for r in rows]
        plot_matrices(rows, out / f"{kind}_matrices.png", f"{name}: task x task (mean over seeds)")
        if kind == "caption":
            curves = {lab: {m: [_seen_curve(r, m) for r in runs if _label(r) == lab]
                            for m in ("BLEU4", "ROUGE_L")} for lab in dict.fromkeys(map(_label, runs))}
            plot_metric_over_tasks(curves, out / "caption_over_tasks.png",
                                   "captioning: mean over the tasks seen so far")
    report = "\n\n".join(text)
    write_text(out / "results.txt", report + "\n")
    write_text(out / "results.json", json.dumps(dict(version=__version__, summary=summary,
                                                    runs=results), indent=1))
    rows = [{k: v for k, v in r.items() if k != "acc_matrix"} for r in summary]
    write_csv(out / "results.csv", rows, list(dict.fromkeys(k for r in rows for k in r)))
    return report


def _table(rows: List[Dict], kind: str, extra: bool) -> str:
    """The stream's table; ``extra``: a last column of soft accuracy (VQA) or ROUGE-L."""
    second = "soft acc" if kind == "vqa" else "ROUGE-L"
    key = "VQA_SoftAcc_final_mean" if kind == "vqa" else "ROUGE_L_final_mean"
    head = (f"{'method':<44}{'records':>8}{'bytes':>9}{'final':>15}{'avg inc':>15}"
            f"{'forgetting':>15}{'plasticity':>15}" + (f"{second:>10}" if extra else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [f"{100 * r[m + '_mean']:6.1f} ± {100 * r[m + '_std']:4.1f}"
                 for m in ("final_acc", "avg_inc_acc", "forgetting", "plasticity")]
        value = f"{100 * r[key]:.1f}" if key in r else "-"
        lines.append(f"{r['label']:<44}{r['memory_records']:>8.0f}{r['memory_bytes']:>9.0f}"
                     + "".join(f"{c:>15}" for c in cells) + (f"{value:>10}" if extra else ""))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> List[Dict]:
    """Run the job's runs (resumable, in parallel) and write the report into ``args.out``."""
    from .demo import run_cells

    check_retention(args.token_retention, "--token-retention")
    start = time.perf_counter()
    out = Path(args.out)
    results = run_cells(demo_cells(args), args)
    print(write_report(results, out))
    print(f"\nresults in {out}/ (results.txt, results.json, results.csv, *_matrices.png, "
          f"caption_over_tasks.png); {time.perf_counter() - start:.0f} s")
    return results
