"""Pretrained-backbone protocol for the embedded Split Fashion-MNIST benchmark.

Rehearsal-free baselines (InfLoRA, CODA-Prompt) adapt a *pretrained* backbone; from a
random initialisation they are meaningless. On CPU we mimic the paper-scale setting
(ImageNet-21k ViT -> ImageNet-R) with a small held-out pretraining set:

1. **Held-out split.** The last ``per_class`` images (file order) of every class of the
   Fashion-MNIST *training* set (default 500 per class = 5,000 images) form the pretraining
   set. The test set is never used.
2. **Pretraining.** ``vit_fmnist_tiny`` (or any preset / timm name accepting
   ``num_classes``) is trained supervised on the held-out images, all 10 classes: Adam
   (lr 2e-3, batch 128), cosine schedule, random horizontal flips and +-2 px shifts,
   30 epochs (about 3 CPU-minutes on one thread; the pretrained classifier reaches about
   77% on the Fashion-MNIST test set). Like ImageNet-21k pretraining for ImageNet-R, the
   pretraining labels cover the stream's classes; the stream's *images* are disjoint.
3. **Checkpoint.** ``{"state_dict": backbone, "meta": settings and test accuracy}`` saved
   under ``$AVALANCHE_CTS_CACHE/pretrained/`` (default ``~/.cache/avalanche_cts/pretrained/``),
   named after the settings. The classifier is *not* saved: it knows every class and would
   leak the stream's labels into the first experience, so every run starts with a fresh
   head. Training resumes from a per-epoch ``.partial.pt`` file.
4. **Stream.** :func:`stream_data_root` writes the IDX files of the training set *minus*
   the held-out images (5,500 per class by default) plus the full test set;
   :func:`split_fashion_mnist_stream` builds Split Fashion-MNIST from them, so the stream
   never shows a pretraining image.

Usage::

    model = load_pretrained("vit_fmnist_tiny")          # pretrains once, then cached
    bm = split_fashion_mnist_stream(n_experiences=5, train_per_class=300)

``python -m avalanche_cts.pretrain`` pretrains (or finds) the default checkpoint, writes the
stream files and prints both paths, e.g. for ``RunConfig(checkpoint=...)``.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .benchmarks.fmnist import load_fashion_mnist, split_fashion_mnist
from .models import create_model

__all__ = [
    "cache_root",
    "heldout_indices",
    "pretrain_backbone",
    "load_pretrained",
    "split_fashion_mnist_stream",
    "stream_data_root",
    "write_idx",
]

PathLike = Union[str, Path]


def cache_root() -> Path:
    """``$AVALANCHE_CTS_CACHE`` or ``~/.cache/avalanche_cts``."""
    return Path(os.environ.get("AVALANCHE_CTS_CACHE", Path.home() / ".cache" / "avalanche_cts"))


def heldout_indices(labels: Tensor, per_class: int) -> Tensor:
    """Sorted indices of the last ``per_class`` samples of every class of ``labels`` ``(N,)``."""
    idx = [(labels == c).nonzero().flatten()[-per_class:] for c in labels.unique().tolist()]
    return torch.cat(idx).sort().values


def _augment(x: Tensor, generator: torch.Generator, shift: int = 2) -> Tensor:
    """Random horizontal flips and integer shifts up to ``shift`` px of ``(B, C, H, W)``."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = F.pad(x, (shift,) * 4)
    oy, ox = (torch.randint(0, 2 * shift + 1, (2, b), generator=generator))
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    return pad[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                rows, cols]


