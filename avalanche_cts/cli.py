"""Command line: ``avalanche-cts demo`` (the main job) and friends."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    from . import demo

    parser = argparse.ArgumentParser(prog="avalanche-cts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="core tokensets vs replay on Split Fashion-MNIST")
    demo.add_arguments(p_demo)
    p_demo.set_defaults(func=demo.main)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
