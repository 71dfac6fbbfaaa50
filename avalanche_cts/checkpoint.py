"""Backbone weights and per-experience run checkpoints.

Backbones: :func:`load_backbone` builds a timm model (or a preset) and loads pretrained
weights from timm's hub (``pretrained=True``) or from a local file (:func:`load_weights`):
``.safetensors`` and ``.pth``/``.pt``/``.bin`` state dicts (also nested under ``model`` or
``state_dict``, ``module.`` prefixes removed) go through timm's loader and the model's
checkpoint filter (old ViT layouts, position-embedding resize); ``.npz`` JAX checkpoints
(big_vision / AugReg, e.g. ``B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz``)
go through timm's ``VisionTransformer.load_pretrained``. A classifier whose size differs
from the model's is left at its initialisation.

Run checkpoints: :func:`save_run_state` writes, after an experience, plain state dicts with
``torch.save`` (model, optimizer, Avalanche clock, every :class:`CoreTokensetBuffer`, the
strategy's own ``state_dict()`` if it has one, the accuracy rows and the RNG states of torch,
CUDA, NumPy and Python); :func:`restore_run_state` puts them back, so a resumed run continues
exactly where the uninterrupted one would be.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .buffer import CoreTokensetBuffer
from .models import create_model

__all__ = [
    "DEFAULT_BACKBONE",
    "RUN_STATE_VERSION",
    "load_backbone",
    "load_run_state",
    "load_weights",
    "restore_run_state",
    "run_state_parts",
    "save_run_state",
]

DEFAULT_BACKBONE = "vit_base_patch16_224.augreg_in21k"
"""ViT-B/16 pretrained on ImageNet-21k (AugReg), the backbone of the paper-scale runs."""

RUN_STATE_VERSION = 1
_STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
PathLike = Union[str, Path]


def _fetch_help(name: str, err: BaseException) -> str:
    return (
        f"could not load pretrained weights for {name!r} ({type(err).__name__}: {err}). "
        f"Without network access, download them elsewhere (https://huggingface.co/timm/{name}, "
        f"file model.safetensors) and pass the local file: `avalanche-cts run --checkpoint FILE`, "
        f"RunConfig(checkpoint=FILE) or load_backbone({name!r}, checkpoint=FILE); accepted: "
        f".safetensors, .pth/.pt/.bin state dicts and big_vision .npz files"
    )


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    pretrained: bool = True,
    checkpoint: Optional[PathLike] = None,
    **kwargs,
) -> nn.Module:
    """A timm model (or preset) with pretrained weights.

    :param name: timm model name or preset (``avalanche_cts.models.create_model``).
    :param pretrained: fetch timm's weights for ``name`` (ignored when ``checkpoint`` is given).
    :param checkpoint: local weights file (module docstring), loaded instead of fetching.
    :param kwargs: model settings, e.g. ``num_classes=100``.
    :raises RuntimeError: when weights cannot be fetched; the message says how to pass a file.
    """
    if checkpoint is not None:
        model = create_model(name, pretrained=False, **kwargs)
        load_weights(model, checkpoint)
        return model
    if not pretrained:
        return create_model(name, **kwargs)
    try:
        return create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as e:
        raise RuntimeError(_fetch_help(name, e)) from e


def _classifier_keys(model: nn.Module) -> Tuple[str, ...]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier", "head")
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}.{p}" for n in names for p in ("weight", "bias"))


def load_weights(model: nn.Module, path: PathLike) -> List[str]:
    """Load a weights file into ``model`` in place.

    :return: parameter names left at their initialisation (a classifier of another size).
    :raises ValueError: for an unknown file type or weights that do not fit the model.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise ValueError(
                f".npz checkpoints need a timm VisionTransformer, got {type(model).__name__}"
            )
        head = {k: v.clone() for k, v in model.state_dict().items() if k in _classifier_keys(model)}
        model.load_pretrained(str(path))
        return [k for k, v in head.items() if torch.equal(v, model.state_dict()[k])]
    if suffix not in _STATE_SUFFIXES:
        raise ValueError(
            f"unknown checkpoint type {suffix!r} of {path}: use one of "
            f"{', '.join(_STATE_SUFFIXES + ('.npz',))}"
        )
    from timm.models import load_state_dict

    state = load_state_dict(str(path))
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    skipped = [
        k
        for k in _classifier_keys(model)
        if k in state and k in own and state[k].shape != own[k].shape
    ]
    for k in skipped:
        del state[k]
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise ValueError(f"weights in {path} do not fit {type(model).__name__}: {bad[:5]}")
    result = model.load_state_dict(state, strict=False)
    head = set(_classifier_keys(model))
    left = skipped + [k for k in result.missing_keys if k in head and k not in skipped]
    missing = [k for k in result.missing_keys if k not in left]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights in {path} do not fit {type(model).__name__}: missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return left


