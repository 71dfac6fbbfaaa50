"""How the memory reads an experience: classification tuples or image-text dicts.

:class:`~avalanche_cts.CoreTokensetBuffer` is written once for both; what differs goes through an
item view (:func:`item_view` picks it from the data):

* :class:`ClassItems`: items ``(image, label, ...)``; groups per (class, task); the scorer
  explains the label; selector features are the model's pre-logits and logits.
* :class:`TextItems`: dict items of :mod:`avalanche_cts.benchmarks.vl.data` (BLIP VQA and captioning);
  one group per task (there are no classes); records also keep the question and the answer
  or caption token ids; the scorer explains each sample's answer or caption (its text
  batch); selector features come from the model adapter's ``selection_features``.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

__all__ = ["ClassItems", "TextItems", "item_view"]

Batch = Tuple[Tensor, object, Optional[List[Dict[str, Tensor]]]]
"""(images ``(B, C, H, W)``, scorer targets, per-record token ids or ``None``)."""


class ClassItems:
    """Classification items ``(image, label, ..., task)``."""

    text_fields: Tuple[str, ...] = ()

    def keys(self, data) -> Tuple[Tensor, Tensor]:
        """``(labels (n,), tasks (n,))`` int64: the group of every item."""
        labels = torch.as_tensor(list(data.targets), dtype=torch.long)
        tasks = torch.as_tensor(list(getattr(data, "targets_task_labels", [0] * len(data))),
                                dtype=torch.long)
        return labels, tasks

    @staticmethod
    def image(item) -> Tensor:
        return item[0]

    def batches(self, data, idx: Tensor, batch_size: int, num_workers: int) -> Iterator[Batch]:
        loader = DataLoader(Subset(data, idx.tolist()), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers)
        for x, y, *_ in loader:
            yield x, torch.as_tensor(y), None

    def features(self, model, data, batch_size: int, device) -> Tuple[Tensor, ...]:
        """``(embeddings, logits, targets)`` of all of ``data`` (eval mode)."""
        from ..selectors import extract_features

        return extract_features(model, data, batch_size=batch_size, device=device)

    def state(self) -> Optional[Dict]:
        return None

    def text_batch(self, texts: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        raise TypeError("classification records hold no text")


class TextItems:
    """Image-text items (:class:`~avalanche_cts.benchmarks.vl.data.ImageTextDataset`) collated by a
    :class:`~avalanche_cts.models.blip_text.VLCollator`. A record keeps ``question`` (empty for
    captions) and ``target``: the highest-weight answer or the first reference caption."""

    text_fields: Tuple[str, ...] = ("question", "target")

    def __init__(self, collate):
        self.collate = collate

    def keys(self, data) -> Tuple[Tensor, Tensor]:
        tasks = torch.as_tensor(list(data.targets_task_labels), dtype=torch.long)
        return torch.zeros_like(tasks), tasks

    @staticmethod
    def image(item) -> Tensor:
        return item["pixel_values"]

    def text_batch(self, texts: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """The model's text tensors for records' stored ids (each target weighted 1)."""
        return self.collate.text_batch([t["question"] for t in texts],
                                       [[t["target"]] for t in texts],
                                       [torch.ones(1)] * len(texts))

    def batches(self, data, idx: Tensor, batch_size: int, num_workers: int) -> Iterator[Batch]:
        from ..models.blip_text import primary_target

        def collate(items):
            texts = [dict(question=it["question"], target=primary_target(it)) for it in items]
            return torch.stack([it["pixel_values"] for it in items]), texts

        loader = DataLoader(Subset(data, idx.tolist()), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=collate)
        for images, texts in loader:
            yield images, self.text_batch(texts), texts

    def features(self, model, data, batch_size: int, device) -> Tuple[Tensor, ...]:
        """``(embeddings, None, targets (zeros), errors)``: the adapter's selection features of
        every item (eval mode, no gradients)."""
        from ..models import get_adapter
        from ..models.attention import eval_mode

        adapter = get_adapter(model)
        hs, es = [], []
        with eval_mode(model):
            for images, text, _ in self.batches(data, torch.arange(len(data)), batch_size, 0):
                text = {k: v.to(device) for k, v in text.items()}
                h, e = adapter.selection_features(dict(text, pixel_values=images.to(device)))
                hs.append(h)
                es.append(e)
        h = torch.cat(hs)
        return h, None, torch.zeros(len(h), dtype=torch.long), torch.cat(es)

    def state(self) -> Optional[Dict]:
        return self.collate.state()


def item_view(data, state: Optional[Dict] = None):
    """The item view of an experience dataset (or of a saved memory's ``state``)."""
    from ..models.blip_text import VLCollator

    if state is not None:
        return TextItems(VLCollator.from_state(state))
    collate = getattr(data, "collate_fn", None)
    if isinstance(collate, VLCollator):
        return TextItems(collate)
    if len(data) and isinstance(data[0], dict):
        raise TypeError(
            "dict items need a dataset collated by avalanche_cts.models.blip_text.VLCollator (image-text "
            "streams of avalanche_cts.benchmarks.vl); other dict layouts are not supported by the memory")
    return ClassItems()
