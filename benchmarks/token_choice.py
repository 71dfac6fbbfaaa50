"""Why do relevance-ranked tokens replay worse than random ones? A diagnostic on Split Fashion-MNIST.

Core tokensets (random samples, ``t = sqrt(r)`` of their tokens, sparse replay) built with
different rules for choosing the kept tokens, all else equal (pretrained ``vit_fmnist_tiny``
of :mod:`avalanche_cts.pretrain`, 300 training / 200 test images per class, 2 epochs, Adam
1e-3, batch 64, memory batch 64):

* ``random``: uniformly random tokens (the plugin's default scorer);
* ``top-k GradLRP``: the GradLRP ranking, as the paper stores them;
* ``Gumbel top-k GradLRP``: sampled without replacement with probability ~ softmax of the
  per-image standardised GradLRP scores (``--temperature``), relevance plus diversity;
* ``bottom-k GradLRP``: the least relevant tokens (a floor: on Fashion-MNIST mostly blank);
* ``... object-first dropout``: new data keeps random *non-blank* tokens first instead of
  uniformly random ones, so new rows hold as much object as relevance-ranked memory rows.
  This tests the hypothesis that the model separates memory rows from new rows by the
  presence of blank tokens.

For each rule and seed it records the final accuracy, the accuracy matrix, and after the
second experience: the accuracy of the model on its memory rows (sparse), the full-image
accuracy on the first experience's classes, the mean memory loss during that experience, the
share of non-blank tokens in the memory, and how spread the kept positions are (entropy of a
class's position histogram / log T; 1 = uniform). Writes ``token_choice.{json,md}``::

    python benchmarks/token_choice.py            # about 10 minutes on one CPU core
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avalanche.core import SupervisedPlugin
from avalanche.training import Naive

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.experiment import default_token_retention
from avalanche_cts.memory import collate_tokens
from avalanche_cts.models.timm_vit import SparseTokenDropout
from avalanche_cts.pretrain import load_pretrained, split_fashion_mnist_stream
from avalanche_cts.scorers import TokenScorer, get_scorer
from avalanche_cts.tokens import keep_count, patchify

RESULTS = Path(__file__).resolve().parent / "results"


class StandardisedScorer(TokenScorer):
    """A base scorer's scores standardised per image, optionally negated or Gumbel-perturbed
    (``temperature``: Gumbel top-k samples tokens with probability ~ softmax(z / temperature))."""

    needs_grad = True

    def __init__(self, base: Union[str, TokenScorer], *, negate: bool = False,
                 temperature: Optional[float] = None):
        self.base, self.negate, self.temperature = get_scorer(base), negate, temperature

    def score(self, model: nn.Module, images: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        s = self.base.score(model, images, targets)
        z = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True).clamp_min(1e-12)
        if self.negate:
            z = -z
        if self.temperature is not None:
            u = torch.rand_like(z).clamp_min(1e-20)
            z = z / self.temperature - torch.log(-torch.log(u))
        return z


class ObjectFirstDropout(SparseTokenDropout):
    """Sparse dropout keeping random non-blank tokens first (``blank``: ``(B, T)`` bool of the
    current batch's all-zero tokens, set before each forward)."""

    blank: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.blank is None or self.keep >= x.shape[1] - self.num_prefix_tokens:
            return x
        p = self.num_prefix_tokens
        key = torch.rand(self.blank.shape, device=x.device) + (~self.blank).float()
        idx = key.topk(self.keep, dim=1).indices.sort(dim=1).values
        kept = x[:, p:].gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :p], kept], dim=1)


class ObjectFirstReplayPlugin(CoreTokensetReplayPlugin):
    """Core tokenset replay whose new-data dropout is :class:`ObjectFirstDropout` (sparse)."""

    def before_forward(self, strategy, **kwargs):
        a = self._adapter
        drop = ObjectFirstDropout(keep_count(a.num_tokens, self.keep_rate), a.num_prefix_tokens)
        drop.blank = patchify(strategy.mbatch[0], a.patch_size).abs().sum(-1) == 0
        self._saved_patch_drop = a.model.patch_drop
        a.model.patch_drop = drop


class MemLossLog(SupervisedPlugin):
    """Collects the replay plugin's memory loss per step, per experience."""

    def __init__(self, replay: CoreTokensetReplayPlugin):
        super().__init__()
        self.replay, self.losses = replay, {}

    def after_backward(self, strategy, **kwargs):
        if self.replay.last_mem_loss is not None:
            exp = strategy.clock.train_exp_counter
            self.losses.setdefault(exp, []).append(float(self.replay.last_mem_loss))


def variants(temperature: float) -> Dict[str, Dict]:
    return {
        "random": dict(scorer="random"),
        "top-k GradLRP": dict(scorer="gradlrp"),
        f"Gumbel top-k GradLRP (T={temperature:g})":
            dict(scorer=StandardisedScorer("gradlrp", temperature=temperature)),
        "bottom-k GradLRP": dict(scorer=StandardisedScorer("gradlrp", negate=True)),
        "random, object-first dropout": dict(scorer="random", plugin=ObjectFirstReplayPlugin),
        "top-k GradLRP, object-first dropout": dict(scorer="gradlrp", plugin=ObjectFirstReplayPlugin),
    }


