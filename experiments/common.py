"""Settings shared by the benchmark scripts: backbones per embedded benchmark, the
rehearsal-free references and the command-line options every script takes."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

from avalanche_cts.harness.config import RunConfig
from avalanche_cts.harness.pretrain import BACKBONES

MODELS = {"cluttered_fmnist": "vit_clutter_tiny", "fmnist_pretrained": "vit_fmnist_tiny"}
"""Embedded benchmark -> its shipped pretrained backbone preset."""

BASE_SETTINGS = dict(selector="random", scorer="random", replay_mode="zero", dropout=None,
                     dropout_schedule="fixed", dropout_fraction=1.0, dropout_tokens="random",
                     dropout_refresh="step", token_choice="topk", retention_exponent=0.5)
"""Every row starts from these (the paper's recipe, random selector and scorer) and changes what
it studies, so stored results never depend on the library's current defaults."""

PEFT: Dict[str, Dict] = {
    "InfLoRA": dict(method="inflora", lr=0.005, head_lr_scale=1.0, lr_schedule="cosine",
                    options={"rank": 8}),
    "CODA-Prompt": dict(method="coda_prompt", lr=0.005, head_lr_scale=1.0, lr_schedule="cosine",
                        options={"pool_size": 100, "prompt_length": 8}),
}
"""Rehearsal-free references with their own (published-protocol) optimiser settings (one
learning rate for their prompts or branches and heads, whatever the other rows' head rate)."""


def make_parser(doc: str, per_class: str, per_class_default: int) -> argparse.ArgumentParser:
    """A script's parser with the shared options (``--benchmark``, ``--seeds``,
    ``--train-per-class``, ``--jobs``, ``--out``) and its evaluation images per class."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", default="cluttered_fmnist", choices=sorted(MODELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-per-class", type=int, default=None,
                   help="training images per class (default: 200 on cluttered_fmnist, whose "
                        "runs cost 4x more, 300 on fmnist_pretrained)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one process each")
    p.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                   help="another embedded pretraining of the benchmark's backbone preset "
                        "(default: the preset's own)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: experiments/results/<script>/<benchmark>)")
    p.add_argument(f"--{per_class}-per-class", type=int, default=per_class_default,
                   help=f"{per_class} images per class (default: %(default)s)")
    return p


def finish_args(args: argparse.Namespace, results_dir: Path) -> argparse.Namespace:
    """Fill the defaults that depend on ``--benchmark``."""
    args.out = args.out or results_dir / args.benchmark
    if args.train_per_class is None:
        args.train_per_class = 200 if args.benchmark == "cluttered_fmnist" else 300
    return args


def inference_at(rule, budget: float, exponent: float):
    """``RunConfig.inference`` of an inference rule at ``budget``: ``"whole"``, ``"t"`` (the
    memory's keep rate ``budget ** exponent``) or a keep rate in (0, 1]."""
    return budget ** exponent if rule == "t" else rule


def inference_mode(recipe: Dict) -> str:
    """``RunConfig.inference_mode`` of top-token inference for a core-tokenset ``recipe``: its
    replay mode, the form its records and its dropped new data are trained in."""
    return recipe.get("replay_mode", RunConfig.replay_mode)
