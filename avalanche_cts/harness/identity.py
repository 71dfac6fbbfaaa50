"""Fingerprints of what a run's settings cannot name: the weights of a model passed in, and a
stream that carries no description of its data.

``run(cfg, benchmark, model=m)`` records :func:`weights_fingerprint` of ``m`` (``cfg.model``
then only names the preset, not these weights), and a benchmark without ``info`` (a plain
Avalanche ``nc_benchmark``) records :func:`stream_fingerprint`. Both are compared like every
other setting before a stored result or run state is reused; a stream that cannot be
fingerprinted is recorded as :data:`UNIDENTIFIED` and is never reused.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable

import numpy as np
import torch
from torch import nn

__all__ = ["UNIDENTIFIED", "is_unidentified", "stream_fingerprint", "weights_fingerprint"]

UNIDENTIFIED = "unidentified"
"""The value of ``settings[...]["fingerprint"]`` for data that could not be fingerprinted."""
SAMPLES_PER_EXPERIENCE = 4
"""Samples hashed per experience (first, last and two between): cheap on any stream."""


def weights_fingerprint(model: nn.Module) -> Dict[str, Any]:
    """``{"class", "parameters", "fingerprint"}`` of ``model``'s weights: a SHA-1 over every
    ``state_dict`` entry (name, dtype, shape, bytes) in name order."""
    h = hashlib.sha1()
    state = model.state_dict()
    for name in sorted(state):
        _update(h, name, state[name])
    return {"class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "fingerprint": h.hexdigest()[:16]}


def stream_fingerprint(benchmark) -> Dict[str, Any]:
    """``{"experiences", "train_sizes", "test_sizes", "fingerprint"}`` of a benchmark's
    streams: a SHA-1 over each experience's size, classes and :data:`SAMPLES_PER_EXPERIENCE`
    samples (inputs and targets, with the deterministic evaluation transforms). A sample
    that is not tensors, arrays, numbers or strings gives ``fingerprint`` :data:`UNIDENTIFIED`
    (and ``why``)."""
    h = hashlib.sha1()
    sizes = {}
    try:
        for stream in ("train_stream", "test_stream"):
            exps = list(getattr(benchmark, stream))
            sizes[stream] = [len(e.dataset) for e in exps]
            for e in exps:
                _update(h, "classes", sorted(getattr(e, "classes_in_this_experience", []) or []))
                data = e.dataset.eval() if hasattr(e.dataset, "eval") else e.dataset
                for i in _sample_indices(len(data)):
                    _update(h, str(i), data[i])
    except (TypeError, AttributeError) as err:
        return {"fingerprint": UNIDENTIFIED, "why": " ".join(str(err).split())[:200]}
    return {"experiences": len(sizes["train_stream"]), "train_sizes": sizes["train_stream"],
            "test_sizes": sizes["test_stream"], "fingerprint": h.hexdigest()[:16]}


def is_unidentified(settings: Dict) -> bool:
    """Whether run ``settings`` hold data that could not be fingerprinted."""
    return (settings.get("data") or {}).get("fingerprint") == UNIDENTIFIED


def _sample_indices(n: int) -> Iterable[int]:
    return sorted({0, n // 3, (2 * n) // 3, n - 1}) if n else []


def _update(h, tag: str, value: Any) -> None:
    """Feed ``value`` (tensors, arrays, numbers, strings and containers of them) to ``h``;
    ``TypeError`` for anything else (a PIL image without a transform, an object)."""
    h.update(tag.encode())
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype}{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (bool, int, float, str, np.generic)) or value is None:
        h.update(repr(value).encode())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            _update(h, str(k), value[k])
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _update(h, str(i), v)
    else:
        raise TypeError(f"a sample holds a {type(value).__name__}, which cannot be fingerprinted")
