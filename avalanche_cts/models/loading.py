"""Backbones with their weights: pretrained from timm's hub or loaded from a local file.

:func:`load_backbone` builds a timm model (or a preset) and loads pretrained weights from
timm's hub (``pretrained=True``) or from a local file (:func:`load_weights`):
``.safetensors`` and ``.pth``/``.pt``/``.bin`` state dicts (also nested under ``model`` or
``state_dict``, ``module.`` prefixes removed) go through timm's loader and the model's
checkpoint filter (old ViT layouts, position-embedding resize); ``.npz`` JAX checkpoints
(big_vision / AugReg, e.g. ``B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz``)
go through timm's ``VisionTransformer.load_pretrained``. A classifier whose size differs
from the model's is left at its initialisation.

Fresh heads: a classifier that is not loaded from a file is drawn by :func:`fresh_head` from
its own random stream (never the stream that initialised a pretraining run, whose backbone
co-adapted with that head). :func:`read_checkpoint` reads any file with an error that names
it (also the harness's run states).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import nn

from .presets import create_model, list_presets

__all__ = ["DEFAULT_BACKBONE", "HEAD_STREAM", "fresh_head", "load_backbone", "load_weights",
           "read_checkpoint"]

DEFAULT_BACKBONE = "vit_base_patch16_224.augreg_in21k"
"""ViT-B/16 pretrained on ImageNet-21k (AugReg), the backbone of the paper-scale runs."""

_STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
PathLike = Union[str, Path]


HEAD_STREAM = 0x5EED_4EAD
"""Offset of the fresh heads' random stream: head of seed s = ``Generator(HEAD_STREAM + s)``."""


def read_checkpoint(path: PathLike, load: Callable[[str], object], remedy: str):
    """``load(path)`` with an error that names the file and ``remedy`` when it is missing,
    empty, truncated or otherwise unreadable."""
    if not str(path).strip():
        raise ValueError(f"the checkpoint path is empty: give a file ({remedy})")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (an interrupted write?): {remedy}")
    try:
        return load(str(path))
    except Exception as e:  # torch, safetensors and numpy raise many types for bad files
        raise ValueError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {str(e)[:200]}): {remedy}"
        ) from None


def fresh_head(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw the classifier of a timm model from the head stream of ``seed`` (weights
    truncated normal, std 0.02, as timm initialises them; bias 0); returns the model."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no linear classifier to re-draw")
    g = torch.Generator().manual_seed(HEAD_STREAM + int(seed))
    with torch.no_grad():
        w = torch.empty(head.weight.shape)
        nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04, generator=g)
        head.weight.copy_(w)
        if head.bias is not None:
            head.bias.zero_()
    return model


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
    head_seed: Optional[int] = None,
    **kwargs,
) -> nn.Module:
    """A timm model (or preset) with pretrained weights.

    :param name: timm model name or preset (``avalanche_cts.models.create_model``).
    :param pretrained: fetch timm's weights for ``name`` (ignored when ``checkpoint`` is given).
        Presets have no published weights: pass their ``checkpoint`` (e.g. from
        :func:`avalanche_cts.harness.pretrain.pretrain_backbone`).
    :param checkpoint: local weights file (module docstring), loaded instead of fetching.
    :param head_seed: re-draw the classifier with :func:`fresh_head` when the weights do not
        provide it (a different class count, or a backbone-only file).
    :param kwargs: model settings, e.g. ``num_classes=100``.
    :raises ConnectionError: when weights cannot be fetched; the message says how to pass a file.
    """
    if checkpoint is not None:
        model = create_model(name, pretrained=False, **kwargs)
        left = load_weights(model, checkpoint)
    elif not pretrained:
        model, left = create_model(name, **kwargs), ["head"]
    elif name in list_presets():
        raise ValueError(
            f"{name!r} is a preset of this library and has no published weights: pass a local "
            f"file (checkpoint=FILE, --checkpoint FILE), e.g. the backbone written by "
            f"`python -m avalanche_cts.harness.pretrain`, or set pretrained=False"
        )
    else:
        try:
            model = create_model(name, pretrained=True, **kwargs)
        except (OSError, RuntimeError) as e:
            raise ConnectionError(_fetch_help(name, e)) from e
        left = ["head"] if kwargs.get("num_classes") not in (None, 1000) else []
    if head_seed is not None and left:
        fresh_head(model, head_seed)
    return model


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
    remedy = "download or copy the file again"
    read_checkpoint(path, lambda p: None, remedy)  # exists and is not empty
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise ValueError(
                f".npz checkpoints need a timm VisionTransformer, got {type(model).__name__}"
            )
        head = {k: v.clone() for k, v in model.state_dict().items() if k in _classifier_keys(model)}
        read_checkpoint(path, model.load_pretrained, remedy)
        return [k for k, v in head.items() if torch.equal(v, model.state_dict()[k])]
    if suffix not in _STATE_SUFFIXES:
        raise ValueError(
            f"unknown checkpoint type {suffix!r} of {path}: use one of "
            f"{', '.join(_STATE_SUFFIXES + ('.npz',))}"
        )
    from timm.models import load_state_dict

    state = read_checkpoint(path, load_state_dict, remedy)
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
