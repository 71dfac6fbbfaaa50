"""Checks of a run: what a token memory holds (provenance, where its tokens fall), and a
model that predicts one class for a whole test experience (:class:`SingleClassWarning`).

:func:`memory_diagnostics` needs a buffer built with ``keep_sources=True`` (each record knows
its experience and index). For every record it re-reads the source image from the stream and
checks that the stored values are exactly the encoded tokens of that image at the stored
positions (provenance: what was stored is what the image had). On a stream whose scenes know
their objects (``benchmark.scenes``, Cluttered Fashion-MNIST) it also measures the share of
stored tokens that fall on the object, against the share of object tokens in the images (what
random tokens would get).
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Set

import torch
from avalanche.core import SupervisedPlugin

from ..benchmarks.cluttered import object_token_mask
from ..memory.buffer import CoreTokensetBuffer
from ..tokens.patches import patchify, unpatchify

__all__ = ["SingleClassWarning", "memory_diagnostics"]


class SingleClassWarning(SupervisedPlugin):
    """Warns once per run when the model predicts the same class for every test image of the
    experience it has just been trained on, although it holds several classes: a collapsed
    model (a learning rate too high, or a fresh head too slow to separate the new classes),
    whose accuracy still looks like a number.
    Classification outputs only."""

    def __init__(self):
        super().__init__()
        self.warned = False
        self._predicted: Set[int] = set()
        self._labels: Set[int] = set()

    def before_eval_exp(self, strategy, **kwargs):
        self._predicted, self._labels = set(), set()

    def after_eval_forward(self, strategy, **kwargs):
        out = strategy.mb_output
        if torch.is_tensor(out) and out.dim() == 2 and len(self._predicted) < 2:
            self._predicted |= set(out.argmax(1).tolist())
            self._labels |= set(torch.as_tensor(strategy.mb_y).tolist())

    def after_eval_exp(self, strategy, **kwargs):
        just_trained = strategy.experience.current_experience == \
            strategy.clock.train_exp_counter - 1
        if just_trained and not self.warned and len(self._predicted) == 1 \
                and len(self._labels) > 1:
            self.warned = True
            warnings.warn(
                f"the model predicts class {next(iter(self._predicted))} for every test image "
                f"of experience {strategy.experience.current_experience}, which it has just "
                f"been trained on: it has collapsed; a lower learning rate helps when training "
                f"diverged, a faster classifier head (RunConfig.head_lr_scale, e.g. 10) when "
                f"the head barely moved (a training loss still near ln(classes))")


def memory_diagnostics(buffer: CoreTokensetBuffer, benchmark) -> Optional[Dict[str, float]]:
    """``{records, provenance_mismatches[, object_hit_rate, object_share]}`` of a memory, or
    ``None`` when the buffer does not keep sources."""
    if not buffer.keep_sources or buffer.layout is None:
        return None
    p, channels, grid = buffer.layout["patch_size"], buffer.layout["channels"], buffer.layout["grid"]
    scenes = getattr(benchmark, "scenes", None)
    lookup, masks = None, None
    if scenes is not None:
        train = scenes["train"]
        lookup = {bytes(img.numpy().tobytes()): i for i, img in enumerate(train.images)}
        masks = object_token_mask(train.object_masks, p)
    datasets = {}
    records = mismatches = hits = kept = 0
    for group in buffer.groups.values():
        offsets = group.offsets()
        for i in range(len(group)):
            exp, idx = group.sources[i].tolist()
            if exp not in datasets:
                datasets[exp] = benchmark.train_stream[exp].dataset.eval()
            image = datasets[exp][idx][0]
            tokens = buffer.codec.encode(patchify(image[None], p))[0]
            values, positions = group.record(i, offsets)
            positions = positions.long()
            records += 1
            mismatches += int(not torch.equal(tokens[positions], values))
            if lookup is not None:
                pixels = unpatchify(tokens[None], p, channels, grid)[0]
                j = lookup.get(bytes(pixels.numpy().tobytes()))
                if j is None:
                    mismatches += 1
                    continue
                hits += int(masks[j, positions].sum())
                kept += len(positions)
    out = dict(records=records, provenance_mismatches=mismatches)
    if lookup is not None and kept:
        out.update(object_hit_rate=hits / kept, object_share=float(masks.float().mean()))
    return out
