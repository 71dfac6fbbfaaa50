"""Scorer cost: images/s of each token scorer as a ratio to one inference forward pass.

Same model, batch and device for every row; the reference is ``model(x)`` under ``no_grad``
with timm's default (fused) attention, re-timed next to each scorer. CPU: a ViT-Tiny/16 (random weights, fp32). GPU, when
``torch.cuda.is_available()``: ViT-B/16 at 224 px, random weights, bf16 autocast.
Best of ``--repeats`` timed runs after one warm-up (AtMan: one run). Writes ``scorer_cost.{csv,json,png}``.

    python experiments/scorer_cost.py                    # about 1-2 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from avalanche_cts._files import portable_path
from avalanche_cts.models import create_model
from avalanche_cts.harness.report import write_csv
from avalanche_cts.scorers import get_scorer

SCORERS = ("random", "rollout", "gradcam", "gradlrp", "atman")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scorers", nargs="+", default=list(SCORERS))
    p.add_argument("--cpu-model", default="vit_tiny_patch16_224")
    p.add_argument("--cpu-img-size", type=int, default=224)
    p.add_argument("--cpu-batch", type=int, default=4)
    p.add_argument("--gpu-model", default="vit_base_patch16_224")
    p.add_argument("--gpu-batch", type=int, default=64)
    p.add_argument("--atman-chunk", type=int, default=64, help="AtMan copies per forward pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU run")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return p.parse_args()


def best_time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Seconds of the fastest of ``repeats`` runs (after one warm-up run if ``warmup``)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if warmup:
        fn()
        sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(device: str, model_name: str, img_size: int, batch: int, amp_dtype, args) -> List[Dict]:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = create_model(model_name, img_size=img_size).to(dev).eval()
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    y = torch.randint(0, model.num_classes, (batch,), device=dev)
    autocast = (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    def forward():
        with torch.no_grad(), autocast():
            return model(x)

    setting = dict(device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{args.threads}",
                   model=model_name, img_size=img_size, batch=batch,
                   dtype=str(amp_dtype).replace("torch.", "") if amp_dtype else "float32")
    print(f"[{setting['device']}] {model_name} {img_size}px batch {batch} {setting['dtype']}", flush=True)
    rows = []
    for name in args.scorers:
        scorer = get_scorer(name, chunk_size=args.atman_chunk) if name == "atman" else get_scorer(name)

        def run():
            with autocast():
                return scorer.score(model, x, y)

        # the reference is re-timed next to every scorer, so drifting load on a shared machine cancels
        ref = best_time(forward, dev, args.repeats)
        slow = name == "atman"  # P + 1 forwards per image: one run, already warm from the reference
        secs = best_time(run, dev, 1 if slow else args.repeats, warmup=not slow)
        rows.append(dict(setting, scorer=name, seconds=secs, images_per_s=batch / secs,
                         forward_images_per_s=batch / ref, ratio_to_forward=ref / secs))
        print(f"  {name:8s} {batch / secs:9.2f} img/s (forward {batch / ref:7.1f})  ratio {ref / secs:.4f}  "
              f"= 1 / {secs / ref:.1f}", flush=True)
    return rows


def plot(rows: List[Dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    devices = list(dict.fromkeys(r["device"] for r in rows))
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = list(dict.fromkeys(r["scorer"] for r in rows))
    width = 0.8 / len(devices)
    for i, dev in enumerate(devices):
        ratios = {r["scorer"]: r["ratio_to_forward"] for r in rows if r["device"] == dev}
        label = next(f"{r['device']}: {r['model']} {r['img_size']}px, {r['dtype']}" for r in rows if r["device"] == dev)
        bars = ax.bar([j + i * width for j in range(len(names))], [ratios.get(n, 0) for n in names], width,
                      label=label)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks([j + width * (len(devices) - 1) / 2 for j in range(len(names))], names)
    ax.set_yscale("log")
    ax.set_ylabel("images/s relative to one forward")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rows: List[Dict] = []
    if not args.no_cpu:
        rows += bench("cpu", args.cpu_model, args.cpu_img_size, args.cpu_batch, None, args)
    if torch.cuda.is_available():
        rows += bench("cuda", args.gpu_model, 224, args.gpu_batch, torch.bfloat16, args)
    else:
        print("no CUDA device: GPU row skipped")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "scorer_cost.csv", rows)
    with open(out / "scorer_cost.json", "w") as f:
        json.dump(dict(settings=dict(vars(args), out=portable_path(args.out)),
                       torch=torch.__version__, rows=rows), f, indent=1)
    plot(rows, out / "scorer_cost.png")
    print(f"saved {out / 'scorer_cost'}.{{csv,json,png}}")


if __name__ == "__main__":
    main()
