"""Split Fashion-MNIST, the embedded default stream, read without a network when possible.

Lookup order for the IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``):
``data_root`` (flat, or ``<root>/FashionMNIST/raw``), then Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), then a download
by torchvision into ``data_root`` (or ``~/.cache/avalanche_cts``).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DEBIAN_FMNIST_DIR",
    "FMNIST_CLASSES",
    "UInt8ImageDataset",
    "load_fashion_mnist",
    "split_fashion_mnist",
]

DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class UInt8ImageDataset(Dataset):
    """Images held as uint8 ``(N, C, H, W)``, served as float32 in [0, 1] with ``.targets``."""

    def __init__(self, images: Tensor, targets: Tensor):
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if images.dim() == 3:
            images = images[:, None]
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i].float().div_(255.0), self.targets[i]


def _find(directory: Path, name: str) -> Optional[Path]:
    for cand in (directory / name, directory / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


def _locate(data_root: Optional[Union[str, Path]]) -> Optional[Path]:
    dirs = []
    if data_root is not None:
        root = Path(data_root).expanduser()
        dirs += [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]
    dirs.append(DEBIAN_FMNIST_DIR)
    for d in dirs:
        if all(_find(d, n) for pair in _FILES.values() for n in pair):
            return d
    return None


def _read_idx(path: Path) -> Tensor:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    if path.suffix != ".gz":
        return read_sn3_pascalvincent_tensor(str(path), strict=False)
    cache = Path(os.environ.get("AVALANCHE_CTS_CACHE", Path.home() / ".cache" / "avalanche_cts"))
    st = path.stat()
    source = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    out = cache / "fashion-mnist" / source[:16] / path.stem  # one copy per source file
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(out)
    return read_sn3_pascalvincent_tensor(str(out), strict=False)


def load_fashion_mnist(
    data_root: Optional[Union[str, Path]] = None, download: bool = True
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return ``(train_images, train_labels, test_images, test_labels)``; images uint8 (N, 28, 28)."""
    found = _locate(data_root)
    if found is None:
        if not download:
            raise FileNotFoundError(
                f"Fashion-MNIST IDX files not found in {data_root} or {DEBIAN_FMNIST_DIR}: "
                f"install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
                f"or pass --data-root DIR with {', '.join(n for p in _FILES.values() for n in p)}"
            )
        from torchvision.datasets import FashionMNIST

        root = Path(data_root or Path.home() / ".cache" / "avalanche_cts").expanduser()
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
        found = root / "FashionMNIST" / "raw"
    arrays = []
    for split in ("train", "test"):
        images, labels = (_read_idx(_find(found, n)) for n in _FILES[split])
        if images.dim() != 3 or len(images) != len(labels):
            raise ValueError(f"malformed Fashion-MNIST files in {found}: images {tuple(images.shape)}")
        arrays += [images, labels.long()]
    return tuple(arrays)


def _per_class_subset(labels: Tensor, per_class: Optional[int], generator: torch.Generator) -> Tensor:
    if per_class is None:
        return torch.arange(len(labels))
    keep = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(keep).sort().values


def split_fashion_mnist(
    n_experiences: int = 5,
    *,
    seed: int = 0,
    data_root: Optional[Union[str, Path]] = None,
    train_per_class: Optional[int] = None,
    test_per_class: Optional[int] = None,
    fixed_class_order=None,
):
    """Class-incremental Split Fashion-MNIST (Avalanche ``nc_benchmark``), images in [0, 1].

    :param train_per_class: seeded subset size per class for training (``None`` = all 6,000).
    :param test_per_class: same for the test set (``None`` = all 1,000).
    """
    from avalanche.benchmarks import nc_benchmark

    xtr, ytr, xte, yte = load_fashion_mnist(data_root)
    g = torch.Generator().manual_seed(seed)
    itr = _per_class_subset(ytr, train_per_class, g)
    ite = _per_class_subset(yte, test_per_class, g)
    train = UInt8ImageDataset(xtr[itr], ytr[itr])
    test = UInt8ImageDataset(xte[ite], yte[ite])
    return nc_benchmark(
        train,
        test,
        n_experiences=n_experiences,
        task_labels=False,
        seed=seed,
        fixed_class_order=fixed_class_order,
    )
