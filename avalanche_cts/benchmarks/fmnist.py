"""Split Fashion-MNIST, the embedded default stream, read without a network when possible.

IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``) come from ``data_root``
(flat, ``<root>/FashionMNIST/raw`` or ``<root>/fashion-mnist``) when it is given, and an error
names the missing files otherwise (no silent fallback). Without ``data_root``: Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), then a download by
torchvision into ``~/.cache/avalanche_cts``.

Pretraining reserves the last ``heldout_per_class`` training images of every class
(:func:`heldout_indices`); a stream built with the same number never shows them, and streams
leave out the embedded backbones' :data:`DEFAULT_HELDOUT` by default, so a stream combined
with a shipped backbone never holds its pretraining images.
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import is_int
from .._files import atomic_write, file_lock
from ..cache import cache_folder
from ..models import resolve_normalization
from ..tokens.normalization import NormalizationLike

__all__ = [
    "DEBIAN_FMNIST_DIR",
    "DEFAULT_HELDOUT",
    "FMNIST_CLASSES",
    "fashion_mnist_folder",
    "UInt8ImageDataset",
    "class_incremental_stream",
    "heldout_indices",
    "load_fashion_mnist",
    "per_class_subset",
    "stream_images",
    "split_fashion_mnist",
    "check_count",
    "check_seed",
    "train_validation_indices",
]

PathLike = Union[str, Path]
DEFAULT_HELDOUT = 5000
"""Training images per class reserved for pretraining (the last ones of each class)."""

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
    """Images held as uint8 ``(N, C, H, W)``, served as float32 model inputs with ``.targets``.

    :param normalization: model input normalisation (a model, ``Normalization``,
        ``(mean, std)``; ``None`` serves pixels in [0, 1]).
    """

    def __init__(self, images: Tensor, targets: Tensor, normalization: NormalizationLike = None):
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if images.dim() == 3:
            images = images[:, None]
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.normalization = resolve_normalization(normalization, images.shape[1])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.normalization.normalize(self.images[i].float().div_(255.0)), self.targets[i]


def _find(directory: Path, name: str) -> Optional[Path]:
    for cand in (directory / name, directory / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


def _complete(d: Path) -> bool:
    return all(_find(d, n) for pair in _FILES.values() for n in pair)


def _names() -> str:
    return ", ".join(n for pair in _FILES.values() for n in pair)


def fashion_mnist_folder(data_root: Optional[PathLike]) -> Optional[Path]:
    """The folder holding all four IDX files; ``FileNotFoundError`` when ``data_root`` is
    given and does not hold them."""
    if data_root is not None:
        root = Path(data_root).expanduser()
        for d in (root, root / "FashionMNIST" / "raw", root / "fashion-mnist"):
            if _complete(d):
                return d
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found under data root {str(root)!r} (looked in it, "
            f"FashionMNIST/raw/ and fashion-mnist/ for {_names()}, optionally .gz): fix the path, "
            f"or leave the data root unset to use Debian's dataset-fashion-mnist"
        )
    return DEBIAN_FMNIST_DIR if _complete(DEBIAN_FMNIST_DIR) else None


def _read_idx(path: Path) -> Tensor:
    """The tensor of IDX file ``path`` (``.gz`` files are unpacked once into the cache);
    ``ValueError`` naming the file and the remedy when it is truncated or corrupt."""
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    out = path
    if path.suffix == ".gz":
        st = path.stat()
        source = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        out = cache_folder("fashion-mnist", source[:16]) / path.stem  # one copy per source file
    try:
        if not out.is_file():  # processes unpacking at once each write their own temporary file
            atomic_write(out, lambda tmp: _gunzip(path, tmp))
        return read_sn3_pascalvincent_tensor(str(out), strict=False)
    except (OSError, EOFError, RuntimeError, AssertionError, KeyError, ValueError) as e:
        copy = f" (and its unpacked copy {out})" if out != path else ""
        raise ValueError(
            f"Fashion-MNIST file {path} cannot be read ({type(e).__name__}: {str(e) or 'bad header'}):"
            f" it is truncated or corrupt; delete it{copy} and fetch it again (or reinstall "
            f"dataset-fashion-mnist), or point --data-root (data_root) at a complete copy"
        ) from None


def _gunzip(src: Path, dst: Path) -> None:
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def load_fashion_mnist(
    data_root: Optional[PathLike] = None, download: bool = True
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return ``(train_images, train_labels, test_images, test_labels)``; images uint8 (N, 28, 28)."""
    found = fashion_mnist_folder(data_root)
    if found is None:
        if not download:
            raise FileNotFoundError(
                f"Fashion-MNIST IDX files not found in {DEBIAN_FMNIST_DIR}: install Debian's "
                f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass a data "
                f"root (--data-root DIR) holding {_names()}"
            )
        from torchvision.datasets import FashionMNIST

        root = cache_folder()
        try:
            with file_lock(root / "fashion-mnist-download.lock"):  # one download at a time
                for train in (True, False):
                    FashionMNIST(str(root), train=train, download=True)
        except Exception as e:  # no network: say what to install instead
            raise FileNotFoundError(
                f"Fashion-MNIST is not on this machine and could not be downloaded ({e}): "
                f"install Debian's dataset-fashion-mnist or pass --data-root DIR with {_names()}"
            ) from None
        found = root / "FashionMNIST" / "raw"
    arrays = []
    for split in ("train", "test"):
        images, labels = (_read_idx(_find(found, n)) for n in _FILES[split])
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise ValueError(
                f"malformed Fashion-MNIST files in {found}: {_FILES[split][0]} holds "
                f"{tuple(images.shape)}, {_FILES[split][1]} {tuple(labels.shape)} (expected "
                f"(N, 28, 28) images and N labels): replace them with a complete copy")
        arrays += [images, labels.long()]
    return tuple(arrays)


