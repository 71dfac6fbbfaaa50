"""Image-text datasets for BLIP, their collate function and Avalanche streams built from them.

An item is a dict:

* ``pixel_values``: ``(C, H, W)`` float32 model input (normalised with the model's constants);
* ``question``: ``(Lq,)`` int64 content token ids (no special tokens; empty for captions);
* ``targets``: list of ``(L,)`` int64 content ids: the distinct answers (VQA) or the reference
  captions (captioning);
* ``target_weights``: ``(A,)`` float32, one per target (VQA answer weights; captions: equal);
* ``references``: the raw answers (all of them, e.g. VQA v2's ten) or captions, for metrics;
* ``task``: the task id.

:class:`VLCollator` turns items (or memory records) into BLIP's tensors with the conventions
``generate`` uses: questions ``[CLS] q [SEP]``; decoder inputs ``[DEC] answer [SEP]`` (VQA) or
``[DEC] prompt caption [SEP]`` (captioning); labels equal to the decoder inputs with padding
(and the caption prompt) set to -100 (the decoder shifts them itself).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..models import resolve_normalization
from ..normalization import NormalizationLike
from .text import TextSpec

__all__ = ["IGNORE_INDEX", "TASK_KINDS", "ImageTextDataset", "VLCollator", "primary_target",
           "vl_benchmark"]

IGNORE_INDEX = -100
TASK_KINDS = ("vqa", "caption")


class ImageTextDataset(Dataset):
    """Image-text items of one task (see the module docstring).

    :param images: ``(N, C, H, W)`` uint8 pixels, or a callable ``i -> (C, H, W)`` float
        tensor in [0, 1] (images read from files).
    :param questions: per item, content ids of the question (``None`` for captioning).
    :param targets: per item, content ids of its answers or reference captions.
    :param references: per item, the raw answers or captions (for metrics).
    :param task: task id of every item.
    :param weights: per item, one weight per target (default: equal weights summing to 1).
    :param normalization: model input normalisation (``None``: pixels in [0, 1]).
    :param regions: optional ``(N, T)`` bool: the tokens a question is about (diagnostics).
    """

    def __init__(self, images, questions: Optional[Sequence[Tensor]],
                 targets: Sequence[Sequence[Tensor]], references: Sequence[Sequence[str]],
                 task: int, weights: Optional[Sequence[Tensor]] = None,
                 normalization: NormalizationLike = None, regions: Optional[Tensor] = None):
        n = len(targets)
        if isinstance(images, Tensor):
            if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != n:
                raise ValueError(f"images must be uint8 (N={n}, C, H, W), got {images.dtype} "
                                 f"{tuple(images.shape)}")
            channels = images.shape[1]
        elif callable(images):
            channels = None
        else:
            raise TypeError("images must be a uint8 tensor or a callable i -> (C, H, W) tensor")
        for name, seq in (("questions", questions), ("references", references),
                          ("weights", weights)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{len(seq)} {name} for {n} items")
        if any(len(t) == 0 for t in targets):
            raise ValueError("every item needs at least one answer or caption")
        self.images = images
        self.questions = questions
        self.targets = [list(t) for t in targets]
        self.references = [list(r) for r in references]
        self.weights = ([torch.as_tensor(w, dtype=torch.float32) for w in weights] if weights
                        else [torch.full((len(t),), 1.0 / len(t)) for t in self.targets])
        self.task = int(task)
        self.normalization = resolve_normalization(normalization, channels or 3)
        self.regions = regions

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, i: int) -> Tensor:
        """``(C, H, W)`` float pixels in [0, 1] of item ``i``."""
        if isinstance(self.images, Tensor):
            return self.images[i].float().div_(255.0)
        return self.images(i)

    def __getitem__(self, i: int) -> Dict:
        q = self.questions[i] if self.questions is not None else torch.zeros(0, dtype=torch.long)
        return dict(pixel_values=self.normalization.normalize(self.image(i)), question=q,
                    targets=self.targets[i], target_weights=self.weights[i],
                    references=self.references[i], task=self.task)


def _pad(rows: Sequence[Tensor], value: int) -> Tensor:
    """``(B, L)`` int64 of 1-D rows padded on the right with ``value``."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