@torch.no_grad()
def accuracy(model: nn.Module, dataset, batch_size: int = 512) -> float:
    model.eval()
    hits = n = 0
    for x, y, *_ in DataLoader(dataset, batch_size=batch_size):
        hits += int((model(x).argmax(1) == y).sum())
        n += len(y)
    return hits / n


@torch.no_grad()
def memory_stats(plugin: CoreTokensetReplayPlugin, buffer: CoreTokensetBuffer) -> Dict[str, float]:
    """Model accuracy on its memory rows (sparse), share of non-blank tokens, and position
    spread (mean over classes of the entropy of the kept-position histogram / log T)."""
    plugin._adapter.model.eval()
    t = buffer.layout["num_tokens"]
    hits = n = nonblank = tokens = 0
    hist: Dict[int, Tensor] = {}
    for batch in DataLoader(buffer.dataset(), batch_size=256, collate_fn=collate_tokens):
        hits += int((plugin.replay_logits(batch).argmax(1) == batch.labels).sum())
        n += len(batch.labels)
        valid = torch.ones(batch.positions.shape, dtype=torch.bool) if batch.valid is None \
            else batch.valid
        nonblank += int(((batch.values.float().abs().sum(-1) > 0) & valid).sum())
        tokens += int(valid.sum())
        for c in batch.labels.unique().tolist():
            rows = batch.labels == c
            counts = torch.bincount(batch.positions[rows][valid[rows]], minlength=t).float()
            hist[c] = hist.get(c, 0) + counts
    spread = []
    for counts in hist.values():
        p = counts[counts > 0] / counts.sum()
        spread.append(float(-(p * p.log()).sum() / math.log(t)))
    return dict(memory_row_acc=hits / n, nonblank_share=nonblank / tokens,
                position_spread=statistics.fmean(spread))


@functools.lru_cache(maxsize=None)
def stream(seed: int, train_per_class: int, test_per_class: int):
    """Split Fashion-MNIST without the pretraining images, built once per seed."""
    return split_fashion_mnist_stream(n_experiences=5, seed=seed, train_per_class=train_per_class,
                                      test_per_class=test_per_class)


def run_one(spec: Dict, budget: float, seed: int, args) -> Dict:
    torch.manual_seed(seed)
    bench = stream(seed, args.train_per_class, args.test_per_class)
    model = load_pretrained("vit_fmnist_tiny", num_classes=bench.n_classes, seed=seed)
    buffer = CoreTokensetBuffer(budget_fraction=budget,
                                token_retention=default_token_retention("core_tokenset", budget),
                                scorer=spec["scorer"], seed=seed)
    plugin = spec.get("plugin", CoreTokensetReplayPlugin)(buffer, replay_mode="sparse", seed=seed)
    log = MemLossLog(plugin)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=64, train_epochs=args.epochs,
                     eval_mb_size=512, plugins=[plugin, log], evaluator=None)
    tests = [e.dataset.eval() for e in bench.test_stream]
    acc, after_second = [], {}
    for i, exp in enumerate(bench.train_stream):
        strategy.train(exp)
        acc.append([accuracy(model, d) if j <= i else 0.0 for j, d in enumerate(tests)])
        if i == 1:
            after_second = dict(memory_stats(plugin, buffer), old_full_image_acc=acc[-1][0],
                                mem_loss=statistics.fmean(log.losses[1]))
    return dict(final_acc=statistics.fmean(acc[-1]), acc_matrix=acc, after_second=after_second)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.05])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--train-per-class", type=int, default=300)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows: List[Dict] = []
    for name, spec in variants(args.temperature).items():
        for budget in args.budgets:
            for seed in args.seeds:
                t0 = time.perf_counter()
                r = run_one(spec, budget, seed, args)
                rows.append(dict(variant=name, budget=budget, seed=seed, **r))
                print(f"{name:<40} {100 * budget:g}% seed {seed}: final {100 * r['final_acc']:.1f}  "
                      f"{ {k: round(v, 3) for k, v in r['after_second'].items()} }  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "token_choice.json").write_text(json.dumps(
        dict(settings={k: v for k, v in vars(args).items() if k != "out"}, runs=rows), indent=1))
    (args.out / "token_choice.md").write_text(report(rows, args))
    print(report(rows, args))


def report(rows: List[Dict], args) -> str:
    def ms(v: List[float]) -> str:
        return f"{100 * statistics.fmean(v):.1f} ± {100 * (statistics.stdev(v) if len(v) > 1 else 0):.1f}"

    keys = ("memory_row_acc", "old_full_image_acc", "mem_loss", "nonblank_share", "position_spread")
    head = ["token rule"] + [f"final acc {100 * b:g}%" for b in args.budgets] + \
           [f"{k} ({100 * args.budgets[-1]:g}%)" for k in keys]
    lines = [f"# Token choice diagnostic (core tokensets, sparse replay, seeds {args.seeds})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["variant"] for r in rows):
        cells = [ms([r["final_acc"] for r in rows if r["variant"] == name and r["budget"] == b])
                 for b in args.budgets]
        last = [r["after_second"] for r in rows if r["variant"] == name and r["budget"] == args.budgets[-1]]
        cells += [f"{statistics.fmean(a[k] for a in last):.3f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "After the second experience: memory_row_acc = the model's accuracy on its own memory "
              "rows; old_full_image_acc = full-image test accuracy on the first experience's classes; "
              "mem_loss = mean memory loss during the second experience; position_spread = entropy "
              "of each class's kept-position histogram / log T (1 = uniform)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
