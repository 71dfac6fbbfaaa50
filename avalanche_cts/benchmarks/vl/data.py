"""Image-text datasets for BLIP and Avalanche streams built from them.

An item is a dict:

* ``pixel_values``: ``(C, H, W)`` float32 model input (normalised with the model's constants);
* ``question``: ``(Lq,)`` int64 content token ids (no special tokens; empty for captions);
* ``targets``: list of ``(L,)`` int64 content ids: the distinct answers (VQA) or the reference
  captions (captioning);
* ``target_weights``: ``(A,)`` float32, one per target (VQA answer weights; captions: equal);
* ``references``: the raw answers (all of them, e.g. VQA v2's ten) or captions, for metrics;
* ``task``: the task id.

They are collated by :class:`~avalanche_cts.models.blip_text.VLCollator`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...models import resolve_normalization
from ...models.blip_text import VLCollator
from ...tokens.normalization import NormalizationLike

__all__ = ["ImageTextDataset", "vl_benchmark"]


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
