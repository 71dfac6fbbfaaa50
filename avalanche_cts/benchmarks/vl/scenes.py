"""Generated vision-language streams: small scenes of coloured shapes with questions or captions.

Everything is drawn in memory from a seed (no files, no download): 64 x 64 RGB scenes of shapes
of radius 4.5-7.5 px centred on corners of the 8 x 8 patch grid (T = 64 tokens): every object
covers exactly 2 x 2 tokens (6% of them) and no two objects share a token, which keeps shapes
learnable by a tiny ViT from a few hundred steps; a closed vocabulary (:data:`SCENE_WORDS`, one
tokenizer for every stream and for pretraining).

* :func:`scene_vqa`: three visually distinct VQA tasks mirroring VQA v2 -> CLEVR -> Visual
  Genome: ``colour`` ("what colour is the circle", textured background), ``count`` ("how many
  squares are there", flat grey background, 1-3 of them among other shapes) and ``left``
  ("what is left of the triangle", dark background). Every answer depends on the few tokens
  of the objects the question is about (``regions`` marks them).
* :func:`scene_captions`: class-incremental captioning, one shape class per task (five tasks,
  like the paper's book, backpack, car, truck, bottle), three reference captions per image
  naming size, colour, class and position.
* :func:`pretraining_vqa`: other question templates on another background (gradient), images
  drawn from their own random stream, to pretrain a tiny BLIP the way BLIP is pretrained before
  the paper's fine-tuning: it learns colours, shapes and counting words, not the stream's tasks.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...tokens.normalization import NormalizationLike
from .data import ImageTextDataset, vl_benchmark
from ...models.blip_text import VLCollator
from ...models.blip_text import TextSpec, encode
from ...models.blip_vocab import (
    _PLURAL,
    CAPTION_CLASSES,
    COLOURS,
    SCENE_WORDS,
    SHAPES,
    scene_tokenizer,
)

__all__ = [
    "CAPTION_CLASSES",
    "CAPTION_PROMPT",
    "COLOURS",
    "PRETRAIN_TEMPLATES",
    "SCENE_SIZE",
    "SCENE_WORDS",
    "SHAPES",
    "VQA_TASKS",
    "draw_scenes",
    "pretraining_vqa",
    "scene_captions",
    "scene_tokenizer",
    "scene_vqa",
]

SCENE_SIZE = 64
PATCH = 8
VQA_TASKS = ("colour", "count", "left")
CAPTION_PROMPT = "a picture of"
_BACKGROUNDS = {"colour": "textured", "count": "flat", "left": "dark"}

_OFFSETS = {"vqa": 1_000_003, "caption": 2_000_003, "pretrain": 3_000_017}
"""Random-stream offsets: stream, captions and pretraining images never share a generator."""


# ----------------------------------------------------------------------------- drawing
def _background(style: str, n: int, g: torch.Generator) -> Tensor:
    """``(n, 3, S, S)`` float backgrounds in 0-255 without saturated colours."""
    s = SCENE_SIZE
    if style == "textured":
        low = 90 + 70 * torch.rand(n, 1, 6, 6, generator=g) + 12 * torch.rand(n, 3, 6, 6, generator=g)
        x = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
        return x + 24 * (torch.rand(n, 3, s, s, generator=g) - 0.5)
    if style == "flat":
        return 128 + 8 * (torch.rand(n, 1, s, s, generator=g) - 0.5).expand(n, 3, s, s)
    if style == "dark":
        return 24 + 16 * torch.rand(n, 1, s, s, generator=g).expand(n, 3, s, s)
    if style == "gradient":
        ramp = torch.linspace(60, 170, s)[None, None, :, None].expand(n, 3, s, s)
        return ramp + 10 * (torch.rand(n, 1, s, s, generator=g) - 0.5)
    raise ValueError(f"unknown background {style!r}")


def _shape_mask(kind: str, cy: float, cx: float, r: float) -> Tensor:
    """``(S, S)`` bool pixels of a shape centred at ``(cy, cx)`` with radius ``r``."""
    c = torch.arange(SCENE_SIZE, dtype=torch.float32) + 0.5
    dy, dx = (c[:, None] - cy), (c[None, :] - cx)
    if kind == "circle":
        return dy ** 2 + dx ** 2 <= r ** 2
    if kind == "square":
        return (dy.abs() <= 0.8 * r) & (dx.abs() <= 0.8 * r)
    if kind == "triangle":
        return (dy >= -r) & (dy <= 0.75 * r) & (dx.abs() <= 0.6 * (dy + r))
    if kind == "diamond":
        return dy.abs() + dx.abs() <= r
    if kind == "cross":
        arm = r / 3
        return ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    raise ValueError(f"unknown shape {kind!r}")


def _token_mask(pixels: Tensor) -> Tensor:
    """``(S, S)`` bool pixels to ``(T,)``: the tokens holding any of them."""
    g = SCENE_SIZE // PATCH
    return pixels.reshape(g, PATCH, g, PATCH).any(3).any(1).reshape(-1)


Obj = Tuple[str, str, float, float, float]
"""(shape, colour, cy, cx, radius)."""


def draw_scenes(objects: Sequence[Sequence[Obj]], style: str, g: torch.Generator
                ) -> Tuple[Tensor, List[List[Tensor]]]:
    """Draw one scene per object list on ``style`` background.

    :return: ``(N, 3, S, S)`` uint8 scenes and, per scene and object, its ``(T,)`` token mask.
    """
    images = _background(style, len(objects), g)
    masks = []
    for i, objs in enumerate(objects):
        masks.append([])
        for shape, colour, cy, cx, r in objs:
            m = _shape_mask(shape, cy, cx, r)
            rgb = torch.tensor(COLOURS[colour], dtype=torch.float32)[:, None]
            jitter = 16 * (torch.rand(3, int(m.sum()), generator=g) - 0.5)
            images[i][:, m] = rgb + jitter
            masks[-1].append(_token_mask(m))
    return images.round().clamp(0, 255).to(torch.uint8), masks


def _pick(seq: Sequence, g: torch.Generator, k: int = 1) -> List:
    """``k`` distinct elements of ``seq`` in random order."""
    return [seq[int(i)] for i in torch.randperm(len(seq), generator=g)[:k]]


def _place(n: int, g: torch.Generator, distinct_columns: bool = False
           ) -> List[Tuple[float, float]]:
    """Centres of ``n`` objects on the corners of the patch grid (pixel multiples of
    :data:`PATCH`), so that each object covers exactly 2 x 2 tokens and no two objects share a
    token (and, with ``distinct_columns``, no two share a token column)."""
    side = SCENE_SIZE // PATCH - 1
    for _attempt in range(200):
        out: List[Tuple[int, int]] = []
        for cy, cx in (1 + torch.randint(side, (n, 2), generator=g)).tolist():
            if all(max(abs(cy - y), abs(cx - x)) >= 2 and (not distinct_columns or abs(cx - x) >= 2)
                   for y, x in out):
                out.append((cy, cx))
        if len(out) == n:
            return [(float(PATCH * y), float(PATCH * x)) for y, x in out]
    raise RuntimeError(f"could not place {n} objects")


def _radius(g: torch.Generator, lo: float = 5.5, hi: float = 7.5) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g))


def _encoder(tokenizer):
    """:func:`encode` with each distinct text tokenised once (templates repeat)."""
    cache: Dict[str, Tensor] = {}

    def ids(text: str, what: str) -> Tensor:
        if text not in cache:
            cache[text] = encode(tokenizer, text, what)
        return cache[text]

    return ids


# ---------------------------------------------------------------------- VQA templates
Sample = Tuple[List[Obj], str, str, List[int]]
"""(objects, question, answer, indices of the objects the question is about)."""


def _colour_question(g: torch.Generator) -> Sample:
    shapes = _pick(SHAPES, g, 2 + int(torch.randint(2, (), generator=g)))
    colours = _pick(list(COLOURS), g, len(shapes))
    radii = [_radius(g) for _ in shapes]
    objs = [(s, c, *p, r) for s, c, p, r in zip(shapes, colours, _place(len(radii), g), radii)]
    k = int(torch.randint(len(objs), (), generator=g))
    return objs, f"what colour is the {shapes[k]}", colours[k], [k]


def _count_question(g: torch.Generator) -> Sample:
    target = _pick(SHAPES, g)[0]
    n = 1 + int(torch.randint(3, (), generator=g))
    others = [s for s in SHAPES if s != target]
    extra = [others[int(torch.randint(len(others), (), generator=g))]
             for _ in range(int(torch.randint(3, (), generator=g)))]
    shapes = [target] * n + extra
    radii = [_radius(g) for _ in shapes]
    objs = [(s, _pick(list(COLOURS), g)[0], *p, r)
            for s, p, r in zip(shapes, _place(len(radii), g), radii)]
    return objs, f"how many {_PLURAL[target]} are there", str(n), list(range(n))


def _left_question(g: torch.Generator) -> Sample:
    shapes = _pick(SHAPES, g, 2 + int(torch.randint(2, (), generator=g)))
    colours = _pick(list(COLOURS), g, len(shapes))
    radii = [_radius(g) for _ in shapes]
    objs = [(s, c, *p, r) for s, c, p, r in
            zip(shapes, colours, _place(len(radii), g, distinct_columns=True), radii)]
    by_x = sorted(range(len(objs)), key=lambda i: objs[i][3])
    j = 1 + int(torch.randint(len(objs) - 1, (), generator=g))  # not the leftmost
    asked, left = by_x[j], by_x[j - 1]
    return objs, f"what is left of the {shapes[asked]}", shapes[left], [asked, left]


def _side_colour_question(g: torch.Generator) -> Sample:
    shapes = _pick(SHAPES, g, 2)
    colours = _pick(list(COLOURS), g, 2)
    radii = [_radius(g) for _ in shapes]
    objs = [(s, c, *p, r) for s, c, p, r in
            zip(shapes, colours, _place(len(radii), g, distinct_columns=True), radii)]
    side = "left" if torch.rand((), generator=g) < 0.5 else "right"
    k = min(range(2), key=lambda i: objs[i][3] * (1 if side == "left" else -1))
    return objs, f"what colour is the object on the {side}", colours[k], [k]


def _shape_by_colour_question(g: torch.Generator) -> Sample:
    shapes = [_pick(SHAPES, g)[0] for _ in range(2 + int(torch.randint(2, (), generator=g)))]
    colours = _pick(list(COLOURS), g, len(shapes))
    radii = [_radius(g) for _ in shapes]
    objs = [(s, c, *p, r) for s, c, p, r in zip(shapes, colours, _place(len(radii), g), radii)]
    k = int(torch.randint(len(objs), (), generator=g))
    return objs, f"what shape is the {colours[k]} object", shapes[k], [k]


def _some_objects(g: torch.Generator) -> Tuple[List[str], List[Obj]]:
    shapes = [_pick(SHAPES, g)[0] for _ in range(1 + int(torch.randint(4, (), generator=g)))]
    radii = [_radius(g) for _ in shapes]
    return shapes, [(s, _pick(list(COLOURS), g)[0], *p, r)
                    for s, p, r in zip(shapes, _place(len(radii), g), radii)]


def _presence_question(g: torch.Generator) -> Sample:
    shapes, objs = _some_objects(g)
    asked = _pick(SHAPES, g)[0]
    about = [i for i, s in enumerate(shapes) if s == asked]
    return objs, f"is there a {asked}", "yes" if about else "no", about


def _count_all_question(g: torch.Generator) -> Sample:
    _, objs = _some_objects(g)
    return objs, "how many objects are there", str(len(objs)), list(range(len(objs)))


PRETRAIN_TEMPLATES = {"side_colour": _side_colour_question,
                      "shape_by_colour": _shape_by_colour_question,
                      "presence": _presence_question, "count_all": _count_all_question}
"""Pretraining question templates (none is a stream task)."""


def _mixture(templates: Sequence[str]):
    makers = [PRETRAIN_TEMPLATES[t] for t in templates]

    def make(g: torch.Generator) -> Sample:
        return makers[int(torch.randint(len(makers), (), generator=g))](g)

    return make


_TEMPLATES = {"colour": _colour_question, "count": _count_question, "left": _left_question}


def _vqa_task(make, style: str, n: int, g: torch.Generator, tokenizer, task: int,
              normalization) -> ImageTextDataset:
    samples = [make(g) for _ in range(n)]
    images, masks = draw_scenes([s[0] for s in samples], style, g)
    regions = torch.stack([
        torch.stack([masks[i][k] for k in s[3]]).any(0) if s[3] else torch.zeros(PATCH ** 2, dtype=torch.bool)
        for i, s in enumerate(samples)])
    ids = _encoder(tokenizer)
    questions = [ids(s[1], "question") for s in samples]
    answers = [[ids(s[2], "answer")] for s in samples]
    return ImageTextDataset(images, questions, answers, [[s[2]] for s in samples], task,
                            normalization=normalization, regions=regions)


def scene_vqa(n_train: int = 1000, n_test: int = 200, *, seed: int = 0,
              tasks: Sequence[str] = VQA_TASKS, normalization: NormalizationLike = None):
    """Sequential VQA on generated scenes (Avalanche benchmark, task labels, dict items).

    :param n_train: training questions per task (one scene each).
    :param n_test: test questions per task.
    :param tasks: task templates in stream order, from :data:`VQA_TASKS`.
    :param normalization: the model's input normalisation (BLIP: CLIP constants).
    """
    bad = [t for t in tasks if t not in _TEMPLATES]
    if bad or not tasks:
        raise ValueError(f"tasks must be a non-empty list from {VQA_TASKS}, got {list(tasks)}")
    tok = scene_tokenizer()
    g = torch.Generator().manual_seed(seed + _OFFSETS["vqa"])
    train, test = [], []
    for t, name in enumerate(tasks):
        for n, out in ((n_train, train), (n_test, test)):
            out.append(_vqa_task(_TEMPLATES[name], _BACKGROUNDS[name], n, g, tok, t, normalization))
    info = dict(name="scene_vqa", n_train=n_train, n_test=n_test, seed=seed, tasks=list(tasks))
    return vl_benchmark(train, test, VLCollator(TextSpec.from_tokenizer(tok), "vqa"), info, tok)


def pretraining_vqa(n: int, *, seed: int = 0, templates: Sequence[str] = tuple(PRETRAIN_TEMPLATES),
                    normalization: NormalizationLike = None) -> ImageTextDataset:
    """``n`` pretraining questions drawn from ``templates`` (:data:`PRETRAIN_TEMPLATES`) on the
    gradient background, from their own random stream."""
    bad = [t for t in templates if t not in PRETRAIN_TEMPLATES]
    if bad or not templates:
        raise ValueError(f"templates must be a non-empty list from {list(PRETRAIN_TEMPLATES)}, "
                         f"got {list(templates)}")
    g = torch.Generator().manual_seed(seed + _OFFSETS["pretrain"])
    return _vqa_task(_mixture(templates), "gradient", n, g, scene_tokenizer(), 0, normalization)


# --------------------------------------------------------------------------- captions
_V = {True: "top", False: "bottom"}
_H = {True: "left", False: "right"}


def _caption_scene(shape: str, g: torch.Generator) -> Tuple[Obj, List[str]]:
    large = bool(torch.rand((), generator=g) < 0.5)
    r = _radius(g, 6.5, 7.5) if large else _radius(g, 4.5, 5.5)
    top, left = (torch.rand(2, generator=g) < 0.5).tolist()
    cy, cx = (PATCH * (1 + torch.randint(3, (2,), generator=g))).tolist()
    cy, cx = (cy if top else SCENE_SIZE - cy), (cx if left else SCENE_SIZE - cx)
    colour = _pick(list(COLOURS), g)[0]
    size, where = ("large" if large else "small"), f"{_V[top]} {_H[left]}"
    refs = [f"a {size} {colour} {shape} in the {where}",
            f"a {colour} {shape} in the {where} of the picture",
            f"there is a {size} {colour} {shape}"]
    return (shape, colour, float(cy), float(cx), r), refs


def scene_captions(n_train: int = 600, n_test: int = 100, *, seed: int = 0,
                   classes: Sequence[str] = CAPTION_CLASSES,
                   normalization: NormalizationLike = None):
    """Class-incremental captioning on generated scenes: task t shows only ``classes[t]`` (one
    object on a random background); three reference captions per image. Training prepends
    :data:`CAPTION_PROMPT` as BLIP does."""
    bad = [c for c in classes if c not in CAPTION_CLASSES]
    if bad or not classes:
        raise ValueError(f"classes must be a non-empty list from {CAPTION_CLASSES}, got {list(classes)}")
    tok = scene_tokenizer()
    g = torch.Generator().manual_seed(seed + _OFFSETS["caption"])
    styles = ("textured", "flat", "dark")
    train, test = [], []
    for t, shape in enumerate(classes):
        for n, out in ((n_train, train), (n_test, test)):
            scenes = [_caption_scene(shape, g) for _ in range(n)]
            style = torch.randint(len(styles), (n,), generator=g)
            images = torch.empty(n, 3, SCENE_SIZE, SCENE_SIZE, dtype=torch.uint8)
            regions = torch.empty(n, PATCH ** 2, dtype=torch.bool)
            for k, name in enumerate(styles):
                idx = (style == k).nonzero()[:, 0].tolist()
                if idx:
                    img, masks = draw_scenes([[scenes[i][0]] for i in idx], name, g)
                    images[idx] = img
                    regions[idx] = torch.stack([m[0] for m in masks])
            refs = [s[1] for s in scenes]
            ids = _encoder(tok)
            caps = [[ids(r, "caption") for r in rs] for rs in refs]
            out.append(ImageTextDataset(images, None, caps, refs, t, normalization=normalization,
                                        regions=regions))
    info = dict(name="scene_captions", n_train=n_train, n_test=n_test, seed=seed,
                classes=list(classes))
    spec = TextSpec.from_tokenizer(tok, CAPTION_PROMPT)
    return vl_benchmark(train, test, VLCollator(spec, "caption"), info, tok)
