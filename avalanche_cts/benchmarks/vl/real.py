"""The paper's vision-language streams from local files (nothing is downloaded).

* :func:`vqa_sequence`: VQA v2 -> CLEVR -> Visual Genome QA, one task each. VQA v2 and Visual
  Genome from BLIP's annotation files (a JSON list of ``{"question", "answer", "image"}``;
  ``answer`` a list for VQA v2), CLEVR v1.0 as downloaded (its ``questions/CLEVR_<split>_
  questions.json`` and ``images/<split>/``; the val split tests, as CLEVR's test answers are
  not public). Answer weights as BLIP's: VQA v2 each distinct answer its share of the ten,
  Visual Genome 0.2, CLEVR 1.0 (one answer); every reference answer is kept for the metrics.
* :func:`coco_class_captions`: MS-COCO captions (BLIP's Karpathy-split files) split into the
  paper's five class tasks (book, backpack, car, truck, bottle). **Rule:** an image belongs to
  class c when its instance annotations contain c and none of the other four classes (images
  with two or more of them are left out, so tasks are mutually exclusive); every task is then
  cut to the size of the smallest one by a seeded draw (per split), so tasks are equally sized.

Images are read with PIL, converted to RGB and resized to ``image_size`` x ``image_size``
(bicubic, BLIP's evaluation transform); the training crop is the template's (``crop_scale``).
A wrong root raises :class:`~avalanche_cts.benchmarks.DatasetLayoutError` showing the layout.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..folders import DatasetLayoutError
from ...tokens.normalization import NormalizationLike
from .data import ImageTextDataset, vl_benchmark
from ...models.blip_text import VLCollator
from ...models.blip_text import TextSpec, encode, load_tokenizer, pre_caption, pre_question

__all__ = ["COCO_CLASSES", "VQA_LAYOUT", "COCO_LAYOUT", "coco_class_captions", "vqa_sequence"]

PathLike = Union[str, Path]
VQA_TASKS = ("vqa_v2", "clevr", "vg")
COCO_CLASSES = ("book", "backpack", "car", "truck", "bottle")

VQA_LAYOUT = """\
ROOT/
  annotations/
    vqa_train.json  vqa_val.json      BLIP's VQA v2 files: [{"question", "answer": [...], "image"}]
    vg_qa.json                        BLIP's Visual Genome QA: [{"question", "answer", "image"}]
                                      (split here: every 10th image tests)
  coco/train2014/  coco/val2014/      images named by "image" of vqa_*.json
  clevr/                              CLEVR v1.0 as unzipped (its folder CLEVR_v1.0, renamed or linked)
    questions/CLEVR_train_questions.json  questions/CLEVR_val_questions.json
                                      {"questions": [{"question", "answer", "image_filename"}, ...]}
    images/train/  images/val/        CLEVR_train_000000.png ...
  vg/image/                           images named by "image" of vg_qa.json"""

COCO_LAYOUT = """\
ROOT/
  annotations/
    coco_karpathy_train.json          BLIP's Karpathy split: [{"caption", "image", "image_id"}]
    coco_karpathy_test.json           [{"image", "caption": [5 captions]}]
    instances_train2014.json  instances_val2014.json   COCO instance annotations (classes)
  coco/train2014/  coco/val2014/      images named by "image" (e.g. val2014/COCO_val2014_000000391895.jpg)"""

_IMAGE_ROOTS = {"vqa_v2": "coco", "clevr": "clevr", "vg": "vg"}
_FILES = {"vqa_v2": ("annotations/vqa_train.json", "annotations/vqa_val.json"),
          "clevr": ("clevr/questions/CLEVR_train_questions.json",
                    "clevr/questions/CLEVR_val_questions.json"),
          "vg": ("annotations/vg_qa.json", None)}
_VG_WEIGHT = 0.2
"""BLIP's weight of a Visual Genome answer (``vqa_dataset.py``); VQA v2 answers weigh their
share of the ten, CLEVR's single answer 1."""


def _require(path: Path, layout: str) -> Path:
    if not path.exists():
        raise DatasetLayoutError(f"{path} is missing. Expected layout:\n{layout}")
    return path


def _read_json(path: Path, layout: str):
    try:
        return json.loads(_require(path, layout).read_text())
    except json.JSONDecodeError as e:
        raise DatasetLayoutError(f"{path} is not valid JSON ({e}). Expected layout:\n{layout}") from None


def _entries(path: Path, data, keys: Sequence[str], layout: str) -> List[Dict]:
    """``data`` if it is a list of objects with ``keys``, else a layout error naming ``path``."""
    bad = ("a JSON list" if not isinstance(data, list) else next(
        (f"entries with {list(keys)}; entry {i} is {str(a)[:80]}" for i, a in enumerate(data)
         if not isinstance(a, dict) or any(k not in a for k in keys)), None))
    if bad:
        raise DatasetLayoutError(f"{path} does not hold {bad}. Expected layout:\n{layout}")
    return data


