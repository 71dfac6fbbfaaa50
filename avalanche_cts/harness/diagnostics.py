"""Checks of what a token memory holds: provenance and where its tokens fall.

:func:`memory_diagnostics` needs a buffer built with ``keep_sources=True`` (each record knows
its experience and index). For every record it re-reads the source image from the stream and
checks that the stored values are exactly the encoded tokens of that image at the stored
positions (provenance: what was stored is what the image had). On a stream whose scenes know
their objects (``benchmark.scenes``, Cluttered Fashion-MNIST) it also measures the share of
stored tokens that fall on the object, against the share of object tokens in the images (what
random tokens would get).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..benchmarks.cluttered import object_token_mask
from ..memory.buffer import CoreTokensetBuffer
from ..tokens.patches import patchify, unpatchify

__all__ = ["memory_diagnostics"]


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
