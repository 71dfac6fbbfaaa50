"""Settings shared by the benchmark scripts: backbones per embedded benchmark, the
rehearsal-free references and the command-line options every script takes."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

MODELS = {"cluttered_fmnist": "vit_clutter_tiny", "fmnist_pretrained": "vit_fmnist_tiny"}
"""Embedded benchmark -> its shipped pretrained backbone preset."""

PEFT: Dict[str, Dict] = {
    "InfLoRA": dict(method="inflora", lr=0.005, lr_schedule="cosine", options={"rank": 8}),
    "CODA-Prompt": dict(method="coda_prompt", lr=0.005, lr_schedule="cosine",
                        options={"pool_size": 100, "prompt_length": 8}),
}
"""Rehearsal-free references with their own (published-protocol) optimiser settings."""


def add_common_args(p: argparse.ArgumentParser) -> None:
    """``--benchmark``, ``--seeds``, ``--train-per-class``, ``--jobs``, ``--out``."""
    p.add_argument("--benchmark", default="cluttered_fmnist", choices=sorted(MODELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-per-class", type=int, default=None,
                   help="training images per class (default: 200 on cluttered_fmnist, whose "
                        "runs cost 4x more, 300 on fmnist_pretrained)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one process each")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: benchmarks/results/<script>/<benchmark>)")


def finish_args(args: argparse.Namespace, results_dir: Path) -> argparse.Namespace:
    """Fill the defaults that depend on ``--benchmark``."""
    args.out = args.out or results_dir / args.benchmark
    if args.train_per_class is None:
        args.train_per_class = 200 if args.benchmark == "cluttered_fmnist" else 300
    return args