def heldout_indices(labels: Tensor, per_class: int) -> Tensor:
    """Sorted indices of the last ``per_class`` samples of every class of ``labels`` ``(N,)``."""
    if per_class <= 0:
        return torch.empty(0, dtype=torch.long)
    idx = [(labels == c).nonzero().flatten()[-per_class:] for c in labels.unique().tolist()]
    return torch.cat(idx).sort().values


def per_class_subset(labels: Tensor, per_class: Optional[int], generator: torch.Generator) -> Tensor:
    """Sorted indices of a seeded random subset of ``per_class`` samples of every class
    (all samples for ``None``); ``ValueError`` if a class has fewer."""
    if per_class is None:
        return torch.arange(len(labels))
    keep = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        if per_class > len(idx):
            raise ValueError(
                f"{per_class} samples per class requested but class {c} has {len(idx)} here: "
                f"lower the per-class count (at most {len(idx)})"
            )
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(keep).sort().values


def train_validation_indices(labels: Tensor, n_train: int, n_val: int,
                             generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Disjoint seeded subsets of ``n_train`` and ``n_val`` samples of every class (sorted)."""
    both = per_class_subset(labels, n_train + n_val, generator)
    order = both[torch.randperm(len(both), generator=generator)]
    classes = labels.unique().tolist()
    itr = torch.cat([order[labels[order] == c][:n_train] for c in classes])
    iev = torch.cat([order[labels[order] == c][n_train:] for c in classes])
    return itr.sort().values, iev.sort().values


def check_count(name: str, value: Optional[int], allow_none: bool = True) -> Optional[int]:
    """``value`` as a Python ``int`` (``None`` when allowed); ``ValueError`` unless it is a
    positive integer (NumPy integers count)."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return int(value)


def check_seed(seed) -> int:
    """A stream seed as a Python ``int``; ``ValueError`` unless it is an integer in
    [0, 2**32) (NumPy integers count)."""
    if not is_int(seed) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be an integer >= 0 and below 2**32, got {seed!r}")
    return int(seed)


def class_incremental_stream(train: UInt8ImageDataset, test: UInt8ImageDataset,
                             n_experiences: int, seed: int, fixed_class_order, info: Dict):
    """Avalanche ``nc_benchmark`` (class-incremental, no task labels) with ``info`` attached
    (settings, class count, sizes and the normalisation)."""
    from avalanche.benchmarks import nc_benchmark

    n_classes = len(set(train.targets))
    if not is_int(n_experiences) or \
            not 1 <= n_experiences <= n_classes or n_classes % n_experiences:
        raise ValueError(
            f"n_experiences must divide the {n_classes} classes (1, 2, 5 or 10 here), got "
            f"{n_experiences!r}"
        )
    n_experiences = int(n_experiences)
    classes = sorted(set(train.targets))
    if fixed_class_order is not None and sorted(fixed_class_order) != classes:
        raise ValueError(f"fixed_class_order must list each of the classes {classes} once, got "
                         f"{list(fixed_class_order)}")
    bm = nc_benchmark(train, test, n_experiences=n_experiences, task_labels=False, seed=seed,
                      fixed_class_order=fixed_class_order)
    norm = train.normalization
    bm.info = dict(info, n_experiences=n_experiences, n_classes=n_classes, n_train=len(train), n_test=len(test),
                   normalization=dict(mean=list(norm.mean), std=list(norm.std)))
    return bm


def stream_images(data_root: Optional[PathLike], heldout_per_class: int, seed: int,
                  train_per_class: Optional[int], test_per_class: Optional[int],
                  validation: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The images of a Fashion-MNIST stream: ``(train_x, train_y, eval_x, eval_y, pool_x)``.

    The pool is the training set without the last ``heldout_per_class`` images of every class
    (pretraining's); training images are a seeded per-class subset of it; evaluation images
    come from the test set, or (``validation``) from the pool, disjoint from the training
    subset (``train_per_class=None`` then takes the rest of each class).
    """
    xtr, ytr, xte, yte = load_fashion_mnist(data_root)
    smallest = int(torch.bincount(ytr).min())
    if heldout_per_class >= smallest:
        raise ValueError(
            f"heldout_per_class={heldout_per_class} leaves no training images: the data has "
            f"{smallest} per class (in its smallest class); pass a smaller heldout_per_class "
            f"(0 uses every image, for a model not pretrained on them)")
    keep = torch.ones(len(ytr), dtype=torch.bool)
    keep[heldout_indices(ytr, heldout_per_class)] = False
    pool_x, pool_y = xtr[keep], ytr[keep]
    g = torch.Generator().manual_seed(seed)
    if validation:
        n_train = train_per_class or int(torch.bincount(pool_y).min()) - test_per_class
        itr, iev = train_validation_indices(pool_y, n_train, test_per_class, g)
        ev_x, ev_y = pool_x[iev], pool_y[iev]
    else:
        itr = per_class_subset(pool_y, train_per_class, g)
        iev = per_class_subset(yte, test_per_class, g)
        ev_x, ev_y = xte[iev], yte[iev]
    return pool_x[itr], pool_y[itr], ev_x, ev_y, pool_x


def split_fashion_mnist(
    n_experiences: int = 5,
    *,
    seed: int = 0,
    data_root: Optional[PathLike] = None,
    train_per_class: Optional[int] = None,
    test_per_class: Optional[int] = None,
    validation: bool = False,
    heldout_per_class: int = DEFAULT_HELDOUT,
    normalization: NormalizationLike = None,
    fixed_class_order=None,
):
    """Class-incremental Split Fashion-MNIST (Avalanche ``nc_benchmark``), 28 x 28 grey.

    :param train_per_class: seeded subset size per class for training (``None`` = all).
    :param test_per_class: same for the evaluation images (``None`` = all 1,000 test images).
    :param validation: evaluate on ``test_per_class`` validation images per class held out
        from the training images (disjoint from the training subset) instead of the test set.
    :param heldout_per_class: leave out the last training images of every class, reserved
        for pretraining (default: the embedded backbones', :data:`DEFAULT_HELDOUT`; 0 uses
        every training image, for a model not pretrained on them).
    :param normalization: model input normalisation (a model, ``Normalization``, ``(mean, std)``
        or ``None`` for [0, 1]).
    """
    train_per_class = check_count("train_per_class", train_per_class)
    test_per_class = check_count("test_per_class", test_per_class, allow_none=not validation)
    seed = check_seed(seed)
    if not is_int(heldout_per_class) or heldout_per_class < 0:
        raise ValueError(f"heldout_per_class must be an integer >= 0, got {heldout_per_class!r}")
    heldout_per_class = int(heldout_per_class)
    tr_x, tr_y, ev_x, ev_y, _ = stream_images(data_root, heldout_per_class, seed,
                                              train_per_class, test_per_class, validation)
    train = UInt8ImageDataset(tr_x, tr_y, normalization)
    test = UInt8ImageDataset(ev_x, ev_y, normalization)
    info = dict(name="fmnist", n_experiences=n_experiences, seed=seed,
                train_per_class=train_per_class, test_per_class=test_per_class,
                validation=validation, heldout_per_class=heldout_per_class,
                data_root=None if data_root is None else str(data_root))
    return class_incremental_stream(train, test, n_experiences, seed, fixed_class_order, info)