class VLCollator:
    """Collate function of :class:`ImageTextDataset` items into a BLIP batch.

    Batch keys: ``pixel_values`` ``(B, C, H, W)``; VQA also ``input_ids`` and
    ``attention_mask`` ``(B, Lq)``; ``decoder_input_ids``, ``decoder_attention_mask``,
    ``labels`` ``(N, La)`` for N targets; ``target_owner`` ``(N,)`` (the item each target
    belongs to); ``target_weights`` ``(N,)``; ``task_labels`` ``(B,)``; ``references``
    (lists of strings).

    Training targets: ``vqa`` uses every answer of an item with its weight (BLIP's weighted
    answer loss); ``caption`` draws one reference per item (torch's global RNG, like a random
    augmentation) with weight 1.

    :param spec: the tokenizer's ids and the caption prompt (:class:`TextSpec`).
    :param kind: ``"vqa"`` or ``"caption"``.
    :param max_length: longest decoder sequence in tokens (longer targets are cut, keeping
        ``[SEP]``).
    """

    def __init__(self, spec: TextSpec, kind: str, max_length: int = 40):
        if kind not in TASK_KINDS:
            raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
        if kind == "vqa" and spec.prompt:
            raise ValueError("VQA has no caption prompt: build the TextSpec without one")
        self.spec, self.kind, self.max_length = spec, kind, int(max_length)

    def state(self) -> Dict:
        """JSON-able settings (saved with a memory that holds text)."""
        return dict(spec=asdict(self.spec), kind=self.kind, max_length=self.max_length)

    @classmethod
    def from_state(cls, state: Dict) -> "VLCollator":
        spec = dict(state["spec"], prompt=tuple(state["spec"]["prompt"]))
        return cls(TextSpec(**spec), state["kind"], state["max_length"])

    def text_batch(self, questions: Sequence[Tensor], targets: Sequence[Sequence[Tensor]],
                   weights: Sequence[Tensor]) -> Dict[str, Tensor]:
        """Model tensors from content ids: ``questions[i]`` ``(Lq,)``, ``targets[i]`` a list of
        ``(L,)`` and ``weights[i]`` ``(A_i,)``, all targets used (see :meth:`__call__`)."""
        s = self.spec
        out: Dict[str, Tensor] = {}
        if self.kind == "vqa":
            q = [torch.cat([torch.tensor([s.cls]), t.long(), torch.tensor([s.sep])]) for t in questions]
            out["input_ids"] = _pad(q, s.pad)
            out["attention_mask"] = (_pad([torch.ones(len(r), dtype=torch.long) for r in q], 0))
        prompt = torch.tensor(s.prompt, dtype=torch.long)
        dec, owner, w = [], [], []
        for i, (ts, ws) in enumerate(zip(targets, weights)):
            for t, wt in zip(ts, ws.tolist()):
                body = torch.cat([prompt, t.long()])[: self.max_length - 2]
                dec.append(torch.cat([torch.tensor([s.bos]), body, torch.tensor([s.sep])]))
                owner.append(i)
                w.append(wt)
        ids = _pad(dec, s.pad)
        mask = _pad([torch.ones(len(r), dtype=torch.long) for r in dec], 0)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        labels[:, 1:1 + len(prompt)] = IGNORE_INDEX
        out.update(decoder_input_ids=ids, decoder_attention_mask=mask, labels=labels,
                   target_owner=torch.tensor(owner, dtype=torch.long),
                   target_weights=torch.tensor(w, dtype=torch.float32))
        return out

    def __call__(self, items: List[Dict]) -> Dict:
        questions = [it["question"] for it in items]
        if self.kind == "vqa":
            targets = [it["targets"] for it in items]
            weights = [it["target_weights"] for it in items]
        else:
            pick = [int(torch.randint(len(it["targets"]), ())) for it in items]
            targets = [[it["targets"][k]] for it, k in zip(items, pick)]
            weights = [torch.ones(1)] * len(items)
        batch = self.text_batch(questions, targets, weights)
        batch.update(pixel_values=torch.stack([it["pixel_values"] for it in items]),
                     task_labels=torch.tensor([it["task"] for it in items], dtype=torch.long),
                     references=[it["references"] for it in items])
        return batch


def primary_target(item: Dict) -> Tensor:
    """The target a memory record keeps: the highest-weight answer (first on ties) or the
    first reference caption."""
    return item["targets"][int(torch.argmax(item["target_weights"]))]


def vl_benchmark(train: Sequence[ImageTextDataset], test: Sequence[ImageTextDataset],
                 collate: VLCollator, info: Dict, tokenizer=None):
    """An Avalanche benchmark (``benchmark_from_datasets`` with task labels), one experience per
    dataset, each an ``AvalancheDataset`` with ``targets_task_labels`` and ``collate`` as its
    collate function. ``info`` (settings, sizes) and ``tokenizer`` are attached."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.benchmarks.utils import AvalancheDataset, DataAttribute

    def wrap(d: ImageTextDataset):
        return AvalancheDataset([d], data_attributes=[
            DataAttribute([d.task] * len(d), "targets_task_labels")], collate_fn=collate)

    for name, sets in (("train", train), ("test", test)):
        tasks = [d.task for d in sets]
        if tasks != list(range(len(sets))):
            raise ValueError(f"{name} datasets must have task ids 0..{len(sets) - 1} in order, "
                             f"got {tasks}")
    bm = with_task_labels(benchmark_from_datasets(train=[wrap(d) for d in train],
                                                  test=[wrap(d) for d in test]))
    norm = train[0].normalization
    bm.info = dict(info, kind=collate.kind, train_sizes=[len(d) for d in train],
                   test_sizes=[len(d) for d in test],
                   normalization=dict(mean=list(norm.mean), std=list(norm.std)))
    bm.collate = collate
    bm.tokenizer = tokenizer
    return bm