def _read_annotations(path: Path, layout: str) -> List[Dict]:
    """A BLIP annotation file: a list of ``{"question", "answer", "image"}``."""
    return _entries(path, _read_json(path, layout), ("question", "answer", "image"), layout)


def _read_clevr(path: Path, layout: str) -> List[Dict]:
    """CLEVR v1.0 questions as BLIP-style entries (image: ``images/<split>/<file>``)."""
    data = _read_json(path, layout)
    if not isinstance(data, dict) or "questions" not in data:
        raise DatasetLayoutError(f"{path} is not a CLEVR v1.0 questions file (an object with "
                                 f"\"questions\"). Expected layout:\n{layout}")
    split = path.name.split("_")[1]
    keys = ("question", "answer", "image_filename")
    return [dict(question=q["question"], answer=q["answer"],
                 image=f"images/{q.get('split', split)}/{q['image_filename']}")
            for q in _entries(path, data["questions"], keys, layout)]


class ImageFileReader:
    """``i -> (3, S, S)`` float tensor in [0, 1]: file ``root / names[i]``, RGB, bicubic resize."""

    def __init__(self, root: Path, names: Sequence[str], size: int, layout: str):
        self.root, self.names, self.size, self.layout = Path(root), list(names), int(size), layout

    def __call__(self, i: int) -> Tensor:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        path = _require(self.root / self.names[i], self.layout)
        with Image.open(path) as im:
            im = im.convert("RGB").resize((self.size, self.size), Image.BICUBIC)
            return pil_to_tensor(im).float().div_(255.0)


def _subset(n: int, k: Optional[int], g: torch.Generator) -> List[int]:
    """``k`` of ``range(n)`` drawn with ``g`` (all, in order, when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def _encoder(tokenizer, skip_unknown: bool) -> Callable[[str, str], Optional[Tensor]]:
    def ids(text: str, what: str) -> Optional[Tensor]:
        try:
            return encode(tokenizer, text, what)
        except ValueError:
            if skip_unknown:
                return None
            raise
    return ids


def _vqa_items(anns: List[Dict], tokenizer, skip_unknown: bool, weight: Optional[float]):
    """(image names, question ids, answer ids per item, weights, raw answers); ``weight``:
    every answer's weight, or ``None`` for each distinct answer's share of the answers."""
    ids = _encoder(tokenizer, skip_unknown)
    names, questions, answers, weights, refs = [], [], [], [], []
    for a in anns:
        raw = a["answer"] if isinstance(a["answer"], list) else [a["answer"]]
        distinct = list(dict.fromkeys(raw))
        q = ids(pre_question(a["question"]), "question")
        ans = [ids(x, "answer") for x in distinct]
        if q is None or any(x is None for x in ans):
            continue
        names.append(a["image"])
        questions.append(q)
        answers.append(ans)
        weights.append(torch.tensor([raw.count(x) / len(raw) if weight is None else weight
                                     for x in distinct]))
        refs.append(raw)
    return names, questions, answers, weights, refs


def _vg_split(anns: List[Dict]) -> Tuple[List[Dict], List[Dict]]:
    """Visual Genome QA by image: the images at every 10th place of the sorted image list test."""
    images = sorted({a["image"] for a in anns})
    test = set(images[9::10])
    return [a for a in anns if a["image"] not in test], [a for a in anns if a["image"] in test]


def vqa_sequence(root: PathLike, tokenizer: Union[str, object], *, image_size: int = 480,
                 tasks: Sequence[str] = VQA_TASKS, train_per_task: Optional[int] = None,
                 test_per_task: Optional[int] = None, seed: int = 0, skip_unknown: bool = False,
                 normalization: NormalizationLike = None):
    """Sequential VQA (default VQA v2 -> CLEVR -> Visual Genome) from ``root`` (layout:
    :data:`VQA_LAYOUT`), an Avalanche benchmark with task labels and dict items.

    :param tokenizer: the model's tokenizer, or its checkpoint folder / hub name.
    :param image_size: side the images are resized to (the paper: 480).
    :param train_per_task: seeded subset of training questions per task (``None``: all).
    :param test_per_task: seeded subset of test questions per task (``None``: all).
    :param skip_unknown: drop questions whose words the tokenizer maps to ``[UNK]`` (default:
        raise naming the word).
    :param normalization: the model's input normalisation (BLIP: CLIP constants).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"VQA root {str(root)!r} is not a directory. Expected layout:\n{VQA_LAYOUT}")
    bad = [t for t in tasks if t not in VQA_TASKS]
    if bad or not tasks:
        raise ValueError(f"tasks must be a non-empty list from {VQA_TASKS}, got {list(tasks)}")
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for t, name in enumerate(tasks):
        read = _read_clevr if name == "clevr" else _read_annotations
        train_file, test_file = _FILES[name]
        anns = read(root / train_file, VQA_LAYOUT)
        splits = _vg_split(anns) if test_file is None else (anns, read(root / test_file, VQA_LAYOUT))
        weight = {"vqa_v2": None, "clevr": 1.0, "vg": _VG_WEIGHT}[name]
        for anns, k, out in ((splits[0], train_per_task, train), (splits[1], test_per_task, test)):
            anns = [anns[i] for i in _subset(len(anns), k, g)]
            names, qs, ans, ws, refs = _vqa_items(anns, tok, skip_unknown, weight)
            reader = ImageFileReader(root / _IMAGE_ROOTS[name], names, image_size, VQA_LAYOUT)
            out.append(ImageTextDataset(reader, qs, ans, refs, t, weights=ws,
                                        normalization=normalization))
    info = dict(name="vqa_sequence", root=str(root), tasks=list(tasks), image_size=image_size,
                train_per_task=train_per_task, test_per_task=test_per_task, seed=seed)
    return vl_benchmark(train, test, VLCollator(TextSpec.from_tokenizer(tok), "vqa"), info, tok)


