"""A picture of Cluttered Fashion-MNIST: scenes of every class, the object's tokens outlined.

Writes ``experiments/results/cluttered_examples.png`` and prints the object's share of the
tokens (mean, 90th percentile) over the training scenes of seed 0::

    python experiments/cluttered_examples.py
"""
from pathlib import Path

import torch

from avalanche_cts.benchmarks import cluttered_fashion_mnist
from avalanche_cts.benchmarks.cluttered import object_token_mask
from avalanche_cts.benchmarks.fmnist import FMNIST_CLASSES

OUT = Path(__file__).resolve().parent / "results" / "cluttered_examples.png"


def main(per_class: int = 2, patch: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    bm = cluttered_fashion_mnist(5, seed=0, train_per_class=200, test_per_class=10)
    scenes = bm.scenes["train"]
    tokens = object_token_mask(scenes.object_masks, patch)
    share = tokens.float().mean(1)
    print(f"object share of the tokens: mean {share.mean():.3f}, "
          f"90th percentile {share.quantile(0.9):.3f}, max {share.max():.3f}")
    labels = torch.tensor(scenes.targets)
    fig, axes = plt.subplots(per_class, 10, figsize=(15, 1.75 * per_class + 0.4))
    for c in range(10):
        for r, i in enumerate((labels == c).nonzero().flatten()[:per_class].tolist()):
            ax = axes[r, c]
            ax.imshow(scenes.images[i, 0], cmap="gray", vmin=0, vmax=255)
            for t in tokens[i].nonzero().flatten().tolist():
                y, x = divmod(t, 64 // patch)
                ax.add_patch(Rectangle((x * patch - 0.5, y * patch - 0.5), patch, patch,
                                       fill=False, lw=0.5, ec="tab:orange"))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(FMNIST_CLASSES[c], fontsize=8)
    fig.suptitle("Cluttered Fashion-MNIST (64 x 64, T = 64 tokens of 8 x 8 px); orange: the "
                 "object's tokens", fontsize=9)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=100)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
