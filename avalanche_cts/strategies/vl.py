"""Avalanche strategies for BLIP VQA and captioning: dict batches, answer/caption NLL, generation.

:class:`VLTemplate` is a ``SupervisedTemplate`` whose mini-batches are the dicts of
:class:`~avalanche_cts.models.blip_text.VLCollator`: training minimises the mean per-item loss of
:meth:`BlipVLAdapter.sample_losses <avalanche_cts.models.hf_blip_vl.BlipVLAdapter.sample_losses>`
(weighted answer NLL, the model's label smoothing); evaluation generates text (``mb_output`` is
the list of decoded strings) for the metrics of :mod:`avalanche_cts.evaluation.metrics`. It composes with
Avalanche plugins and with :class:`~avalanche_cts.CoreTokensetReplayPlugin`, whose token
dropout reaches the vision tower through the adapter (``partial_inputs``) and whose memory
loss is the adapter's ``record_loss``. :class:`VLNaive` and :class:`VLCumulative` are the
fine-tuning floor and the cumulative ceiling.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from avalanche.training import Cumulative
from avalanche.training.templates import SupervisedTemplate

from ..models import get_adapter
from ..models.blip_text import VLCollator

__all__ = ["VLCumulative", "VLNaive", "VLTemplate", "random_resized_crop"]


def random_resized_crop(images: Tensor, scale: Tuple[float, float] = (0.5, 1.0),
                        ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """torchvision's ``RandomResizedCrop`` on a ``(B, C, H, W)`` batch (one crop per image,
    bicubic back to ``H x W``), with torch's global RNG; on the images' device."""
    b, _, h, w = images.shape
    area = h * w * torch.empty(b).uniform_(*scale)
    logr = torch.empty(b).uniform_(torch.log(torch.tensor(ratio[0])), torch.log(torch.tensor(ratio[1])))
    r = logr.exp()
    cw = (area * r).sqrt().round().clamp(1, w).long()
    ch = (area / r).sqrt().round().clamp(1, h).long()
    out = torch.empty_like(images)
    for i in range(b):
        y = int(torch.randint(0, h - int(ch[i]) + 1, ()))
        x = int(torch.randint(0, w - int(cw[i]) + 1, ()))
        crop = images[i:i + 1, :, y:y + int(ch[i]), x:x + int(cw[i])]
        out[i] = torch.nn.functional.interpolate(crop, size=(h, w), mode="bicubic",
                                                 align_corners=False)[0]
    return out


class VLTemplate(SupervisedTemplate):
    """Training and evaluation of a BLIP VQA or captioning model on dict mini-batches.

    Takes ``SupervisedTemplate``'s keywords (``criterion`` is not used: the loss is the
    adapter's per-item NLL) and:

    :param tokenizer: decodes generated ids (the tokenizer the stream was encoded with).
    :param max_new_tokens: generation length (default: 10 for VQA, 20 for captions, as BLIP).
    :param min_new_tokens: shortest generation (default: 0 for VQA, 5 for captions).
    :param num_beams: beam width (BLIP: 3; 1 = greedy, the CPU default).
    :param crop_scale: ``(min, max)`` area of a random resized crop of training images (BLIP:
        (0.5, 1.0)); ``None`` trains on the images as given.
    """

    def __init__(self, *, tokenizer, max_new_tokens: Optional[int] = None,
                 min_new_tokens: Optional[int] = None, num_beams: int = 1,
                 crop_scale: Optional[Sequence[float]] = None, **kwargs):
        super().__init__(**kwargs)
        self.adapter = get_adapter(self.model)
        caption = self.adapter.kind == "caption"
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens or (20 if caption else 10))
        self.min_new_tokens = int(5 if caption and min_new_tokens is None else min_new_tokens or 0)
        if int(num_beams) < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        self.num_beams = int(num_beams)
        if crop_scale is not None and not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale}")
        self.crop_scale = None if crop_scale is None else tuple(float(c) for c in crop_scale)
        self._collate: Optional[VLCollator] = None

    # --------------------------------------------------------------- mini-batches
    @property
    def mb_x(self):
        return self.mbatch

    @property
    def mb_y(self):
        """Decoder labels ``(N, L)`` of the targets of the mini-batch."""
        return self.mbatch["labels"]

    @property
    def mb_task_id(self):
        return self.mbatch["task_labels"]

    def _unpack_minibatch(self):
        """To the device; training images get their random resized crop here, before the
        plugins' ``before_forward`` (token dropout sees the images the model sees)."""
        self.mbatch = {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v
                       for k, v in self.mbatch.items()}
        if self.is_training and self.crop_scale is not None:
            self.mbatch["pixel_values"] = random_resized_crop(self.mbatch["pixel_values"],
                                                              self.crop_scale)

    def _loader(self, batch_size: int, shuffle: bool, **kwargs) -> DataLoader:
        data = self.adapted_dataset
        collate = getattr(data, "collate_fn", None)
        if not isinstance(collate, VLCollator):
            raise TypeError(
                f"{type(self).__name__} needs experiences whose datasets collate with a "
                f"VLCollator (avalanche_cts.benchmarks.vl streams); this one has {collate!r}")
        if self.adapter.kind != collate.kind:
            raise ValueError(f"the model does {self.adapter.kind} but the stream is {collate.kind}")
        self._collate = collate
        args = self._obtain_common_dataloader_parameters(batch_size=batch_size, shuffle=shuffle,
                                                         **kwargs)
        return DataLoader(data, collate_fn=collate, **args)

    def make_train_dataloader(self, num_workers=0, shuffle=True, pin_memory=None,
                              persistent_workers=False, drop_last=False, **kwargs):
        self.dataloader = self._loader(self.train_mb_size, shuffle, num_workers=num_workers,
                                       pin_memory=pin_memory, drop_last=drop_last,
                                       persistent_workers=persistent_workers)

    def make_eval_dataloader(self, num_workers=0, shuffle=False, pin_memory=None,
                             persistent_workers=False, **kwargs):
        self.dataloader = self._loader(self.eval_mb_size, shuffle, num_workers=num_workers,
                                       pin_memory=pin_memory, persistent_workers=persistent_workers)

    # ------------------------------------------------------------- forward, loss
    def forward(self):
        """Training: ``(B,)`` per-item losses. Evaluation: the generated strings."""
        if self.is_training:
            return self.adapter.sample_losses(self.mbatch)
        return self.generate(self.mbatch)

    def criterion(self):
        if self.is_training:
            return self.mb_output.mean()
        return torch.zeros((), device=self.device)

    @torch.no_grad()
    def generate(self, batch) -> List[str]:
        """Decoded answers or captions (prompt removed) for a collated batch."""
        states, mask = self.adapter.image_states(batch["pixel_values"])
        prompt = self._collate.spec.prompt if self._collate is not None else ()
        ids = self.adapter.generate(states, mask, batch, prompt, max_new_tokens=self.max_new_tokens,
                                    min_new_tokens=self.min_new_tokens, num_beams=self.num_beams)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class VLNaive(VLTemplate):
    """Fine-tuning on each experience in turn (the lower bound); add plugins for replay."""


class VLCumulative(VLTemplate, Cumulative):
    """Training on all experiences seen so far (Avalanche's ``Cumulative``; the upper bound)."""
