"""Where a training step's time goes: the model against everything around it.

One strategy step (Avalanche ``Naive`` + ``CoreTokensetReplayPlugin``) of B new rows (+ B
memory rows keeping t of the tokens) is split, by timers around the plugin's hooks and the
functions they call, into:

* ``load_new``: the strategy's loading of new data (loader, collation, host-to-device copy);
* ``dropout_mask``: drawing the keep masks of new data (``NewDataDropout.keep_mask`` without
  the look-up); ``matched_lookup``: the matched-dropout score look-up (image fingerprints);
* ``mem_load`` / ``mem_collate``: the memory loader's items and their collation;
* ``h2d``: the memory batch's host-to-device copy; ``decode``: uint8 records to model inputs;
* ``place_new`` / ``place_mem``: placing tokens (pixel masks, patchify, gather, scatter,
  unpatchify) for new data and for memory rows;
* ``hooks_rest``: the rest of the plugin's hooks outside the memory rows' model forward;
* ``model``: everything else: forward, loss, backward, optimiser (and Avalanche's callbacks).

``plugin`` is the sum of the plugin's parts (all but ``load_new`` and ``model``). Cases:
``plain`` (2B new rows, empty memory, no dropout), ``zero`` / ``sparse`` / ``mask`` replay
(random dropout at t) and ``matched`` (zero replay, new data dropped by the memory's rollout
scores computed once per experience). The model is a ViT-B/16 with one block (``--embed-dim``: another width, e.g. 192, ViT-Ti/16's), so that it does
not hide the rest. Cases run in interleaved rounds on the same model; medians per part over
the steps after warm-up of all rounds. On CUDA every timer synchronises (the split costs a
little speed). Writes ``experiments/results/step_split/step_split_<device>[_<tag>].{json,md}``::

    python experiments/step_split.py --device cpu --tag before
    python experiments/step_split.py --device cuda
    python experiments/step_split.py --smoke --out /tmp/x     # tiny sizes, seconds
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import torch

from avalanche.core import SupervisedPlugin

import avalanche_cts.models.timm_vit as timm_vit
from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.memory.codec import PixelCodec
from avalanche_cts.memory.dropout import NewDataDropout, ScoreCache
from avalanche_cts.memory.records import TokenBatch
from avalanche_cts.models import create_model, model_normalization
from avalanche_cts.strategies.training import set_fused_attention

from gpu_throughput import _filled, strategy_loop

RESULTS = Path(__file__).resolve().parent / "results" / "step_split"
SIZES = {  # image px, new rows per step, model width/heads, steps, warm-up, rounds
    "full": dict(size=224, batch=64, embed_dim=768, num_heads=12, steps=1, warmup=1, rounds=2),
    "smoke": dict(size=32, batch=4, embed_dim=48, num_heads=3, steps=2, warmup=1, rounds=1),
}
CASES = {  # replay mode, dropout tokens (None: plain, no memory and no dropout)
    "plain": (None, None), "zero": ("zero", "random"), "sparse": ("sparse", "random"),
    "mask": ("mask", "random"), "matched": ("zero", "matched")}
PLACE = ("mask_to_pixels", "patchify", "gather_tokens", "scatter_tokens", "unpatchify",
         "zero_dropped", "take_kept", "take_tokens", "place_tokens")
"""Token placement functions the ViT adapter calls, before and after the faster helpers (those
its module imports are wrapped there)."""
PARTS = ("load_new", "dropout_mask", "matched_lookup", "mem_load", "mem_collate", "h2d",
         "decode", "place_new", "place_mem", "hooks_rest")


class Split(SupervisedPlugin):
    """Collects per-step seconds of each part; timers add to the current step's totals."""

    def __init__(self, cuda: bool):
        super().__init__()
        self.cuda, self.now, self.steps = cuda, defaultdict(float), []
        self.in_memory = False
        self._last = None

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, fn, key):
        """``fn`` adding its seconds to ``key`` (``"place"``: to place_new or place_mem)."""
        def run(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                k = key if key != "place" else ("place_mem" if self.in_memory else "place_new")
                self.now[k] += time.perf_counter() - t0
        return run

    def before_training_iteration(self, strategy, **kwargs):
        self.sync()
        if self._last is None:  # the first step starts here
            self._last = time.perf_counter()
        self.now["load_new"] += time.perf_counter() - self._last

    def after_training_iteration(self, strategy, **kwargs):
        self.sync()
        t = time.perf_counter()
        self.steps.append(dict(self.now, step=t - self._last))
        self.now, self._last = defaultdict(float), t

    def reset(self) -> None:
        self.now, self._last = defaultdict(float), None


def instrument(stack: contextlib.ExitStack, split: Split) -> None:
    """Wrap the library's hot-path functions with ``split``'s timers (undone by ``stack``)."""
    targets = [(timm_vit, name, "place") for name in PLACE if hasattr(timm_vit, name)]
    targets += [(NewDataDropout, "keep_mask", "keep_mask"), (ScoreCache, "lookup", "matched_lookup"),
                (TokenBatch, "to", "h2d"), (PixelCodec, "decode", "decode")]
    for owner, name, key in targets:
        fn = getattr(owner, name)
        setattr(owner, name, split.timed(fn, key))
        stack.callback(setattr, owner, name, fn)


def instrument_plugin(plugin: CoreTokensetReplayPlugin, split: Split) -> None:
    """Time the plugin's hooks, its replay forward and its memory loader (instance level)."""
    for hook in ("before_forward", "after_forward", "before_backward", "replay_loss"):
        setattr(plugin, hook, split.timed(getattr(plugin, hook), hook))
    start = plugin.before_training_exp

    def before_training_exp(strategy, **kwargs):
        start(strategy, **kwargs)
        if plugin._memory is not None:
            plugin._memory = _timed_iter(plugin._memory, split)

    plugin.before_training_exp = before_training_exp
    backward = plugin.before_backward

    def before_backward(strategy, **kwargs):
        split.in_memory = True
        try:
            return backward(strategy, **kwargs)
        finally:
            split.in_memory = False

    plugin.before_backward = before_backward


def _timed_iter(it, split: Split):
    while True:
        split.sync()
        t0 = time.perf_counter()
        item = next(it)
        split.now["mem_next"] += time.perf_counter() - t0
        yield item


def parts(step: Dict[str, float]) -> Dict[str, float]:
    """Seconds of every part of one step from its raw timers (see the module docstring)."""
    g = step.get
    out = dict(load_new=g("load_new", 0.0),
               matched_lookup=g("matched_lookup", 0.0),
               dropout_mask=g("keep_mask", 0.0) - g("matched_lookup", 0.0),
               mem_collate=g("mem_collate", 0.0),
               mem_load=g("mem_next", 0.0) - g("mem_collate", 0.0),
               h2d=g("h2d", 0.0), decode=g("decode", 0.0),
               place_new=g("place_new", 0.0), place_mem=g("place_mem", 0.0))
    mem_model = g("replay_loss", 0.0) - out["decode"] - out["place_mem"]
    hooks = g("before_forward", 0.0) + g("after_forward", 0.0) + g("before_backward", 0.0)
    inside = sum(out[k] for k in ("matched_lookup", "dropout_mask", "mem_collate", "mem_load",
                                  "h2d", "decode", "place_mem"))
    out["hooks_rest"] = hooks - mem_model - inside
    out["plugin"] = sum(out[k] for k in PARTS if k != "load_new")
    out["step"] = step["step"]
    out["model"] = out["step"] - out["load_new"] - out["plugin"]
    return out


def make_plugin(case: str, memory: CoreTokensetBuffer, empty: CoreTokensetBuffer, t: float,
                batch: int) -> CoreTokensetReplayPlugin:
    mode, tokens = CASES[case]
    if mode is None:
        return CoreTokensetReplayPlugin(empty, dropout=1.0)
    return CoreTokensetReplayPlugin(
        memory, replay_mode=mode, batch_size_mem=batch, dropout=t, dropout_tokens=tokens,
        dropout_refresh="experience", dropout_scorer="rollout" if tokens == "matched" else None,
        seed=0)


def run(args) -> Dict:
    sz = SIZES["smoke" if args.smoke else "full"]
    if args.steps:
        sz = dict(sz, steps=args.steps)
    if args.rounds:
        sz = dict(sz, rounds=args.rounds)
    if args.batch:
        sz = dict(sz, batch=args.batch)
    if args.embed_dim:
        sz = dict(sz, embed_dim=args.embed_dim, num_heads=args.embed_dim // 64)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    b, t = sz["batch"], args.retention
    s = dict(steps=sz["steps"], warmup=sz["warmup"], workers=0, precision=args.precision)
    image = dict(image_size=sz["size"], channels=3, test_per_class=1, seed=0,  # 8-bit records
                 normalization=model_normalization("vit_base_patch16_224", None))
    per_class = (s["warmup"] + s["steps"]) * b  # plain: 2b rows per step, replay: b new rows
    new_exp = {rows: synthetic_benchmark(1, n_classes=2, train_per_class=per_class * rows // (2 * b),
                                         **image).train_stream[0] for rows in (b, 2 * b)}
    # the memory holds an earlier experience (id 1 of its stream; the timed ones are id 0)
    mem_exp = synthetic_benchmark(2, n_classes=4, train_per_class=b, **image).train_stream[1]
    torch.manual_seed(0)
    model = create_model("vit_base_patch16_224", num_classes=100, img_size=sz["size"], depth=1,
                         embed_dim=sz["embed_dim"], num_heads=sz["num_heads"]).to(device)
    set_fused_attention(model, True)
    split = Split(cuda)
    steps: Dict[str, List[Dict]] = {c: [] for c in CASES}
    with contextlib.ExitStack() as stack:
        instrument(stack, split)
        for r in range(sz["rounds"]):
            names = list(CASES)
            for case in names[r % len(names):] + names[: r % len(names)]:
                # a buffer serves one strategy: the same memory, filled anew for each
                memory = _filled(model, mem_exp, t, device)
                memory.collate = split.timed(memory.collate, "mem_collate")
                empty = CoreTokensetBuffer(budget_bytes=1, token_retention=t)
                plugin = make_plugin(case, memory, empty, t, b)
                instrument_plugin(plugin, split)
                split.reset()
                rows = 2 * b if case == "plain" else b
                strategy_loop(model, new_exp[rows], plugin, rows, dict(s, warmup=0), device, cuda,
                              extra=[split])
                steps[case] += split.steps[s["warmup"]:]
                split.steps = []
    return summarise(steps, dict(sz, retention=t, device=str(device), precision=args.precision,
                                 threads=torch.get_num_threads(), torch=torch.__version__,
                                 machine=platform.machine()))


def summarise(steps: Dict[str, List[Dict]], settings: Dict) -> Dict:
    """Median seconds per part and case, each part's share of the step, ratios to plain."""
    res: Dict = dict(settings=settings, cases={})
    for case, rows in steps.items():
        split = [parts(r) for r in rows]
        med = {k: statistics.median(p[k] for p in split) for k in split[0]}
        med["plugin_share"] = statistics.median(p["plugin"] / p["step"] for p in split)
        med["steps_timed"] = len(split)
        res["cases"][case] = med
    c = res["cases"]
    res["ratios"] = dict(
        {f"{k}_over_plain": c[k]["step"] / c["plain"]["step"] for k in c if k != "plain"},
        matched_over_random=c["matched"]["step"] / c["zero"]["step"])
    res["goals_met"] = dict(
        plugin_share_le_5pct={k: c[k]["plugin_share"] <= 0.05 for k in c if k != "plain"},
        matched_le_105x_random=res["ratios"]["matched_over_random"] <= 1.05)
    return res


def table(res: Dict) -> str:
    s = res["settings"]
    cases = list(res["cases"])
    lines = [f"ViT with 1 block of width {s['embed_dim']} ({s['num_heads']} heads, patch 16), "
             f"{s['size']} px, {s['batch']} new + {s['batch']} memory rows "
             f"(plain: {2 * s['batch']} new), t = {s['retention']}, {s['device']}, "
             f"{s['threads']} thread(s), {s['rounds']} rounds x {s['steps']} steps; "
             f"median ms per step", "",
             "| part | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
    for k in ("step", "model", "load_new", *PARTS[1:], "plugin"):
        lines.append(f"| {k} | " + " | ".join(f"{1000 * res['cases'][c][k]:.1f}" for c in cases)
                     + " |")
    lines.append("| plugin share | " + " | ".join(
        f"{100 * res['cases'][c]['plugin_share']:.1f}%" for c in cases) + " |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in res["ratios"].items()]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a test)")
    p.add_argument("--steps", type=int, help="timed steps per case and round")
    p.add_argument("--rounds", type=int)
    p.add_argument("--batch", type=int,
                   help="new (= memory) rows per step (default 64; shares barely depend on it)")
    p.add_argument("--embed-dim", type=int, default=None,
                   help="the block's width, a multiple of 64 (heads: width / 64; default 768, "
                        "ViT-B/16's; 192 is ViT-Ti/16's, a step about 20x cheaper)")
    p.add_argument("--retention", type=float, default=0.1)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--tag", default="", help="suffix of the result files (e.g. before, after)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.embed_dim is not None and (args.embed_dim <= 0 or args.embed_dim % 64):
        p.error(f"--embed-dim {args.embed_dim}: the width must be a positive multiple of 64 "
                f"(heads of 64 dimensions), e.g. 192 or 768")
    return args


def main(argv=None) -> Dict:
    args = parse_args(argv)
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"step_split_{torch.device(args.device).type}" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (args.out / f"{stem}.md").write_text(table(res))
    print(table(res))
    return res


if __name__ == "__main__":
    main()
