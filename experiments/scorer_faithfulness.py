"""Token-keep curve: accuracy when each test image keeps only its top-k% tokens, per scorer.

Trains ``vit_fmnist_tiny`` (28x28, patch 4, T = 49) on a Fashion-MNIST subset with random
token dropout (per-sample keep rate ~ U(min_keep, 1), dropped tokens zero-filled) so the model
handles partial inputs, then scores the test subset with every scorer and evaluates with the
top-k% tokens kept, the rest zero-filled. Two targets: the label (as when a memory is filled; the
choice of tokens then carries label information, so kept-token accuracy can exceed full-input
accuracy) and the prediction (the usual faithfulness protocol).
Writes ``scorer_faithfulness.{csv,json,png}`` to ``--out``. ``atman:threshold=1.1`` is AtMan
without conceptual suppression: on Fashion-MNIST the many all-black patches share one patch
embedding (cosine similarity 1), so at the default κ = 0.7 they are suppressed, and ranked, as one.

    python experiments/scorer_faithfulness.py            # about 4-6 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from avalanche_cts._files import portable_path
from avalanche_cts.benchmarks.fmnist import load_fashion_mnist
from avalanche_cts.models import create_model, get_adapter
from avalanche_cts.harness.report import write_csv
from avalanche_cts.scorers import get_scorer
from avalanche_cts.harness.viz import top_tokens_mask

SCORERS = ("random", "rollout", "gradcam", "gradlrp", "atman", "atman:threshold=1.1")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-size", type=int, default=12000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-keep", type=float, default=0.05, help="lowest token keep rate in training")
    p.add_argument("--keep", type=float, nargs="+", default=[5, 10, 20, 50], help="percent of tokens kept")
    p.add_argument("--scorers", nargs="+", default=list(SCORERS),
                   help="names, or name:key=value,... for options (e.g. atman:threshold=1.1)")
    p.add_argument("--targets", nargs="+", choices=("label", "pred"), default=["label", "pred"],
                   help="what the scores explain: the label (as when filling a memory) or the prediction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return p.parse_args()


def subset(x: torch.Tensor, y: torch.Tensor, n: int, g: torch.Generator):
    idx = torch.randperm(len(y), generator=g)[:n]
    return x[idx, None].float().div_(255.0), y[idx]


def train(model, adapter, x, y, args, g: torch.Generator) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * ((len(y) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), args.batch_size):
            idx = perm[i:i + args.batch_size]
            rate = torch.empty(len(idx), 1).uniform_(args.min_keep, 1.0, generator=g)
            keep = torch.rand(len(idx), adapter.num_tokens, generator=g) < rate
            loss = F.cross_entropy(adapter.forward_zero(x[idx], keep), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}", flush=True)
    model.eval()


@torch.no_grad()
def accuracy(adapter, x, y, keep=None, batch: int = 500) -> float:
    correct = 0
    for i in range(0, len(y), batch):
        xb = x[i:i + batch]
        kb = torch.ones(len(xb), adapter.num_tokens, dtype=torch.bool) if keep is None else keep[i:i + batch]
        correct += (adapter.forward_zero(xb, kb).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(y)


def make_scorer(spec: str, target: str, seed: int):
    """A scorer from ``name`` or ``name:key=value,...`` (e.g. ``atman:threshold=1.1``)."""
    name, _, opts = spec.partition(":")
    options = {k: float(v) for k, v in (kv.split("=") for kv in opts.split(",") if kv)}
    if name == "random":
        options.setdefault("seed", seed)
    elif name != "rollout":  # rollout is class-agnostic: no target option
        options.setdefault("target", target)
    return get_scorer(name, **options)


def score_all(model, scorer, x, y, batch: int = 100) -> torch.Tensor:
    return torch.cat([scorer.score(model, x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)])


def plot(rows, full_acc: float, path: Path, settings: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig = Figure(figsize=(5 * len(targets), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(targets), squeeze=False, sharey=True)[0]
    for ax, target in zip(axes, targets):
        sub = [r for r in rows if r["target"] == target]
        for name in dict.fromkeys(r["scorer"] for r in sub):
            pts = [(r["keep_percent"], 100 * r["accuracy"]) for r in sub if r["scorer"] == name]
            ax.plot(*zip(*pts), marker="o", label=name, linestyle="--" if name == "random" else "-")
        ax.axhline(100 * full_acc, color="grey", linewidth=0.8, label="all tokens")
        ax.set_xlabel("tokens kept per image (%)")
        ax.set_title(f"scores explain the {'label' if target == 'label' else 'prediction'}", fontsize=10)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Token-keep curve, Fashion-MNIST\n{settings}", fontsize=8)
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    xtr, ytr, xte, yte = load_fashion_mnist(args.data_root)
    xtr, ytr = subset(xtr, ytr, args.train_size, g)
    xte, yte = subset(xte, yte, args.test_size, g)
    model = create_model("vit_fmnist_tiny")
    adapter = get_adapter(model)
    norm = adapter.normalization  # inputs as the model expects them: dropped tokens = mean grey
    xtr, xte = norm.normalize(xtr), norm.normalize(xte)
    t0 = time.perf_counter()
    train(model, adapter, xtr, ytr, args, g)
    train_s = time.perf_counter() - t0
    full = accuracy(adapter, xte, yte)
    print(f"full-input test accuracy {100 * full:.1f}% (training {train_s:.0f} s)")

    rows = []
    for target in args.targets:
        for spec in args.scorers:
            t0 = time.perf_counter()
            scores = score_all(model, make_scorer(spec, target, args.seed), xte, yte)
            secs = time.perf_counter() - t0
            for k in args.keep:
                acc = accuracy(adapter, xte, yte, top_tokens_mask(scores, k / 100))
                rows.append(dict(target=target, scorer=spec, keep_percent=k, accuracy=acc,
                                 score_seconds=round(secs, 2)))
            print(f"target={target} {spec:20s} scored in {secs:6.1f} s", flush=True)

    settings = (f"vit_fmnist_tiny, {args.train_size} train / {args.test_size} test images, {args.epochs} epochs, "
                f"token dropout keep~U({args.min_keep},1), seed {args.seed}, normalised inputs, "
                f"dropped tokens 0 (the mean grey)")
    print(f"\n{settings}\nfull input: {100 * full:.1f}%")
    for target in args.targets:
        print(f"\ntarget={target}\n| scorer | " + " | ".join(f"{k:g}%" for k in args.keep) + " |")
        print("|---|" + "---|" * len(args.keep))
        for spec in args.scorers:
            accs = [f"{100 * r['accuracy']:.1f}" for r in rows if r["scorer"] == spec and r["target"] == target]
            print(f"| {spec} | " + " | ".join(accs) + " |")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "scorer_faithfulness.csv", rows)
    with open(out / "scorer_faithfulness.json", "w") as f:
        json.dump(dict(settings=dict(vars(args), out=portable_path(args.out)),
                       full_accuracy=full, train_seconds=round(train_s, 1),
                       torch=torch.__version__, rows=rows), f, indent=1)
    plot(rows, full, out / "scorer_faithfulness.png", settings)
    print(f"saved {out / 'scorer_faithfulness'}.{{csv,json,png}}")


if __name__ == "__main__":
    main()
