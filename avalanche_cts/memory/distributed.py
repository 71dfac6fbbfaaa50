"""Multi-GPU runs with torch.distributed (``torchrun``), through Avalanche's own support where
it works.

* :func:`init_distributed` starts the process group from ``torchrun``'s environment with
  Avalanche's ``DistributedHelper`` (so Avalanche's loggers write on rank 0 only); Avalanche
  puts rank r on ``cuda:r``, which is right on one node, so several nodes are refused.
* Training: :class:`~avalanche_cts.strategies.training.TrainingPath` wraps the model in DDP per
  experience (:func:`wrap_ddp`), shards the batches and evaluates on every rank.
* Memory: :class:`DistributedCoreTokensetBuffer` gives every rank the same buffer, equal to
  the one a single process builds from the same model and seed: the feature pass and the
  token scoring are split over the ranks in whole batches (batch ``j`` on rank ``j % world``,
  so every batch is computed exactly as one process would compute it) and gathered; the
  selection is decided once, on rank 0, and broadcast; every rank then appends the same
  records and the ranks compare a digest of their memories.

Launch: ``torchrun --nproc_per_node 8 -m avalanche_cts.harness.cli run --config CONFIG``.
"""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace
from typing import Any, Callable, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Subset

from .buffer import CoreTokensetBuffer
from .writer import MemoryWriter

__all__ = [
    "DistributedCoreTokensetBuffer",
    "DistributedMemoryWriter",
    "buffer_digest",
    "init_distributed",
    "is_main_process",
    "rank",
    "world_size",
    "wrap_ddp",
]


def rank() -> int:
    """Rank of this process (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(seed: int, backend: Optional[str] = None) -> bool:
    """Start torch.distributed from ``torchrun``'s environment (``WORLD_SIZE`` > 1).

    :param seed: seed of every RNG (Avalanche's ``RNGManager``), the same on all ranks.
    :param backend: ``"nccl"`` with CUDA, else ``"gloo"`` by default.
    :return: True when a process group was started.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]) != os.environ["WORLD_SIZE"]:
        raise RuntimeError(
            "multi-node runs are not supported: Avalanche's DistributedHelper puts "
            "rank r on cuda:r; run one node with torchrun --nproc_per_node N"
        )
    from avalanche.distributed import DistributedHelper

    return DistributedHelper.init_distributed(
        seed, backend=backend, use_cuda=torch.cuda.is_available()
    )


def wrap_ddp(model: nn.Module, device, **kwargs) -> nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel`` around ``model`` (already on ``device``)."""
    device = torch.device(device)
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)


def buffer_digest(buffer: CoreTokensetBuffer) -> str:
    """sha256 of the records of a buffer (labels, tasks, values, positions, lengths, weights)."""
    h = hashlib.sha256()
    for g in buffer.state_dict()["groups"]:
        h.update(f"{g['label']},{g['task']},{g['num_tokens']};".encode())
        for name in ("values", "positions", "lengths", "weights"):
            t = g[name]
            if t is not None:
                h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _stream_scorer(scorer) -> bool:
    """True for scorers drawing from their own RNG stream (their output depends on call order)."""
    return isinstance(getattr(scorer, "generator", None), torch.Generator)


class DistributedMemoryWriter(MemoryWriter):
    """:class:`MemoryWriter` that splits the feature and scoring passes over the ranks and
    decides the selection once, on rank 0 (module docstring); in one process it is the base
    class. Scorers with their own RNG stream (``random``) run on every rank over all
    samples, so their draws follow the single-process order."""

    def _by_batches(self, n: int, fn: Callable[[Tensor], List[Any]]) -> List[Any]:
        """Per-item results ``fn(positions)`` for positions ``0..n-1``, computed in batches of
        ``batch_size``: batch j on rank ``j % world`` (one call per rank over its batches, in
        order, so its loader forms the same batches), gathered in order on every rank."""
        w, r = world_size(), rank()
        if w == 1:
            return fn(torch.arange(n))
        batches = torch.arange(n).split(self.batch_size)[r::w]
        mine = torch.cat(batches) if batches else torch.zeros(0, dtype=torch.long)
        local = fn(mine) if len(mine) else []
        parts: List[Any] = [None] * w
        dist.all_gather_object(parts, (mine.tolist(), local))
        out: List[Any] = [None] * n
        for positions, items in parts:
            for i, item in zip(positions, items):
                out[i] = item
        return out

    def features(self, store, model, device, data, experience):
        base = super().features

        def per_item(pos: Tensor) -> List[Any]:
            cols = base(store, model, device, Subset(data, pos.tolist()), experience)
            return list(zip(*[[None] * len(pos) if c is None else c for c in cols]))

        rows = self._by_batches(len(data), per_item)
        return tuple(None if col[0] is None else torch.stack(col) for col in zip(*rows))

    def choose(self, store, keys, members, quotas, feats):
        base = super().choose
        if world_size() == 1:
            return base(store, keys, members, quotas, feats)
        box = [base(store, keys, members, quotas, feats) if rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def kept_tokens(self, store, model, device, data, idx: Tensor, experience: int):
        base = super().kept_tokens
        if store.tokens_per_sample < store.layout["num_tokens"] and _stream_scorer(self.scorer):
            return base(store, model, device, data, idx, experience)

        def per_item(pos: Tensor) -> List[Any]:
            values, positions, texts = base(store, model, device, data, idx[pos], experience)
            return list(zip(values, positions, texts or [None] * len(values)))

        rows = self._by_batches(len(idx), per_item)
        texts = [t for _, _, t in rows] if store.items.text_fields else None
        return [v for v, _, _ in rows], [q for _, q, _ in rows], texts


class DistributedCoreTokensetBuffer(CoreTokensetBuffer):
    """:class:`CoreTokensetBuffer` that shares its work over the ranks of torch.distributed
    (:class:`DistributedMemoryWriter`) and holds the same memory on every rank, checked by a
    digest after every update. Same arguments; behaves as the base class in one process."""

    writer_class = DistributedMemoryWriter

    def post_adapt(self, agent_state, exp):
        model = agent_state.model
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        super().post_adapt(
            SimpleNamespace(model=model, device=getattr(agent_state, "device", "cpu")), exp
        )
        if world_size() > 1:
            digests: List[str] = [None] * world_size()
            dist.all_gather_object(digests, buffer_digest(self))
            if len(set(digests)) > 1:
                raise RuntimeError(
                    f"the replay memory differs across ranks (digests {digests}); "
                    f"check that every rank holds the same model and data"
                )
