"""The per-step token work around the model, old functions against new, in one process.

``--old`` is a ``tokens/patches.py`` of an earlier commit (e.g. ``git show
3b475f6:avalanche_cts/tokens/patches.py > /tmp/old_patches.py``); each hot path (64 rows,
224 px, t = 0.1, ViT-B/16 patches) runs with the old composition and with the current helper,
interleaved in ``--rounds`` rounds; medians. The old fingerprint (every value, float64) is
written out here. ``--old-root`` is instead the root of an earlier checkout (e.g. ``git
archive d9d09bb | tar -x -C /tmp/old``): its whole package is imported beside the current one
and the same calls of the replay step's path (keep masks, matched look-up, collation, item
reads, a memory batch as a ``DataLoader`` reads it, decoding, token placement) run on both.
Writes ``experiments/results/step_split/hot_paths_cpu[_<tag>].json``::

    python experiments/hot_paths.py --old /tmp/old_patches.py
    python experiments/hot_paths.py --old-root /tmp/old --tag after2
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import avalanche_cts
import avalanche_cts.memory.codec
import avalanche_cts.memory.records
import avalanche_cts.models
from avalanche_cts.memory.dropout import fingerprints
from avalanche_cts.tokens import patches as new
from avalanche_cts.tokens.normalization import Normalization

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


class BrightnessScorer:
    """A model-free planted scorer: a token's mean value (matched dropout without a model)."""

    name = "brightness"

    def __init__(self, pkg):
        self.patchify = pkg.tokens.patches.patchify

    def score(self, model, images, targets=None):
        return self.patchify(images, 16).float().mean(-1)


def step_cases(old, b: int = 64, size: int = 224, kept: int = 20):
    """``{name: (old callable, new callable)}``: the same calls of the replay step's path on
    the package ``old`` and the current one (one generated batch, ViT-B/16 patches)."""
    g = torch.Generator().manual_seed(0)
    t, v = (size // 16) ** 2, 16 * 16 * 3
    x = torch.randn(b, 3, size, size, generator=g)
    counts = torch.full((b,), kept)
    keep = new.random_keep_mask(counts, t, generator=g)
    u8 = torch.randint(0, 256, (b, kept, v), dtype=torch.uint8, generator=g)
    pos = new.kept_positions(keep)[0]
    items = [(u8[i], pos[i].short(), i % 4, 0, 1.0) for i in range(b)]
    norm = Normalization((0.5,) * 3, (0.5,) * 3)
    pkgs = (old, avalanche_cts)
    batch = torch.randperm(300, generator=g)[:b].tolist()

    def per_package(pkg):
        model = pkg.models.create_model("vit_base_patch16_224", num_classes=4, img_size=size,
                                        depth=1, embed_dim=48, num_heads=3)
        matched = pkg.memory.dropout.NewDataDropout(kept / t, tokens="matched", refresh="experience",
                                                    scorer=BrightnessScorer(pkg))
        matched.refresh_scores(model, list(zip(x, torch.zeros(b, dtype=torch.long))))
        group = pkg.memory.records.TokenGroup(0, 0, t, v, torch.uint8, weighted=False)
        group.append([it[0] for it in items], [it[1] for it in items], [1.0] * b)
        data = pkg.memory.records.TokenMemoryDataset([group])
        memory = pkg.memory.records.TokenMemoryDataset(memory_groups(pkg, kept, v))
        codec = pkg.memory.codec.PixelCodec(torch.uint8, norm)
        return {
            "random keep mask": lambda: pkg.tokens.patches.random_keep_mask(counts, t),
            "matched keep mask (cached scores)": lambda: matched.keep_mask(model, [x, None], t),
            "fingerprints": lambda: pkg.memory.dropout.fingerprints(x),
            "zero dropout of new data": lambda: pkg.tokens.patches.zero_dropped(x, keep, 16),
            "kept tokens of new data": lambda: pkg.tokens.patches.take_kept(x, keep, 16),
            "memory items (64 reads)": lambda: [data[i] for i in range(b)],
            "collation": lambda: pkg.memory.records.collate_tokens(items),
            "memory batch (10 groups, 64 reads + collation)": lambda: pkg.memory.records
            .collate_tokens(loader_fetch(memory, batch)),
            "decode": lambda: codec.decode(u8),
        }

    old_fns, new_fns = (per_package(p) for p in pkgs)
    return {k: (old_fns[k], new_fns[k]) for k in new_fns}


def memory_groups(pkg, kept: int, v: int, n: int = 30, t: int = 196):
    """10 groups (classes) of ``n`` weighted uint8 records of ``kept`` +- 2 tokens of width
    ``v`` out of ``t`` (seeded)."""
    g = torch.Generator().manual_seed(1)
    groups = []
    for label in range(10):
        ks = [kept + j % 5 - 2 for j in range(n)]
        group = pkg.memory.records.TokenGroup(label, 0, t, v, torch.uint8, weighted=True)
        values = [torch.randint(0, 256, (k, v), dtype=torch.uint8, generator=g) for k in ks]
        group.append(values, [torch.randperm(t, generator=g)[:k] for k in ks],
                     torch.rand(n, generator=g).tolist())
        groups.append(group)
    return groups


def loader_fetch(data, indices):
    """What a ``DataLoader`` reads for a batch: ``data.__getitems__`` where it is defined,
    else the items one by one."""
    getitems = getattr(data, "__getitems__", None)
    return getitems(indices) if getitems else [data[i] for i in indices]


def load_package(root: Path, name: str = "old_cts"):
    """The ``avalanche_cts`` package of the checkout at ``root``, imported as ``name``."""
    init = root / "avalanche_cts" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[str(init.parent)])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = pkg
    spec.loader.exec_module(pkg)
    for sub in ("tokens.patches", "memory.dropout", "memory.records", "memory.codec", "models"):
        importlib.import_module(f"{name}.{sub}")
    return pkg


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("old_patches", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    return old


def main(argv=None) -> dict:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    old = a.add_mutually_exclusive_group(required=True)
    old.add_argument("--old", type=Path, help="an earlier tokens/patches.py")
    old.add_argument("--old-root", type=Path, help="the root of an earlier checkout")
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--tag", default="", help="suffix of the result file")
    a.add_argument("--out", type=Path, default=RESULTS)
    args = a.parse_args(argv)
    runs = cases(load_module(args.old)) if args.old else step_cases(load_package(args.old_root))
    times = {k: ([], []) for k in runs}
    for _ in range(args.rounds):
        for k, fns in runs.items():
            for fn, into in zip(fns, times[k]):
                torch.manual_seed(0)  # the same draws for old and new
                t0 = time.perf_counter()
                fn()
                into.append(time.perf_counter() - t0)
    res = {k: dict(before_ms=1000 * statistics.median(o), after_ms=1000 * statistics.median(n))
           for k, (o, n) in times.items()}
    for k, v in res.items():
        v["after_over_before"] = v["after_ms"] / v["before_ms"]
        print(f"| {k} | {v['before_ms']:.1f} | {v['after_ms']:.1f} | {v['after_over_before']:.2f}x |")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "hot_paths_cpu" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{name}.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
