"""A pretrained tiny BLIP for the generated vision-language streams, as BLIP is pretrained
before the paper's fine-tuning.

1. **Other questions, other images.** ``blip_vqa_tiny`` is trained on
   :func:`~avalanche_cts.benchmarks.vl.scenes.pretraining_vqa`: question templates the streams never ask
   (colour of the object on the left/right, shape of the <colour> object, is there a <shape>,
   how many objects), on a background the streams never use (a vertical gradient), with fresh
   scenes every epoch from their own random stream. It learns what pretrained BLIP knows
   (colours, shapes, counting, where things are), not the streams' tasks.
2. **Full images only**, as BLIP's own pretraining: robustness to partial inputs comes from
   token dropout during the stream, as in the paper (measured: pretraining half of the steps
   on partial inputs, as the ViT backbones are, left the model at 63% on held-out questions
   against 86% and slowed learning the stream's tasks).
3. **Checkpoint.** ``{"state_dict", "meta"}`` under ``$AVALANCHE_CTS_CACHE/pretrained/``,
   named after the settings; an interrupted run resumes from its last finished epoch
   (``.partial.pt``). ``meta`` holds the accuracy on held-out pretraining questions and the
   zero-shot exact match on the stream's test questions.
4. ``blip_caption_tiny`` starts from the same checkpoint: its vision tower and text decoder
   (BLIP's captioning and VQA models start from one pretrained BLIP too); there is no
   caption pretraining, so no caption of the stream is seen before the stream.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

from .._files import file_lock
from ..models import create_blip, get_adapter
from ..tokens.normalization import CLIP_MEAN, CLIP_STD
from .pretrain import (
    ResumableTraining,
    check_spec,
    checkpoint_path,
    existing_checkpoint,
    read_pretraining,
)

__all__ = ["BLIP_PRETRAINED", "EMBEDDED_BLIP", "BlipPretrainSpec", "load_pretrained_blip",
           "pretrain_blip"]

PathLike = Union[str, Path]
_INIT_STREAM = 0x51AB_1E55
"""Seed offset of the pretraining initialisation and scenes (never a run's stream)."""


@dataclass(frozen=True)
class BlipPretrainSpec:
    """Settings of one tiny-BLIP pretraining run (they name its checkpoint)."""

    model: str = "blip_vqa_tiny"
    questions_per_epoch: int = 6000
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        check_spec(self, ("questions_per_epoch", "epochs", "batch_size"))

    def file_name(self) -> str:
        return (f"{self.model}_scenes-q{self.questions_per_epoch}_e{self.epochs}_lr{self.lr:g}"
                f"_wd{self.weight_decay:g}_b{self.batch_size}_s{self.seed}.pt")


BLIP_PRETRAINED: Dict[str, BlipPretrainSpec] = {"blip_vqa_tiny": BlipPretrainSpec()}
"""The pretraining behind the tiny presets with ``pretrained=True``."""
EMBEDDED_BLIP = ("blip_vqa_tiny", "blip_caption_tiny")
"""Tiny presets with embedded pretraining (captioning starts from the VQA checkpoint)."""


def _norm():
    from ..tokens.normalization import Normalization

    return Normalization(CLIP_MEAN, CLIP_STD)


@torch.no_grad()
def exact_match(model: nn.Module, data, tokenizer, batch_size: int = 250) -> float:
    """Greedy exact match of a VQA model on an :class:`~avalanche_cts.benchmarks.vl.data.ImageTextDataset`."""
    from ..models.blip_text import VLCollator
    from ..evaluation.metrics import vqa_exact_match
    from ..models.blip_text import TextSpec

    adapter = get_adapter(model)
    collate = VLCollator(TextSpec.from_tokenizer(tokenizer), "vqa")
    was = model.training
    model.eval()
    preds, refs = [], []
    try:
        for i in range(0, len(data), batch_size):
            b = collate([data[j] for j in range(i, min(len(data), i + batch_size))])
            states, mask = adapter.image_states(b["pixel_values"])
            ids = adapter.generate(states, mask, b, (), max_new_tokens=6)
            preds += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
            refs += b["references"]
    finally:
        model.train(was)
    return vqa_exact_match(preds, refs)


def pretrain_blip(spec: Union[BlipPretrainSpec, str] = "blip_vqa_tiny", *,
                  cache_dir: Optional[PathLike] = None, log=print) -> Path:
    """Pretrain a tiny BLIP (protocol in the module docstring) or find its checkpoint; an
    interrupted run resumes from its last finished epoch. Returns the checkpoint path."""
    if isinstance(spec, str) and spec not in BLIP_PRETRAINED:
        raise ValueError(f"no embedded BLIP pretraining named {spec!r}: use one of "
                         f"{sorted(BLIP_PRETRAINED)}")
    spec = BLIP_PRETRAINED[spec] if isinstance(spec, str) else spec
    found = existing_checkpoint(spec, cache_dir)
    if found is not None:
        return found
    path = checkpoint_path(spec, cache_dir, create=True)
    with file_lock(path.with_name(path.name + ".lock"), waiting=log):  # one process pretrains
        found = existing_checkpoint(spec, cache_dir)
        return found if found is not None else _pretrain(spec, path, log)


def _pretrain(spec: BlipPretrainSpec, path: Path, log) -> Path:
    """The pretraining of :func:`pretrain_blip` into ``path`` (resuming its partial state)."""
    from ..models.blip_text import VLCollator
    from ..benchmarks.vl.scenes import pretraining_vqa, scene_tokenizer, scene_vqa
    from ..models.blip_text import TextSpec

    norm = _norm()
    tok = scene_tokenizer()
    collate = VLCollator(TextSpec.from_tokenizer(tok), "vqa")
    gen = torch.Generator().manual_seed(_INIT_STREAM + spec.seed)
    with torch.random.fork_rng():
        torch.manual_seed(_INIT_STREAM + spec.seed)
        model = create_blip(spec.model)
    adapter = get_adapter(model)
    adapter.add_mask_token(gen)
    per_epoch = math.ceil(spec.questions_per_epoch / spec.batch_size)
    run = ResumableTraining(model, gen, path, spec.lr, spec.weight_decay, spec.epochs * per_epoch)
    model.train()
    for epoch in range(run.start, spec.epochs):
        data = pretraining_vqa(spec.questions_per_epoch, seed=_INIT_STREAM + 1000 * spec.seed + epoch,
                               normalization=norm)
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), spec.batch_size):
            batch = collate([data[int(j)] for j in order[i:i + spec.batch_size]])
            run.step(adapter.sample_losses(batch).mean())
        run.save(epoch + 1)
        if log:
            log(f"pretrain {spec.model} on generated scenes: epoch {epoch + 1}/{spec.epochs}")
    held_out = pretraining_vqa(500, seed=_INIT_STREAM - 1 - spec.seed, normalization=norm)
    stream = scene_vqa(1, 200, seed=spec.seed, normalization=norm)
    meta = dict(asdict(spec), accuracy=dict(
        held_out_questions=exact_match(model, held_out, tok),
        stream_zero_shot={name: exact_match(model, exp.dataset._datasets[0], tok)
                          for name, exp in zip(stream.info["tasks"], stream.test_stream)}))
    run.finish(dict(state_dict=model.state_dict(), meta=meta))
    if log:
        log(f"pretrained {spec.model}: {meta['accuracy']} -> {path}")
    return path


