"""Command line: ``avalanche-cts demo`` (the main job) and ``avalanche-cts run`` (the paper's
experiments from a YAML config; see :mod:`avalanche_cts.grid`).

    avalanche-cts run --config benchmarks/configs/table2_imagenet_r.yaml --list
    avalanche-cts run --config ... --cell 3 --root /data/imagenet-r --checkpoint vit.safetensors
    avalanche-cts run --config ... --only method=core_tokenset,budget=0.5 --set epochs=1
    torchrun --nproc_per_node 8 -m avalanche_cts.cli run --config ...      # several GPUs
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import torch

__all__ = ["main"]


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML experiment config")
    p.add_argument("--cell", type=int, nargs="+", help="run only these cells (indices from --list)")
    p.add_argument(
        "--only",
        help="run only cells matching KEY=VALUE[,KEY=VALUE...] "
        "(e.g. method=coreset,budget=0.01,benchmark.n_experiences=10)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (epochs=1, benchmark.root=DIR, out=DIR); repeatable",
    )
    p.add_argument("--root", help="dataset root (same as --set benchmark.root=DIR)")
    p.add_argument(
        "--checkpoint",
        help="local backbone weights (.safetensors, .pth, .npz), "
        "used instead of fetching pretrained weights",
    )
    p.add_argument("--out", help="output folder (default: the config's out, results/<name>)")
    p.add_argument("--list", action="store_true", help="print the selected cells and exit")
    p.add_argument(
        "--force", action="store_true", help="rerun cells from scratch, even finished ones"
    )
    p.add_argument("--report-only", action="store_true", help="only rewrite the summary")


def _run_command(args) -> None:
    from .benchmarks import make_benchmark
    from .distributed import init_distributed, is_main_process
    from .experiment import run
    from .grid import expand_cells, load_config, select_cells
    from .report import write_summary

    overrides = list(args.overrides)
    for flag, key in (
        (args.root, "benchmark.root"),
        (args.checkpoint, "checkpoint"),
        (args.out, "out"),
    ):
        if flag:
            overrides.append(f"{key}={flag}")
    config = load_config(args.config, overrides)
    out = Path(config["out"])
    cells = select_cells(expand_cells(config), args.cell, args.only)
    if args.list:
        for c in cells:
            print(f"{c.index:4d}  {c.key}")
        print(f"{len(cells)} cells; results in {out}/<cell>/")
        return
    if not args.report_only:
        init_distributed(seed=cells[0].cfg.seed if cells else 0)
        benchmarks = {}
        for c in cells:
            run_dir = out / c.key
            if (run_dir / "result.json").is_file() and not args.force:
                print(f"[{c.index}] {c.key}: finished, skipped (--force reruns)")
                continue
            spec = repr(sorted(c.benchmark.items()))
            if spec not in benchmarks:
                benchmarks = {spec: make_benchmark(**c.benchmark)}
            if is_main_process():
                print(f"[{c.index}] {c.key}")
            cfg = replace(c.cfg, out_dir=str(run_dir), resume=c.cfg.resume and not args.force)
            run(cfg, benchmarks[spec], log=print if is_main_process() else None)
    if is_main_process():
        print(write_summary(out))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv: Optional[List[str]] = None) -> int:
    from . import demo

    parser = argparse.ArgumentParser(
        prog="avalanche-cts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="core tokensets vs replay on Split Fashion-MNIST")
    demo.add_arguments(p_demo)
    p_demo.set_defaults(func=demo.main)
    p_run = sub.add_parser("run", help="the paper's experiments from a YAML config")
    _add_run_arguments(p_run)
    p_run.set_defaults(func=_run_command)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