def _coco_id(image: str) -> int:
    m = re.search(r"(\d+)\.\w+$", image)
    if m is None:
        raise DatasetLayoutError(f"cannot read a COCO image id from {image!r}. Expected layout:\n{COCO_LAYOUT}")
    return int(m.group(1))


def _image_classes(root: Path, classes: Sequence[str]) -> Dict[int, set]:
    """COCO image id -> the set of ``classes`` among its instance annotations."""
    out: Dict[int, set] = {}
    for split in ("train2014", "val2014"):
        inst = _read_json(root / "annotations" / f"instances_{split}.json", COCO_LAYOUT)
        names = {c["id"]: c["name"] for c in inst["categories"]}
        missing = set(classes) - set(names.values())
        if missing:
            raise ValueError(f"COCO has no categories {sorted(missing)}; choose from {sorted(names.values())}")
        for a in inst["annotations"]:
            name = names[a["category_id"]]
            if name in classes:
                out.setdefault(a["image_id"], set()).add(name)
    return out


def coco_class_captions(root: PathLike, tokenizer: Union[str, object], *, image_size: int = 384,
                        classes: Sequence[str] = COCO_CLASSES, train_per_task: Optional[int] = None,
                        test_per_task: Optional[int] = None, seed: int = 0,
                        prompt: str = "a picture of", skip_unknown: bool = False,
                        normalization: NormalizationLike = None):
    """Class-incremental COCO captioning: task t holds the images whose only class among
    ``classes`` is ``classes[t]``, every task equally sized (module docstring); layout:
    :data:`COCO_LAYOUT`. Training uses the Karpathy train split (every caption of an image is a
    reference; one is drawn per step), evaluation the Karpathy test split.

    :param train_per_task: cap on training images per task after equalising (``None``: all).
    :param test_per_task: same for test images.
    :param prompt: BLIP's caption prompt, prepended in training and generation.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"COCO root {str(root)!r} is not a directory. Expected layout:\n{COCO_LAYOUT}")
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    ids = _encoder(tok, skip_unknown)
    owners = _image_classes(root, classes)
    g = torch.Generator().manual_seed(seed)
    per_split = []
    for file, k in (("coco_karpathy_train.json", train_per_task), ("coco_karpathy_test.json", test_per_task)):
        caps: Dict[str, List[str]] = {}
        path = root / "annotations" / file
        for a in _entries(path, _read_json(path, COCO_LAYOUT), ("caption", "image"), COCO_LAYOUT):
            c = a["caption"]
            caps.setdefault(a["image"], []).extend(c if isinstance(c, list) else [c])
        by_class: Dict[str, List[str]] = {c: [] for c in classes}
        for image in sorted(caps):
            found = owners.get(_coco_id(image), set())
            if len(found) == 1:
                by_class[next(iter(found))].append(image)
        empty = [c for c, v in by_class.items() if not v]
        if empty:
            raise ValueError(f"{file}: no image shows {empty} without the other classes "
                             f"{[c for c in classes if c not in empty]}; choose other classes")
        size = min(len(v) for v in by_class.values())
        size = size if k is None else min(size, k)
        per_split.append([(c, [by_class[c][i] for i in _subset(len(by_class[c]), size, g)], caps)
                          for c in classes])
    train, test = [], []
    for split, out in zip(per_split, (train, test)):
        for t, (cls, images, caps) in enumerate(split):
            refs = [caps[im] for im in images]  # raw: COCO evaluation tokenises them itself
            targets = [[x for x in (ids(pre_caption(r), "caption") for r in rs) if x is not None]
                       for rs in refs]
            keep = [i for i, ts in enumerate(targets) if ts]
            reader = ImageFileReader(root / "coco", [images[i] for i in keep], image_size, COCO_LAYOUT)
            out.append(ImageTextDataset(reader, None, [targets[i] for i in keep],
                                        [refs[i] for i in keep], t, normalization=normalization))
    info = dict(name="coco_class_captions", root=str(root), classes=list(classes),
                image_size=image_size, train_per_task=train_per_task, test_per_task=test_per_task,
                seed=seed, rule="exclusive, equalised")
    spec = TextSpec.from_tokenizer(tok, prompt)
    return vl_benchmark(train, test, VLCollator(spec, "caption"), info, tok)