def blip_meta(name: str = "blip_vqa_tiny", **kwargs) -> Dict:
    """The ``meta`` of a pretrained tiny BLIP (pretraining it first if needed)."""
    path = pretrain_blip(name, **kwargs)
    return read_pretraining(path, ("state_dict", "meta"), "delete it to pretrain again")["meta"]


def load_pretrained_blip(name: str, **kwargs) -> nn.Module:
    """Tiny preset ``name`` with the pretrained weights (pretraining first if needed):
    ``blip_vqa_tiny`` whole, ``blip_caption_tiny`` its vision tower and text decoder (with the
    mask token) from the VQA checkpoint.

    :param kwargs: :func:`pretrain_blip` keywords (``cache_dir``).
    """
    if name not in EMBEDDED_BLIP:
        raise ValueError(f"embedded pretraining exists for blip_vqa_tiny and blip_caption_tiny, "
                         f"not {name!r}; load other BLIP models with checkpoint=DIR")
    path = pretrain_blip(BLIP_PRETRAINED["blip_vqa_tiny"], **kwargs)
    state = read_pretraining(path, ("state_dict", "meta"), "delete it to pretrain again",
                             weights_only=True)["state_dict"]
    model = create_blip(name)
    get_adapter(model).add_mask_token(torch.Generator())
    if name == "blip_caption_tiny":
        state = {k: v for k, v in state.items() if k.startswith(("vision_model.", "text_decoder."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (name == "blip_vqa_tiny" and missing):
        raise RuntimeError(f"checkpoint {path} does not fit {name}: {missing} {unexpected}")
    return model
