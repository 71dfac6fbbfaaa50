"""Tiny data for the baseline tests: scikit-learn digits (8x8) and a briefly pretrained
``vit_digits_micro`` backbone (held-out digits, as the package's pretraining protocol)."""
from __future__ import annotations

import functools
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from avalanche_cts.models import create_model


class LabelledTensors(TensorDataset):
    """``(x, y)`` tensors with the ``.targets`` list ``nc_benchmark`` needs."""

    @property
    def targets(self):
        return self.tensors[1].tolist()


@functools.lru_cache(maxsize=1)
def digits() -> Tuple[Tensor, Tensor]:
    """All 1,797 digits as ``(N, 1, 8, 8)`` floats in [0, 1] and labels, shuffled (seed 0)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


def digits_benchmark(n_experiences: int = 5, n_train: int = 600, n_test: int = 400):
    """Class-incremental digits stream on images 600.. (the first 600 are held out)."""
    from avalanche.benchmarks import nc_benchmark

    x, y = digits()
    tr, te = slice(600, 600 + n_train), slice(600 + n_train, 600 + n_train + n_test)
    return nc_benchmark(LabelledTensors(x[tr], y[tr]), LabelledTensors(x[te], y[te]),
                        n_experiences=n_experiences, task_labels=False, seed=0)


@functools.lru_cache(maxsize=1)
def _pretrained_state() -> Dict[str, Tensor]:
    x, y = digits()
    x, y = x[:600], y[:600]
    torch.manual_seed(0)
    model = create_model("vit_digits_micro")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        for b in torch.randperm(600).split(50):
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def pretrained_micro_vit(seed: int = 0):
    """A ``vit_digits_micro`` with the pretrained backbone and a fresh head; seeds torch,
    NumPy and Python (``seed``) so that what follows does not depend on earlier tests."""
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(seed)
    model = create_model("vit_digits_micro")
    model.load_state_dict(_pretrained_state(), strict=False)
    return model
