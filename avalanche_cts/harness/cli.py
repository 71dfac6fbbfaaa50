"""Command line: ``avalanche-cts demo`` (the main job), ``avalanche-cts demo-vl`` (VQA and
captioning with BLIP), ``avalanche-cts run`` (experiments from a YAML config) and
``avalanche-cts pretrain`` (the embedded backbones).

    avalanche-cts demo                                   # 3 seeds, about 10 minutes on 2 cores
    avalanche-cts demo-vl                                # VQA + captioning, tiny BLIP, CPU
    avalanche-cts run --config experiments/configs/table2_imagenet_r.yaml --list
    avalanche-cts run --config ... --cell 3 --root /data/imagenet-r --checkpoint vit.safetensors
    avalanche-cts run --config ... --only method=core_tokenset,budget=0.5 --set epochs=1
    torchrun --nproc_per_node 8 -m avalanche_cts.harness.cli run --config ...   # several GPUs

User errors (bad options, configs, paths and files, settings a run cannot use) print one
line naming the option or file and exit with status 2; ``--debug`` shows the traceback.
Ctrl-C and SIGTERM stop every worker process and exit with 130 / 143. Heavy modules
(torch, Avalanche) load only when a command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main"]

USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)
"""What a user's input raises (bad values, paths, files, a diverging run); anything else is a
bug and shows its traceback."""
THIRD_PARTY_WARNINGS = (
    ("No loggers specified", UserWarning, "avalanche.training.plugins.evaluation"),
    ("JAXopt is no longer maintained", DeprecationWarning, "jaxopt"),
)
"""(message prefix, category, module) of library warnings a user of the command line cannot
act on; hidden by the command line only (:func:`quiet_third_party_warnings`), never by the
library."""
_OUTPUT_FOLDERS = ("out",)
_INPUT_FOLDERS = ("data_root", "root")
_INPUT_FILES = ("config",)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other user error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what argparse lets through: a value listed twice, an empty string, a folder
    option that is a file (or under one), an input folder or file that does not exist; a
    path option's ``~`` is expanded (a quoted ``--out '~/x'`` is ``$HOME/x``, as
    ``RunConfig.out_dir`` and a config's ``out`` are)."""
    for action in parser._actions:
        if not action.option_strings or not hasattr(args, action.dest):
            continue
        opt, value = action.option_strings[-1], getattr(args, action.dest)
        if isinstance(value, list):
            dup = next((v for i, v in enumerate(value) if v in value[:i]), None)
            if dup is not None:
                raise ValueError(f"{opt} lists {dup!r} twice: give each value once (a repeated "
                                 f"run would be counted twice)")
        if not isinstance(value, str):
            continue
        if not value.strip():
            raise ValueError(f"{opt} is empty: give a value or leave the option out")
        from .._files import check_folder, user_path

        path = user_path(value)
        if action.dest in _OUTPUT_FOLDERS:
            check_folder(value, opt)
        elif action.dest in _INPUT_FOLDERS and not path.is_dir():
            raise FileNotFoundError(f"{opt} {value}: no such folder")
        elif action.dest in _INPUT_FILES and not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "no such file"
            raise FileNotFoundError(f"{opt} {value}: {what}")
        if action.dest in _OUTPUT_FOLDERS + _INPUT_FOLDERS + _INPUT_FILES:
            setattr(args, action.dest, str(path))  # "~" read as the API reads it


def quiet_third_party_warnings() -> None:
    """Hide :data:`THIRD_PARTY_WARNINGS` in this process and, through ``PYTHONWARNINGS``, in
    the worker processes it starts; every other warning (the project's own) stays visible."""
    import os
    import re
    import warnings

    specs = [s for s in os.environ.get("PYTHONWARNINGS", "").split(",") if s]
    for message, category, module in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category,
                                module=re.escape(module) + r"\Z")
        spec = f"ignore:{message}:{category.__name__}:{module}"
        specs += [spec] if spec not in specs else []
    os.environ["PYTHONWARNINGS"] = ",".join(specs)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    from .demo import add_inference_arguments

    p.add_argument("--config", required=True, help="YAML experiment config (required)")
    p.add_argument("--cell", type=int, nargs="+", metavar="I",
                   help="run only these cells (indices from --list; default: all)")
    p.add_argument(
        "--only", metavar="KEY=VALUE[,...]",
        help="run only cells whose settings match, e.g. method=coreset,budget=0.01,"
             "benchmark.n_experiences=10 (default: all); matching no cell is an error",
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a setting, checked before any run: a RunConfig field (epochs=1), a "
             "benchmark argument (benchmark.root=DIR) or out=DIR; not a grid axis (pick its "
             "cells with --only); repeatable (default: none)",
    )
    p.add_argument("--root", metavar="DIR",
                   help="dataset root (= --set benchmark.root=DIR; default: the config's)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="local backbone weights used instead of fetching pretrained weights: a "
                        "file (.safetensors, .pth, .npz) or, for BLIP, the checkpoint folder "
                        "(config, weights, tokenizer) (default: none)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: the config's out, else results/<name>)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs in parallel, one process and one torch thread each (CPU; "
                        "default: %(default)s)")
    add_inference_arguments(p, defaults=False)
    p.add_argument("--list", action="store_true", help="print the selected cells and exit")
    p.add_argument("--force", action="store_true",
                   help="rerun the selected cells from scratch, replacing stored results "
                        "(also those made with other settings)")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite the summary of the config's finished runs (results "
                        "made with other settings are named and left out)")


