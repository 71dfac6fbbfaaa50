"""Split ImageNet-R (Hendrycks et al., 2021) as InfLoRA and CODA-Prompt use it.

200 classes, labels = index of the WNID in sorted order (``ImageFolder`` labels); tasks are
consecutive blocks of ``200 / n_experiences`` classes (InfLoRA: 5 x 40, 10 x 20, 20 x 10).
Three ways to split the 30,000 images into train and test:

* ``split="random"``: InfLoRA's 80/20 ``random_split`` of the ``ImageFolder`` after seeding
  with ``seed`` (the same permutation as ``torch.utils.data.random_split(..., generator=
  torch.Generator().manual_seed(seed))``);
* ``split="folders"``: an already split copy, ``<root>/train/<wnid>`` and ``<root>/test/<wnid>``
  (what InfLoRA's first run leaves behind);
* ``split="coda"``: CODA-Prompt's fixed split files (24,000 / 6,000 images; MIT licence,
  ``GT-RIPL/CODA-Prompt`` ``dataloaders/splits/imagenet-r_{train,test}.yaml``), read from
  ``split_files``. ``class_order="coda"`` then uses CODA's class order: the yaml labels,
  shuffled with Python's ``random.seed(seed); random.shuffle`` for ``seed > 0``.

Transforms: train ``RandomResizedCrop(224)`` + flip, test ``Resize(256)`` + ``CenterCrop(224)``,
inputs in [0, 1] without normalisation. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..tokens.normalization import NormalizationLike
from .fmnist import check_seed
from .folders import (
    DatasetLayoutError,
    ImageFiles,
    PathLike,
    check_dir,
    class_incremental,
    scan_classes,
)

__all__ = [
    "CODA_SPLIT_FILES",
    "CODA_SPLIT_MD5",
    "IMAGENET_R_LAYOUT",
    "SplitImageNetR",
    "coda_class_order",
    "random_split_indices",
    "read_coda_split",
]

IMAGENET_R_LAYOUT = """\
  <root>/                       the extracted imagenet-r.tar (200 class folders, 30,000 images)
    n01443537/art_0.jpg ...     one folder per WNID
    n01484850/...
  split="folders":  <root>/train/<wnid>/*.jpg and <root>/test/<wnid>/*.jpg
  split="coda":     <root>/<wnid>/* as above, plus split_files=DIR holding CODA-Prompt's
                    imagenet-r_train.yaml and imagenet-r_test.yaml
                    (which list paths data/imagenet-r/<wnid>/<file>)"""

CODA_SPLIT_FILES = ("imagenet-r_train.yaml", "imagenet-r_test.yaml")
CODA_SPLIT_MD5 = {
    "imagenet-r_train.yaml": "b90d9c763369c87dbd9becb80abd83b3",
    "imagenet-r_test.yaml": "3ea5a3aa2e96578874254d4ee87321b3",
}
"""md5 of CODA-Prompt's files at commit 6417d4f; other contents are read with a warning."""

SPLITS = ("random", "folders", "coda")
CLASS_ORDERS = ("wnid", "coda")


def random_split_indices(n: int, train_fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """``(train, test)`` indices of InfLoRA's split: the first ``int(train_fraction * n)`` of
    ``torch.randperm(n)`` drawn from a generator seeded with ``seed``."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    k = int(train_fraction * n)
    return perm[:k], perm[k:]


def read_coda_split(path: PathLike, root: Path) -> Tuple[List[Tuple[str, str]], Dict[int, str]]:
    """Read one CODA-Prompt split file.

    :return: ``(path under root, wnid)`` per image, and the file's ``label -> wnid`` map.
    """
    import yaml

    path = Path(path)
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if CODA_SPLIT_MD5.get(path.name, digest) != digest:
        warnings.warn(
            f"{path} differs from CODA-Prompt's file (md5 {digest}, expected "
            f"{CODA_SPLIT_MD5[path.name]}): results will not match published splits"
        )
    with open(path) as f:
        cfg = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if (
        not isinstance(cfg, dict)
        or not {"data", "targets"} <= set(cfg)
        or len(cfg["data"]) != len(cfg["targets"])
    ):
        raise DatasetLayoutError(
            f"{path} is not a CODA-Prompt split file: expected equally long "
            f"'data' (image paths) and 'targets' (labels) lists"
        )
    items, labels = [], {}
    for p, y in zip(cfg["data"], cfg["targets"]):
        parts = Path(p).parts
        if len(parts) < 2:
            raise DatasetLayoutError(f"{path}: image path {p!r} has no <wnid>/<file> part")
        wnid = parts[-2]
        if labels.setdefault(int(y), wnid) != wnid:
            raise DatasetLayoutError(
                f"{path}: label {y} names two classes, {labels[int(y)]} and {wnid}"
            )
        items.append((str(root / wnid / parts[-1]), wnid))
    missing = [p for p, _ in items if not Path(p).is_file()]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} of {len(items)} images listed in {path} are missing under "
            f"{str(root)!r} (e.g. {missing[0]}). Expected layout:\n{IMAGENET_R_LAYOUT}"
        )
    return items, labels


def coda_class_order(label_to_wnid: Dict[int, str], classes: Sequence[str], seed: int) -> List[int]:
    """CODA-Prompt's class order as indices into ``classes`` (sorted WNIDs): the yaml labels
    in order, shuffled by ``random.seed(seed); random.shuffle(order)`` when ``seed > 0``."""
    order = sorted(label_to_wnid)
    if seed > 0:
        random.Random(seed).shuffle(order)
    index = {c: i for i, c in enumerate(classes)}
    return [index[label_to_wnid[y]] for y in order]


def _class_folders(root: Path) -> List[str]:
    classes = sorted(e.name for e in root.iterdir() if e.is_dir())
    if not classes or {"train", "test"} <= set(classes) or classes == ["imagenet-r"]:
        hint = ""
        if {"train", "test"} <= set(classes):
            hint = " (it holds train/ and test/: use split='folders')"
        elif classes == ["imagenet-r"]:
            hint = f" (pass {str(root / 'imagenet-r')!r})"
        raise DatasetLayoutError(
            f"no class folders in ImageNet-R root {str(root)!r}{hint}. "
            f"Expected layout:\n{IMAGENET_R_LAYOUT}"
        )
    return classes


def _coda_files(split_files: Union[None, PathLike, Sequence[PathLike]]) -> Tuple[Path, Path]:
    if split_files is None:
        raise ValueError(
            "split='coda' needs split_files: a folder holding imagenet-r_train.yaml and "
            "imagenet-r_test.yaml (GT-RIPL/CODA-Prompt dataloaders/splits/), or the "
            "two paths; or use split='random'"
        )
    if isinstance(split_files, (str, Path)):
        d = check_dir(split_files, "CODA split folder", IMAGENET_R_LAYOUT)
        files = tuple(d / n for n in CODA_SPLIT_FILES)
    else:
        files = tuple(Path(p) for p in split_files)
    for f in files:
        if not f.is_file():
            raise DatasetLayoutError(
                f"CODA split file {str(f)!r} not found. Expected layout:\n{IMAGENET_R_LAYOUT}"
            )
    return files


def SplitImageNetR(
    root: PathLike,
    n_experiences: int = 10,
    *,
    seed: int = 0,
    split: str = "random",
    split_files: Union[None, PathLike, Sequence[PathLike]] = None,
    class_order: str = "wnid",
    train_fraction: float = 0.8,
    image_size: int = 224,
    resize: Optional[int] = None,
    normalization: NormalizationLike = None,
):
    """Class-incremental ImageNet-R (Avalanche ``nc_benchmark``, no task labels).

    :param root: folder of the extracted dataset (see ``IMAGENET_R_LAYOUT``).
    :param n_experiences: tasks (InfLoRA: 5, 10 or 20); must divide the number of classes.
    :param seed: seed of the random split (``split="random"``) and of CODA's class order.
    :param split: ``"random"``, ``"folders"`` or ``"coda"`` (module docstring).
    :param split_files: for ``"coda"``: folder with both yaml files, or ``(train, test)`` paths.
    :param class_order: ``"wnid"`` (sorted WNIDs, InfLoRA) or ``"coda"`` (needs ``split="coda"``).
    :param train_fraction: train share of the random split (0.8).
    :param image_size: crop size (224); ``resize`` the test resize (default 256 for 224).
    :param normalization: the backbone's input constants (a model, ``Normalization`` or
        ``(mean, std)``; ``None`` keeps [0, 1] pixels, as InfLoRA's code does).
    :return: the benchmark; ``benchmark.info`` records root, split, classes and sizes.
    """
    seed = check_seed(seed)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if class_order not in CLASS_ORDERS:
        raise ValueError(f"class_order must be one of {CLASS_ORDERS}, got {class_order!r}")
    if class_order == "coda" and split != "coda":
        raise ValueError(
            "class_order='coda' needs split='coda' (the order comes from the split files)"
        )
    root = check_dir(root, "ImageNet-R root", IMAGENET_R_LAYOUT)
    classes, train, test, labels = _split(root, split, split_files, train_fraction, seed)
    order = (coda_class_order(labels, classes, seed) if class_order == "coda"
             else list(range(len(classes))))
    return class_incremental(train, test, classes, n_experiences, order, image_size, resize,
                             normalization, name="imagenet_r", root=str(root), split=split,
                             class_order=class_order, seed=seed)


def _split(root: Path, split: str, split_files, train_fraction: float, seed: int):
    """``(classes, train, test, CODA labels or None)``: the files of the train and test splits."""
    labels = None
    if split == "random":
        classes = _class_folders(root)
        samples = scan_classes(root, classes, IMAGENET_R_LAYOUT)
        tr, te = random_split_indices(len(samples), train_fraction, seed)
        return classes, [samples[i] for i in tr], [samples[i] for i in te], labels
    if split == "folders":
        train_root = check_dir(root / "train", "ImageNet-R train folder", IMAGENET_R_LAYOUT)
        test_root = check_dir(root / "test", "ImageNet-R test folder", IMAGENET_R_LAYOUT)
        classes = _class_folders(train_root)
        return (classes, scan_classes(train_root, classes, IMAGENET_R_LAYOUT),
                scan_classes(test_root, classes, IMAGENET_R_LAYOUT), labels)
    (train_raw, labels), (test_raw, _) = (read_coda_split(f, root) for f in _coda_files(split_files))
    classes = sorted(set(labels.values()))
    index = {c: i for i, c in enumerate(classes)}
    train = [(p, index[w]) for p, w in train_raw]
    test = [(p, index[w]) for p, w in test_raw if w in index]
    if len(test) != len(test_raw):
        raise DatasetLayoutError("the CODA test split has classes the train split lacks")
    return classes, train, test, labels
