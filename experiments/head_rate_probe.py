"""Why Naive collapses on Cluttered Fashion-MNIST: the classifier head's learning rate.

Trains the partial-input backbone on the first two experiences of the test stream (seed 0)
exactly as the headline's Naive rows do (Adam at 1e-4, 4 epochs of batch 64, cross-entropy
over every class), once with one rate for every parameter and once with the head at
``--scales`` times it (``RunConfig.head_lr_scale``), and after every epoch writes the last
mini-batch's loss, the accuracy on the current experience's test images and how many of them
each class is predicted for. Writes ``results/head_rate_probe/probe.md``::

    python experiments/head_rate_probe.py
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from avalanche_cts.harness.config import RunConfig
from avalanche_cts.benchmarks import make_benchmark
from avalanche_cts.harness.methods import make_optimizer
from avalanche_cts.harness.pretrain import PRESET_BACKBONES
from avalanche_cts.harness.runner import make_model
from avalanche_cts.models import resolve_normalization

HERE = Path(__file__).resolve().parent


def _tensors(dataset):
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return x, torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


def probe(scale: float, seed: int, experiences: int) -> List[str]:
    """Table rows of one head rate."""
    cfg = RunConfig(method="naive", model="vit_clutter_tiny", pretrained=True,
                    backbone="cluttered_fmnist_partial", lr=1e-4, epochs=4, batch_size=64,
                    seed=seed, head_lr_scale=scale)
    torch.manual_seed(seed)
    model = make_model(cfg, 10)
    norm = resolve_normalization(model)
    bench = make_benchmark("cluttered_fmnist", n_experiences=5, seed=seed, train_per_class=200,
                           test_per_class=200, normalization=(norm.mean, norm.std),
                           heldout_per_class=PRESET_BACKBONES[cfg.model].heldout_per_class)
    opt = make_optimizer(cfg, model)
    rows = []
    for t in range(experiences):
        x, y = _tensors(bench.train_stream[t].dataset.train())
        tx, ty = _tensors(bench.test_stream[t].dataset.eval())
        for epoch in range(cfg.epochs):
            model.train()
            for b in torch.randperm(len(x)).split(cfg.batch_size):
                loss = F.cross_entropy(model(x[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                pred = torch.cat([model(c).argmax(1) for c in tx.split(256)])
            counts = {c: n for c, n in enumerate(torch.bincount(pred, minlength=10).tolist()) if n}
            rows.append(f"| x{scale:g} | {t + 1} ({sorted(set(ty.tolist()))}) | {epoch + 1} | "
                        f"{float(loss):.2f} | {100 * float((pred == ty).float().mean()):.1f} | "
                        f"{counts} |")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--experiences", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results" / "head_rate_probe")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# Naive on Cluttered Fashion-MNIST: the head's learning rate", "",
             f"Partial-input backbone, test stream seed {args.seed}, Adam 1e-4 (the head at "
             f"the scale times it), 4 epochs of batch 64 per experience; after each epoch: the "
             f"last mini-batch's loss, accuracy on the experience's 400 test images, and the "
             f"classes predicted for them (class: count).", "",
             "| head rate | experience (classes) | epoch | loss | accuracy % | predicted |",
             "|---|---|---|---|---|---|"]
    for scale in args.scales:
        lines += probe(scale, args.seed, args.experiences)
        print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