def _run_command(args) -> None:
    import torch

    from .._files import check_folder
    from ..memory.distributed import init_distributed, is_main_process
    from .demo import inference_settings
    from .execute import execute_cells, finished_results
    from .grid import expand_cells, load_config, select_cells
    from .report import write_summary

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    overrides = list(args.overrides)
    for flag, key in ((args.root, "benchmark.root"), (args.checkpoint, "checkpoint"),
                      (args.out, "out")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    overrides += [f"{k}={v}" for k, v in inference_settings(args).items()]
    config = load_config(args.config, overrides)
    out = check_folder(config["out"], f"output folder (out) of {args.config}")
    all_cells = expand_cells(config)
    cells = select_cells(all_cells, args.cell, args.only)
    if not cells:
        raise ValueError(
            f"no cell of {args.config} matches --only {args.only!r}"
            + (f" and --cell {args.cell}" if args.cell else "")
            + f"; see the {len(all_cells)} cells with --list"
        )
    if args.list:
        for c in cells:
            print(f"{c.index:4d}  {c.key}")
        print(f"{len(cells)} cells; results in {out}/<cell>/")
        return
    if not args.report_only:
        init_distributed(seed=cells[0].cfg.seed)

        def progress(i, n, cell, res, seconds):
            print(f"[{i}/{n}] {cell.key}: final acc {res['final_acc']:.3f} "
                  f"({seconds / 60:.1f} min)", flush=True)

        execute_cells(cells, out, jobs=args.jobs, force=args.force,
                      log=print if is_main_process() else None, progress=progress)
    if is_main_process():
        results, left_out = finished_results(all_cells, out)
        for line in left_out:
            print(f"left out of the summary: {line}", file=sys.stderr)
        print(write_summary(out, results))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _pretrain_command(args) -> None:
    if args.benchmark == "scenes":
        from .pretrain_vl import blip_meta, pretrain_blip

        print(f"checkpoint: {pretrain_blip()}\naccuracy: {blip_meta()['accuracy']}")
        return
    from .pretrain import backbone_meta, pretrain_backbone

    path = pretrain_backbone(args.benchmark, data_root=args.data_root)
    print(f"checkpoint: {path}")
    for split, accs in backbone_meta(args.benchmark, data_root=args.data_root)["accuracy"].items():
        print(f"{split}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in accs.items()))


def _plain(doc: str) -> str:
    """A docstring as help text: reST markup (``code``, :role:`x`) removed."""
    import re

    doc = re.sub(r":\w+:`~?\.?([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


PRETRAININGS = ("cluttered_fmnist", "cluttered_fmnist_partial", "fmnist", "fmnist_partial",
               "scenes")
"""Names ``avalanche-cts pretrain`` takes: :data:`~.pretrain.BACKBONES` and ``scenes`` (spelled
out so that ``--help`` imports no torch; a test keeps them equal)."""


def build_parser() -> argparse.ArgumentParser:
    from . import demo, demo_vl

    parser = _Parser(
        prog="avalanche-cts", description=_plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p_demo = sub.add_parser("demo", formatter_class=fmt, parents=[common],
                            description=_plain(demo.__doc__),
                            help="core tokensets vs coresets and replay at equal bytes (3 seeds)")
    demo.add_arguments(p_demo)
    p_demo.set_defaults(func=demo.main, parser=p_demo)
    p_vl = sub.add_parser("demo-vl", formatter_class=fmt, parents=[common],
                          description=_plain(demo_vl.__doc__),
                          help="VQA and captioning with a tiny BLIP: core tokensets vs coreset")
    demo_vl.add_arguments(p_vl)
    p_vl.set_defaults(func=demo_vl.main, parser=p_vl)
    p_run = sub.add_parser("run", parents=[common],
                           help="experiments from a YAML config (resumable grid)",
                           description="Run the cells of a YAML experiment grid.")
    _add_run_arguments(p_run)
    p_run.set_defaults(func=_run_command, parser=p_run)
    p_pre = sub.add_parser("pretrain", formatter_class=fmt, parents=[common],
                           help="pretrain (or find) an embedded benchmark's backbone",
                           description="Pretrain the backbone of an embedded benchmark.")
    p_pre.add_argument("benchmark", nargs="?", default="cluttered_fmnist", metavar="NAME",
                       help=f"which embedded pretraining: {', '.join(PRETRAININGS)} "
                            f"(cluttered_fmnist_partial: trained on partial inputs; scenes: "
                            f"the tiny BLIP of demo-vl)")
    p_pre.add_argument("--data-root", default=None, metavar="DIR",
                       help="Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist)")
    p_pre.set_defaults(func=_pretrain_command, parser=p_pre)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_third_party_warnings()
    try:
        check_options(args.parser, args)
        args.func(args)
    except KeyboardInterrupt:
        print(f"avalanche-cts {args.command}: interrupted (the runs resume when started again)",
              file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"avalanche-cts {args.command}: error: {msg}\n(run with --debug for the "
              f"traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
