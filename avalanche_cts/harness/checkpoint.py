"""Per-experience run checkpoints (backbones and their weights: :mod:`avalanche_cts.models.loading`).

Run checkpoints: :func:`save_run_state` writes, after an experience, plain state dicts with
``torch.save`` (model, optimizer, Avalanche clock, the state of every plugin that has one:
token memories and Avalanche sample buffers, the strategy's own ``state_dict()`` if it has
one, the accuracy rows and the RNG states of torch, CUDA, NumPy and Python);
:func:`restore_run_state` puts them back, so a resumed run continues exactly where the
uninterrupted one would be. An empty, truncated or corrupt file raises an error naming the
file and what to do (:func:`read_checkpoint`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import torch
from torch import nn

from .._files import atomic_write
from ..models.loading import read_checkpoint

__all__ = [
    "RUN_STATE_VERSION",
    "load_run_state",
    "restore_run_state",
    "run_state_parts",
    "save_run_state",
]

RUN_STATE_VERSION = 2
PathLike = Union[str, Path]


# ------------------------------------------------------------------ run state
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def run_state_parts(strategy) -> Tuple[Dict[str, object], List[str]]:
    """``(stateful, unsupported)``: the strategy's plugins with ``state_dict`` /
    ``load_state_dict`` by position, and the names of plugins holding a memory that none
    of them saves."""
    stateful, saved_policies, holders = {}, set(), []
    for i, p in enumerate(strategy.plugins):
        if callable(getattr(p, "state_dict", None)) and callable(getattr(p, "load_state_dict", None)):
            stateful[f"plugin{i}"] = p
            policy = getattr(p, "storage_policy", None)
            if policy is not None:
                saved_policies.add(id(policy))
        elif getattr(p, "storage_policy", None) is not None:
            holders.append(p)
    unsupported = [type(p).__name__ for p in holders if id(p.storage_policy) not in saved_policies]
    return stateful, unsupported


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
    acc_matrix: Dict[str, List[List[float]]],
    elapsed_s: float,
    config: Dict,
) -> None:
    """Write the state of a run after ``next_experience`` experiences (atomically);
    ``acc_matrix`` holds the matrix of every metric so far, by metric name."""
    plugins, unsupported = run_state_parts(strategy)
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
        "plugins": {name: p.state_dict() for name, p in plugins.items()},
        "strategy": own() if callable(own) else None,
        "rng": _rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_run_state(path: PathLike) -> Dict:
    """Read a run state written by :func:`save_run_state` (tensors on the CPU)."""
    remedy = "delete it to restart the run from its beginning, or run with resume=False"
    state = read_checkpoint(
        path, lambda p: torch.load(p, map_location="cpu", weights_only=True), remedy)
    if not isinstance(state, dict) or state.get("version") != RUN_STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else None
        raise ValueError(
            f"{path}: run state version {version}, expected {RUN_STATE_VERSION}: {remedy}"
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
            f"the saved model does not fit the strategy's ({e}): delete state.pt or set "
            f"resume=False"
        ) from None
    if getattr(strategy, "optimized_param_id", ()) is None:
        # what Avalanche does before the first experience (it would reset the state later)
        strategy.make_optimizer(reset_optimizer_state=True)
    saved_groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    if saved_groups == [len(g["params"]) for g in strategy.optimizer.param_groups]:
        strategy.optimizer.load_state_dict(state["optimizer"])  # else rebuilt per experience
    for k, v in state["clock"].items():
        setattr(strategy.clock, k, v)
    plugins, _ = run_state_parts(strategy)
    if set(plugins) != set(state["plugins"]):
        raise ValueError(
            f"saved plugin states {sorted(state['plugins'])} do not match the strategy's "
            f"{sorted(plugins)}: delete state.pt or set resume=False"
        )
    for name, p in plugins.items():
        p.load_state_dict(state["plugins"][name])
    _set_rng_state(state["rng"])
