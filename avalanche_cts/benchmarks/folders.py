"""Image-folder datasets and class-incremental streams over them (ImageNet-style layouts).

Files are listed exactly as torchvision's ``ImageFolder`` lists them (sorted class folders,
then sorted files, ``IMG_EXTENSIONS``), so seeded splits match code built on ``ImageFolder``.
Items are ``(PIL RGB image, label)``; the stream applies the transforms (inputs in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from torch.utils.data import Dataset

from ..models import resolve_normalization
from ..tokens.normalization import NormalizationLike

__all__ = [
    "DatasetLayoutError",
    "ImageFiles",
    "check_dir",
    "class_incremental",
    "image_transforms",
    "scan_classes",
]

PathLike = Union[str, Path]


class DatasetLayoutError(FileNotFoundError):
    """A dataset root is missing or does not have the expected folder layout."""


def check_dir(path: PathLike, what: str, layout: str) -> Path:
    """Return ``path`` as a ``Path``; raise :class:`DatasetLayoutError` showing ``layout`` if
    it is not a directory (an empty path included: it would silently mean the working folder)."""
    if not str(path).strip():
        raise DatasetLayoutError(f"{what} is empty: give the dataset folder. Expected layout:\n"
                                 f"{layout}")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DatasetLayoutError(
            f"{what} {str(p)!r} is not a directory. Expected layout:\n{layout}"
        )
    return p


class ImageFiles(Dataset):
    """Images read from files: item ``i`` is ``(PIL RGB image, label)``.

    :param samples: ``(path, label)`` pairs.
    :param classes: class names (WNIDs), ``classes[label]``.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], classes: Sequence[str]):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.targets = [y for _, y in self.samples]
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, y = self.samples[i]
        with Image.open(path) as im:
            return im.convert("RGB"), y


def scan_classes(root: Path, classes: Sequence[str], layout: str) -> List[Tuple[str, int]]:
    """``(path, index in classes)`` of every image in ``root/<class>/``, in ``ImageFolder``
    order; raise :class:`DatasetLayoutError` for missing or empty class folders."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    missing = [c for c in classes if not (root / c).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} of {len(classes)} class folders are missing in {str(root)!r} "
            f"(e.g. {', '.join(missing[:5])}). Expected layout:\n{layout}"
        )
    try:
        return make_dataset(
            str(root), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS
        )
    except FileNotFoundError as e:
        raise DatasetLayoutError(f"{e} in {str(root)!r}. Expected layout:\n{layout}") from None


def image_transforms(image_size: int = 224, resize: Optional[int] = None,
                     normalization: NormalizationLike = None):
    """``(train, eval)`` transforms: train ``RandomResizedCrop(image_size)`` (scale 0.08-1) +
    horizontal flip; eval ``Resize(resize)`` + ``CenterCrop(image_size)``; both ``ToTensor``
    and ``Normalize`` with the model's constants (``normalization``: a model, ``Normalization``
    or ``(mean, std)``; ``None`` keeps [0, 1]). ``resize`` defaults to ``image_size * 256 / 224``."""
    from torchvision import transforms as T

    norm = resolve_normalization(normalization, 3)
    tail = [T.ToTensor(), T.Normalize(norm.mean, norm.std)]
    resize = resize or round(image_size * 256 / 224)
    train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *tail])
    test = T.Compose([T.Resize(resize), T.CenterCrop(image_size), *tail])
    return train, test


def class_incremental(
    train: Sequence[Tuple[str, int]],
    test: Sequence[Tuple[str, int]],
    classes: Sequence[str],
    n_experiences: int,
    order: Sequence[int],
    image_size: int = 224,
    resize: Optional[int] = None,
    normalization: NormalizationLike = None,
    **info,
):
    """Avalanche ``nc_benchmark`` over image files ``(path, label)``: consecutive blocks of
    ``order`` (class ids) form the experiences; labels keep their values (one head over all
    classes). ``benchmark.info`` is ``info`` with the task count, sizes, classes and order."""
    from avalanche.benchmarks import nc_benchmark

    n = len(order)
    if n_experiences <= 0 or n % n_experiences:
        raise ValueError(f"n_experiences={n_experiences} does not divide the {n} classes evenly")
    train_set, test_set = ImageFiles(train, classes), ImageFiles(test, classes)
    for name, ds in (("train", train_set), ("test", test_set)):
        empty = sorted(set(order) - set(ds.targets))
        if empty:
            raise DatasetLayoutError(f"classes {empty[:10]} have no {name} images")
    train_t, eval_t = image_transforms(image_size, resize, normalization)
    bm = nc_benchmark(
        train_set,
        test_set,
        n_experiences=n_experiences,
        task_labels=False,
        shuffle=False,
        fixed_class_order=list(order),
        train_transform=train_t,
        eval_transform=eval_t,
    )
    bm.info = dict(info, n_experiences=n_experiences, n_train=len(train), n_test=len(test),
                   classes=list(classes), order=list(order))
    return bm