# ------------------------------------------------------------------ run state
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def run_state_parts(strategy) -> Tuple[Dict[str, CoreTokensetBuffer], List[str]]:
    """``(buffers, unsupported)``: the strategy's :class:`CoreTokensetBuffer` memories by
    plugin position, and the names of plugins whose memory a checkpoint cannot hold
    (Avalanche storage policies keep lazy views of the datasets)."""
    buffers, unsupported = {}, []
    for i, p in enumerate(strategy.plugins):
        policy = getattr(p, "storage_policy", None)
        if isinstance(policy, CoreTokensetBuffer):
            buffers[f"plugin{i}"] = policy
        elif policy is not None:
            unsupported.append(type(p).__name__)
    return buffers, unsupported


def _rng_state() -> Dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def _set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_run_state(
    path: PathLike,
    strategy,
    *,
    next_experience: int,
    acc_matrix: List[List[float]],
    elapsed_s: float,
    config: Dict,
) -> None:
    """Write the state of a run after ``next_experience`` experiences (atomically)."""
    buffers, unsupported = run_state_parts(strategy)
    if unsupported:
        raise ValueError(f"cannot checkpoint the memory of {unsupported}")
    own = getattr(strategy, "state_dict", None)
    state = {
        "version": RUN_STATE_VERSION,
        "config": config,
        "next_experience": int(next_experience),
        "acc_matrix": acc_matrix,
        "elapsed_s": float(elapsed_s),
        "model": _unwrap(strategy.model).state_dict(),
        "optimizer": strategy.optimizer.state_dict(),
        "clock": {k: v for k, v in vars(strategy.clock).items() if isinstance(v, int)},
        "buffers": {name: b.state_dict() for name, b in buffers.items()},
        "strategy": own() if callable(own) else None,
        "rng": _rng_state(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_run_state(path: PathLike) -> Dict:
    """Read a run state written by :func:`save_run_state` (tensors on the CPU)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("version") != RUN_STATE_VERSION:
        raise ValueError(
            f"{path}: run state version {state.get('version')}, expected {RUN_STATE_VERSION}"
        )
    return state


def restore_run_state(state: Dict, strategy) -> None:
    """Put a saved run state back into a freshly built ``strategy`` (same configuration)."""
    if state["strategy"] is not None:  # strategies that grow modules rebuild them first
        strategy.load_state_dict(state["strategy"])
    try:
        _unwrap(strategy.model).load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(
            f"the saved model does not fit the strategy's ({e}); strategies that add "
            f"modules per experience (InfLoRA, CODA-Prompt) cannot resume yet: "
            f"delete state.pt or set resume=False"
        ) from None
    if getattr(strategy, "optimized_param_id", ()) is None:
        # what Avalanche does before the first experience (it would reset the state later)
        strategy.make_optimizer(reset_optimizer_state=True)
    saved_groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    if saved_groups == [len(g["params"]) for g in strategy.optimizer.param_groups]:
        strategy.optimizer.load_state_dict(state["optimizer"])  # else rebuilt per experience
    for k, v in state["clock"].items():
        setattr(strategy.clock, k, v)
    buffers, _ = run_state_parts(strategy)
    if set(buffers) != set(state["buffers"]):
        raise ValueError(
            f"saved memories {sorted(state['buffers'])} do not match the strategy's "
            f"{sorted(buffers)}"
        )
    for name, b in buffers.items():
        b.load_state_dict(state["buffers"][name])
    _set_rng_state(state["rng"])