def _checkpoint_path(model_name: str, per_class: int, epochs: int, lr: float, batch_size: int,
                     seed: int, cache_dir: Optional[PathLike]) -> Path:
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "pretrained"
    name = f"{model_name}_fmnist-heldout{per_class}_e{epochs}_lr{lr:g}_b{batch_size}_s{seed}.pt"
    return root / name


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    model.eval()
    hits = sum(int((model(xb.float() / 255).argmax(1) == yb).sum())
               for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return hits / len(y)


def pretrain_backbone(model_name: str = "vit_fmnist_tiny", *, per_class: int = 500,
                      epochs: int = 30, lr: float = 2e-3, batch_size: int = 128, seed: int = 0,
                      data_root: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
                      log=print) -> Path:
    """Pretrain ``model_name`` on the held-out images (protocol in the module docstring).

    Returns the checkpoint path; an existing checkpoint is returned at once and an
    interrupted run resumes from its last finished epoch.
    """
    path = _checkpoint_path(model_name, per_class, epochs, lr, batch_size, seed, cache_dir)
    if path.is_file():
        return path
    xtr, ytr, xte, yte = load_fashion_mnist(data_root)
    held = heldout_indices(ytr, per_class)
    x, y = xtr[held][:, None], ytr[held]
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    partial, start = path.with_suffix(".partial.pt"), 0
    if partial.is_file():
        state = torch.load(partial, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start = state["epoch"]
    path.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            b = order[i:i + batch_size]
            loss = F.cross_entropy(model(_augment(x[b].float() / 255, gen)), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                        gen=gen.get_state(), epoch=epoch + 1), partial)
        if log:
            log(f"pretrain {model_name}: epoch {epoch + 1}/{epochs}, last loss {loss.item():.3f}")
    meta: Dict = dict(model=model_name, per_class=per_class, epochs=epochs, lr=lr,
                      batch_size=batch_size, seed=seed, n_images=len(y),
                      test_acc=_accuracy(model, xte[:, None], yte))
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    torch.save(dict(state_dict=backbone, meta=meta), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    partial.unlink()
    if log:
        log(f"pretrained {model_name}: test accuracy {meta['test_acc']:.4f} -> {path}")
    return path


def load_pretrained(model_name: str = "vit_fmnist_tiny", *, num_classes: int = 10,
                    seed: int = 0, **pretrain_kwargs) -> nn.Module:
    """The pretrained backbone (pretraining it first if needed) with a fresh classifier of
    ``num_classes`` outputs, initialised under ``torch.manual_seed(seed)``.

    :param pretrain_kwargs: :func:`pretrain_backbone` keywords selecting the checkpoint.
    """
    path = pretrain_backbone(model_name, **pretrain_kwargs)
    state = torch.load(path, weights_only=True)["state_dict"]
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise RuntimeError(f"checkpoint {path} does not fit {model_name}: {missing} {unexpected}")
    return model


def write_idx(path: PathLike, array: Tensor) -> None:
    """Write a uint8 tensor as an (uncompressed) IDX file, atomically."""
    if array.dtype != torch.uint8:
        raise TypeError(f"IDX writer expects uint8, got {array.dtype}")
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.dim()))
        f.write(struct.pack(f">{array.dim()}I", *array.shape))
        f.write(array.contiguous().numpy().tobytes())
    tmp.replace(path)


def stream_data_root(per_class: int = 500, *, data_root: Optional[PathLike] = None,
                     cache_dir: Optional[PathLike] = None) -> Path:
    """Directory with Fashion-MNIST IDX files for the stream: the training set without the
    ``per_class`` held-out images per class, and the full test set (cached)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root() / f"fmnist-stream-{per_class}"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if all((root / n).is_file() for n in names):
        return root
    xtr, ytr, xte, yte = load_fashion_mnist(data_root)
    keep = torch.ones(len(ytr), dtype=torch.bool)
    keep[heldout_indices(ytr, per_class)] = False
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(names, (xtr[keep], ytr[keep], xte, yte)):
        write_idx(root / name, arr.to(torch.uint8))
    return root


def split_fashion_mnist_stream(per_class: int = 500, *, data_root: Optional[PathLike] = None,
                               cache_dir: Optional[PathLike] = None, **kwargs):
    """:func:`~.benchmarks.fmnist.split_fashion_mnist` over :func:`stream_data_root`: the
    stream without the ``per_class`` held-out pretraining images per class. ``kwargs`` go to
    ``split_fashion_mnist`` (``n_experiences``, ``seed``, ``train_per_class``, ...)."""
    root = stream_data_root(per_class, data_root=data_root, cache_dir=cache_dir)
    return split_fashion_mnist(data_root=root, **kwargs)


if __name__ == "__main__":
    print(f"checkpoint: {pretrain_backbone()}\nstream data_root: {stream_data_root()}")
