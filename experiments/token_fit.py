"""How tightly each token choice fits the object, and how well its tokens carry the class.

On Cluttered Fashion-MNIST validation scenes (the stream's, never the pretraining's; object
masks known), an embedded backbone with a linear probe (fitted as in ``partial_inputs.py`` on
pretraining-pool scenes) is scored by attention rollout of itself (no label); each token
choice of the memory (``topk``, ``compact``; Gumbel draws are left out) keeps 10 / 15 / 21.5 /
30% of the 64 tokens. For each: the share of kept tokens on the object, the share of the
object's tokens kept, and the probe's accuracy on the kept tokens alone (mask token and zero
fill elsewhere). A probe before the recipe's runs, not a result of training. Writes
``results/token_fit/<backbone>.md`` and ``.json``::

    python experiments/token_fit.py --backbone cluttered_fmnist_partial
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

import torch

from avalanche_cts.benchmarks.cluttered import cluttered_fashion_mnist, object_token_mask
from avalanche_cts.harness.pretrain import (BACKBONES, load_pretrained, masked_accuracy,
                                            pretraining_scenes)
from avalanche_cts.models import get_adapter, resolve_normalization
from avalanche_cts.scorers import get_scorer
from avalanche_cts.tokens.patches import rank_tokens

from partial_inputs import _balanced, fit_probe

HERE = Path(__file__).resolve().parent / "results" / "token_fit"
KEEPS = (0.1, 0.15, 0.215, 0.3)
CHOICES = ("topk", "compact")
MODES = ("mask", "zero")


def object_fit(keep: torch.Tensor, on_object: torch.Tensor) -> Dict[str, float]:
    """``(N, T)`` bool kept tokens against ``(N, T)`` bool object tokens: ``on_object`` (share
    of kept tokens on the object) and ``covers`` (mean share of each object's tokens kept)."""
    hits = (keep & on_object).sum(1).float()
    return dict(on_object=float(hits.sum() / keep.sum()),
                covers=float((hits / on_object.sum(1).clamp_min(1)).mean()))


@torch.no_grad()
def measure(backbone: str, probe_per_class: int, per_class: int, batch: int = 250) -> Dict:
    """``{f"{choice} {keep}": {on_object, covers, mask, zero}, "whole": accuracy}``."""
    model = load_pretrained(backbone, num_classes=10, seed=0)
    norm = resolve_normalization(model)
    x, y = pretraining_scenes(BACKBONES[backbone], "train")
    pick = _balanced(y, probe_per_class)
    with torch.enable_grad():
        fit_probe(model, norm.normalize(x[pick].float() / 255), y[pick])
    scenes = cluttered_fashion_mnist(validation=True, test_per_class=per_class, seed=0).scenes["test"]
    images = norm.normalize(scenes.images.float() / 255)
    labels = torch.as_tensor(scenes.targets)
    adapter = get_adapter(model)
    model.eval()
    on_object = object_token_mask(scenes.object_masks, adapter.patch_size)
    rollout = get_scorer("rollout")
    scores = torch.cat([rollout.score(model, images[i:i + batch]) for i in range(0, len(labels), batch)])

    def accuracy(keep: Optional[torch.Tensor], mode: str) -> float:
        return 100 * masked_accuracy(model, images, labels, keep, mode, batch)

    out: Dict = dict(whole=accuracy(None, "full"), images=len(labels),
                     object_tokens=float(on_object.sum(1).float().mean()))
    for keep_rate in KEEPS:
        k = max(1, round(keep_rate * adapter.num_tokens))
        for choice in CHOICES:
            keep = rank_tokens(scores, choice).argsort(1) < k
            out[f"{choice} {keep_rate:g}"] = dict(
                tokens=k, **object_fit(keep, on_object), **{m: accuracy(keep, m) for m in MODES})
    return out


def write_table(res: Dict, backbone: str, out: Path) -> str:
    lines = [f"# Token choices on Cluttered Fashion-MNIST validation scenes: backbone `{backbone}`",
             "", f"{res['images']} scenes (objects on {res['object_tokens']:.1f} of 64 tokens "
             f"on average), rollout scores of the backbone, a linear probe; whole scenes "
             f"{res['whole']:.1f}%. On object: share of kept tokens on the object; covers: "
             "share of the object's tokens kept; accuracy (%) on the kept tokens alone.", "",
             "| kept | choice | on object | covers | accuracy, mask token | accuracy, zero fill |",
             "|---|---|---|---|---|---|"]
    for keep_rate in KEEPS:
        for choice in CHOICES:
            r = res[f"{choice} {keep_rate:g}"]
            lines.append(f"| {100 * keep_rate:g}% ({r['tokens']}) | {choice} | {r['on_object']:.2f}"
                         f" | {r['covers']:.2f} | {r['mask']:.1f} | {r['zero']:.1f} |")
    text = "\n".join(lines) + "\n"
    (out / f"{backbone}.md").write_text(text)
    return text


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="cluttered_fmnist_partial",
                   choices=sorted(n for n, s in BACKBONES.items() if s.benchmark == "cluttered_fmnist"))
    p.add_argument("--probe-per-class", type=int, default=500)
    p.add_argument("--per-class", type=int, default=100, help="validation scenes per class")
    args = p.parse_args(argv)
    HERE.mkdir(parents=True, exist_ok=True)
    res = measure(args.backbone, args.probe_per_class, args.per_class)
    (HERE / f"{args.backbone}.json").write_text(json.dumps(dict(settings=vars(args), **res), indent=1))
    print(write_table(res, args.backbone, HERE))


if __name__ == "__main__":
    main()
