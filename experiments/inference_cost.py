"""Cost of top-token inference per test image against a whole forward.

Cluttered Fashion-MNIST test images and the shipped ``vit_clutter_tiny`` (T = 64), one CPU
thread, batches of ``--batch`` images. Each setting is what
:class:`~avalanche_cts.memory.inference.PartialInferencePlugin` runs per evaluation batch:
a scoring pass of the current model (rollout, or random scores) with no label, the top
``round(keep * T)`` tokens, then a partial forward in the replay mode (``mask``: the learned
mask token, here untrained, which does not change the cost; ``zero``; ``sparse``: kept
tokens only). Settings are timed in interleaved rounds (``--rounds``); the median per
setting is reported as milliseconds per image and as a ratio to the whole forward timed in
the same round. Writes ``inference_cost/inference_cost.{json,md}``::

    python experiments/inference_cost.py     # a few minutes on one free CPU core
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from avalanche_cts.benchmarks import cluttered_fashion_mnist
from avalanche_cts.harness.pretrain import BACKBONES, load_pretrained
from avalanche_cts.memory.inference import PartialInferencePlugin
from avalanche_cts.models import get_adapter
from avalanche_cts.strategies.training import set_fused_attention

RESULTS = Path(__file__).resolve().parent / "results" / "inference_cost"
SCORERS = ("rollout", "random")
MODES = ("mask", "zero", "sparse")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", type=float, nargs="+", default=[0.215, 0.5],
                   help="keep rates (0.215: the 1%% core tokenset's t)")
    p.add_argument("--images", type=int, default=512, help="test images timed per setting")
    p.add_argument("--batch", type=int, default=128, help="evaluation batch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def _seconds(fn: Callable[[torch.Tensor], object], batches: List[torch.Tensor]) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in batches:
            fn(x)
    return time.perf_counter() - t0


def settings(model, keeps) -> Dict[str, Callable]:
    """``name -> fn(images)``: the whole forward, then scoring + partial forward for each
    (keep, scorer, mode) and the scoring pass alone per (keep, scorer)."""
    adapter = get_adapter(model)
    out = {"whole": model}
    for keep in keeps:
        for scorer in SCORERS:
            plugin = PartialInferencePlugin(keep, scorer, "zero")
            out[f"{keep:g}/{scorer}/score only"] = lambda x, p=plugin: p.keep_mask(model, x)
            for mode in MODES:
                out[f"{keep:g}/{scorer}/{mode}"] = (lambda x, p=plugin, m=mode: adapter
                                                    .forward_partial(x, p.keep_mask(model, x), m))
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    spec = BACKBONES["cluttered_fmnist"]
    model = load_pretrained(spec, num_classes=10, seed=0).eval()
    set_fused_attention(model, True)  # as runs evaluate (rollout reads attention explicitly)
    get_adapter(model).add_mask_token(torch.Generator().manual_seed(0))
    bm = cluttered_fashion_mnist(5, seed=0, train_per_class=10,
                                 test_per_class=-(-args.images // 10),
                                 heldout_per_class=spec.heldout_per_class, normalization=model)
    images = torch.cat([torch.stack([e.dataset[i][0] for i in range(len(e.dataset))])
                        for e in bm.test_stream])[: args.images]
    batches = list(images.split(args.batch))
    fns = settings(model, args.keep)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for r in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(_seconds(fn, batches))
        print(f"round {r + 1}: whole {1e3 * times['whole'][-1] / len(images):.3f} ms/image",
              flush=True)
    rows = []
    for name, ts in times.items():
        ratios = [a / b for a, b in zip(ts, times["whole"])]
        rows.append(dict(setting=name, ms_per_image=1e3 * statistics.median(ts) / len(images),
                         ratio_to_whole=statistics.median(ratios), ratio_min=min(ratios),
                         ratio_max=max(ratios)))
    info = dict(device=f"cpu x{args.threads} thread(s)", model=spec.model,
                benchmark="cluttered_fmnist (test split)", num_tokens=get_adapter(model).num_tokens,
                images=len(images), batch=args.batch, rounds=args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference_cost.json").write_text(json.dumps(dict(info, rows=rows), indent=1))
    print(write_table(args.out))


def write_table(out_dir: Path) -> str:
    """``inference_cost.md`` from ``inference_cost.json``."""
    res = json.loads((out_dir / "inference_cost.json").read_text())
    header = (f"# Top-token inference: cost per test image ({res['device']}, {res['model']}, "
              f"T = {res['num_tokens']}, {res['images']} images in batches of {res['batch']}, "
              f"median of {res['rounds']} interleaved rounds)")
    cells = [(r["setting"], f"{r['ms_per_image']:.3f}",
              f"{r['ratio_to_whole']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})")
             for r in res["rows"]]
    body = ["| keep / scorer / mode | ms / image | x whole forward (min-max) |", "|---|---|---|"]
    text = "\n".join([header, "", *body, *("| " + " | ".join(c) + " |" for c in cells)]) + "\n"
    (out_dir / "inference_cost.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
