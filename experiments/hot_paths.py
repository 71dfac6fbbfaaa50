"""The per-step token work around the model, old functions against new, in one process.

``--old`` is a ``tokens/patches.py`` of an earlier commit (e.g. ``git show
3b475f6:avalanche_cts/tokens/patches.py > /tmp/old_patches.py``); each hot path (64 rows,
224 px, t = 0.1, ViT-B/16 patches) runs with the old composition and with the current helper,
interleaved in ``--rounds`` rounds; medians. The old fingerprint (every value, float64) is
written out here. Writes ``experiments/results/step_split/hot_paths_cpu.json``::

    python experiments/hot_paths.py --old /tmp/old_patches.py
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch

from avalanche_cts.memory.dropout import fingerprints
from avalanche_cts.tokens import patches as new

RESULTS = Path(__file__).resolve().parent / "results" / "step_split"


def cases(old, b: int = 64, p: int = 16, size: int = 224, kept: int = 20):
    """``{name: (old callable, new callable)}`` on one generated batch."""
    g = torch.Generator().manual_seed(0)
    grid = (size // p, size // p)
    t = grid[0] * grid[1]
    x = torch.randn(b, 3, size, size, generator=g)
    keep = old.random_keep_mask(torch.full((b,), kept), t, generator=g)
    vals, pos, valid = old.gather_tokens(old.patchify(x, p), keep)
    emb = torch.randn(b, kept, 768, generator=g)
    fill = torch.randn(1, 1, 768, generator=g).expand(b, t, 768)
    proj = torch.randn(x[0].numel(), generator=torch.Generator().manual_seed(20241008),
                       dtype=torch.float64)
    return {
        "zero replay: place memory rows": (
            lambda: old.unpatchify(old.scatter_tokens(vals, pos, t, valid), p, 3, grid),
            lambda: new.place_tokens(vals, pos, p, 3, grid, valid)),
        "zero dropout of new data": (
            lambda: x * old.mask_to_pixels(keep, p, grid).to(x.dtype),
            lambda: new.zero_dropped(x, keep, p)),
        "sparse/mask dropout: kept tokens of new data": (
            lambda: old.gather_tokens(old.patchify(x, p), keep), lambda: new.take_kept(x, keep, p)),
        "mask token placement": (
            lambda: old.scatter_tokens(emb, pos, t, valid, fill=fill),
            lambda: new.scatter_tokens(emb, pos, t, valid, fill=fill)),
        "matched look-up: fingerprints": (
            lambda: (x.flatten(1).double() * proj).sum(1), lambda: fingerprints(x)),
    }


def main(argv=None) -> dict:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--old", type=Path, required=True, help="an earlier tokens/patches.py")
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--out", type=Path, default=RESULTS)
    args = a.parse_args(argv)
    spec = importlib.util.spec_from_file_location("old_patches", args.old)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    runs = cases(old)
    times = {k: ([], []) for k in runs}
    for _ in range(args.rounds):
        for k, fns in runs.items():
            for fn, into in zip(fns, times[k]):
                t0 = time.perf_counter()
                fn()
                into.append(time.perf_counter() - t0)
    res = {k: dict(before_ms=1000 * statistics.median(o), after_ms=1000 * statistics.median(n))
           for k, (o, n) in times.items()}
    for k, v in res.items():
        v["after_over_before"] = v["after_ms"] / v["before_ms"]
        print(f"| {k} | {v['before_ms']:.1f} | {v['after_ms']:.1f} | {v['after_over_before']:.2f}x |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hot_paths_cpu.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
