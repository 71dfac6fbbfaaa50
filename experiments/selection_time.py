"""Selection time per 10k samples of one class, for every sample selector.

Synthetic features of realistic width (pre-logits ``(n, D)``, logits of a random head
``(n, C)``), selecting 1% and 10%.

    python experiments/selection_time.py                      # CPU, 1 thread
    python experiments/selection_time.py --device cuda --threads 16

Writes ``experiments/results/selection_time_<device>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from avalanche_cts.selectors import ClassFeatures, get_selector

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_features(n: int, dim: int, classes: int, device: str, seed: int = 0) -> ClassFeatures:
    """One class of ``n`` samples: Gaussian pre-logits and logits of a random linear head."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=g)
    head = torch.randn(dim, classes, generator=g) * (3 / dim**0.5)
    y = torch.zeros(n, dtype=torch.long)
    return ClassFeatures(h.to(device), (h @ head).to(device), y.to(device))


def timed(fn: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_selectors(args) -> List[Dict]:
    rows = []
    for spec in args.configs:
        dim, classes = (int(v) for v in spec.split(":"))
        feats = synthetic_features(args.n, dim, classes, args.device)
        for frac in args.fractions:
            k = max(1, round(frac * args.n))
            for name in args.selectors:
                sel = get_selector(name)
                s = timed(lambda: sel.select(k, args.n, feats), args.device)
                rows.append(dict(selector=name, n=args.n, D=dim, C=classes, k=k, seconds=s))
                print(f"{name:>10}  n={args.n} D={dim:<4} C={classes:<4} k={k:<5} {s:8.2f} s",
                      flush=True)
    return rows


def markdown(rows: List[Dict], header: str) -> str:
    lines = [header, "", "| selector | n | D | C | k | seconds | s per 10k samples |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['selector']} | {r['n']} | {r['D']} | {r['C']} | {r['k']} | "
                     f"{r['seconds']:.2f} | {r['seconds'] * 1e4 / r['n']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="samples of the class")
    p.add_argument("--configs", nargs="+", default=["192:10", "768:100"], help="D:C pairs")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1])
    p.add_argument("--selectors", nargs="+", default=["random", "herding", "craig", "gradmatch"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--out", type=Path, default=None,
                   help="output stem (default results/selection_time_<device>)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = time_selectors(args)
    cuda = args.device.startswith("cuda")
    device = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    header = (f"# Selection time, one class of {args.n} samples ({args.device}: {device}, "
              f"{args.threads} thread(s), torch {torch.__version__})")
    out = args.out or RESULTS / f"selection_time_{args.device.split(':')[0]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(header=header, rows=rows), indent=1))
    out.with_suffix(".md").write_text(markdown(rows, header))
    print(f"saved {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
