"""Split ImageNet-100: 5 experiences x 20 classes of ILSVRC2012, read from an ImageNet folder.

Class list (``subset``), shipped in ``avalanche_cts/data`` (see its README for sources):

* ``"ucir1993"`` (default): the UCIR subset, ``np.random.seed(1993); np.random.choice(sorted
  1000 WNIDs, 100, replace=False)`` (LUCIR, PODNet's ``imagenet100ucir``, PyCIL-style loaders);
* ``"podnet"``: the first 100 sorted WNIDs (PODNet's ``imagenet100``, DER, DyTox);
* a path to a text file of WNIDs (whitespace separated), for any other paper's list.

Labels are indices in the sorted subset; tasks are consecutive blocks of the permutation
``np.random.seed(seed); order = np.arange(100); np.random.shuffle(order)`` (UCIR/PODNet use
``seed=1993``: 68, 56, 78, 8, 23, ...). Test images are the official validation images
(50 per class), sorted into class folders. Nothing is downloaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..tokens.normalization import NormalizationLike
from .fmnist import check_seed
from .folders import PathLike, check_dir, class_incremental, scan_classes

__all__ = [
    "IMAGENET100_LAYOUT",
    "SUBSETS",
    "SplitImageNet100",
    "imagenet1k_wnids",
    "read_wnids",
    "seeded_class_order",
    "subset_wnids",
    "ucir_subset",
]

IMAGENET100_LAYOUT = """\
  <root>/                     ILSVRC2012 (CLS-LOC) images
    train/n01440764/*.JPEG    one folder per WNID (the 100 of the subset are enough)
    train/...
    val/n01440764/*.JPEG      validation images sorted into the same class folders
    val/...                   (e.g. with the common valprep.sh)"""

SUBSETS = ("ucir1993", "podnet")


def read_wnids(path: PathLike) -> List[str]:
    """WNIDs of a text file (whitespace separated), in file order."""
    words = Path(path).read_text().split()
    bad = [w for w in words if not (w.startswith("n") and w[1:].isdigit())]
    if not words or bad:
        raise ValueError(f"{path} is not a WNID list (e.g. n01440764); bad entries: {bad[:5]}")
    return words


def _data_file(name: str) -> List[str]:
    return read_wnids(resources.files("avalanche_cts") / "data" / name)


def imagenet1k_wnids() -> List[str]:
    """The 1,000 ILSVRC2012 WNIDs, sorted (shipped list)."""
    return _data_file("imagenet1k_wnids.txt")


def ucir_subset(wnids: Sequence[str], seed: int = 1993, n: int = 100) -> List[str]:
    """UCIR's rule: ``np.random.seed(seed); np.random.choice(sorted(wnids), n, replace=False)``,
    returned sorted (legacy ``RandomState`` stream, stable across NumPy versions)."""
    pick = np.random.RandomState(seed).choice(sorted(wnids), n, replace=False)
    return sorted(str(w) for w in pick)


def seeded_class_order(n: int, seed: int) -> List[int]:
    """``np.random.seed(seed); order = np.arange(n); np.random.shuffle(order)``."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    return order.tolist()


def subset_wnids(subset: str) -> List[str]:
    """Sorted WNIDs of a subset name (``SUBSETS``) or of a WNID file path."""
    if subset == "ucir1993":
        return _data_file("imagenet100_ucir1993.txt")
    if subset == "podnet":
        return imagenet1k_wnids()[:100]
    if Path(subset).is_file():
        return sorted(read_wnids(subset))
    raise ValueError(f"subset must be one of {SUBSETS} or a WNID file, got {subset!r}")


def SplitImageNet100(
    root: PathLike,
    n_experiences: int = 5,
    *,
    seed: int = 1993,
    subset: str = "ucir1993",
    image_size: int = 224,
    resize: Optional[int] = None,
    normalization: NormalizationLike = None,
):
    """Class-incremental ImageNet-100 (Avalanche ``nc_benchmark``, no task labels).

    :param root: ILSVRC2012 folder with ``train/<wnid>`` and ``val/<wnid>``
        (``IMAGENET100_LAYOUT``).
    :param n_experiences: tasks (5 x 20 classes); must divide the number of classes.
    :param seed: seed of the class order (1993: UCIR/PODNet's order).
    :param subset: ``"ucir1993"``, ``"podnet"`` or a WNID file (module docstring).
    :param image_size: crop size; train ``RandomResizedCrop`` + flip, test ``Resize(256)`` +
        ``CenterCrop(224)``, inputs in [0, 1].
    :param normalization: the backbone's input constants (a model, ``Normalization`` or
        ``(mean, std)``; ``None`` keeps [0, 1] pixels).
    :return: the benchmark; ``benchmark.info`` records root, subset, order and sizes.
    """
    seed = check_seed(seed)
    classes = subset_wnids(subset)
    root = check_dir(root, "ImageNet root", IMAGENET100_LAYOUT)
    splits = {}
    for name in ("train", "val"):
        folder = check_dir(root / name, f"ImageNet {name} folder", IMAGENET100_LAYOUT)
        splits[name] = scan_classes(folder, classes, IMAGENET100_LAYOUT)
    return class_incremental(splits["train"], splits["val"], classes, n_experiences,
                             seeded_class_order(len(classes), seed), image_size, resize,
                             normalization, name="imagenet100", root=str(root), subset=subset,
                             seed=seed)
