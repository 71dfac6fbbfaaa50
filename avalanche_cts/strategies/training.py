"""The GPU training path for any Avalanche ``SupervisedTemplate`` (Avalanche 0.6 has no AMP,
no gradient accumulation and leaves DDP wrapping to the user).

:class:`TrainingPath` is a mixin declared in front of a strategy class, e.g.
``class Naive(TrainingPath, avalanche.training.Naive)``; its keywords (``precision``,
``grad_accum``, ``lr_schedule``, ``sampler_seed``, ``ddp_kwargs``) come with the strategy's
own. The strategies the harness builds are declared here (:class:`Naive`, :class:`Cumulative`,
:class:`VLNaive`, :class:`VLCumulative`, :class:`InfLoRA`, :class:`CODAPrompt`). With the
defaults the loop is Avalanche's. The settings:

* ``precision="bf16"``: forward, loss and the plugins' ``before_backward`` (where memory replay
  runs its own forward) are under ``torch.autocast(bfloat16)``; backward and the optimizer step
  are outside; evaluation runs under autocast too.
* ``grad_accum=k``: ``k`` micro-batches per optimizer step, each loss scaled by ``1/window``;
  under DDP gradients are all-reduced on the last micro-batch only (``no_sync``). Iteration
  callbacks run per micro-batch, ``before/after_update`` per optimizer step.
* ``lr_schedule="cosine"``: the learning rate of each parameter group follows
  ``0.5 * (1 + cos(pi * e / E))`` over the ``E`` epochs of every experience.
* torch.distributed initialised: the model is wrapped in ``DistributedDataParallel`` for the
  training epochs of each experience (wrapped again per experience, so parameters added by
  model adaptation take part) and unwrapped before ``after_training_exp`` (memory update)
  and evaluation; training batches come from a ``DistributedSampler`` re-seeded every epoch
  (Avalanche's distributed loaders keep the shuffle of epoch 0); every rank evaluates the
  whole test set, so metrics are exact and identical on all ranks.

:func:`set_fused_attention` and :func:`compile_blocks` act on the model (timm ViT).
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Optional

import torch
from torch import nn

import avalanche.training

from . import LR_SCHEDULES, PRECISIONS
from .inflora import InfLoRA as _InfLoRA
from .prompt import CODAPrompt as _CODAPrompt
from .vl import VLCumulative as _VLCumulative
from .vl import VLNaive as _VLNaive

__all__ = [
    "CODAPrompt",
    "Cumulative",
    "InfLoRA",
    "Naive",
    "TrainingPath",
    "VLCumulative",
    "VLNaive",
    "compile_blocks",
    "set_fused_attention",
]


class TrainingPath:
    """Mixin placed before a ``SupervisedTemplate`` subclass; see the module docstring.
    (A plain mixin: Avalanche checks a strategy's keywords against the classes of its own
    MRO, which then include both.)

    :param precision: ``"fp32"`` or ``"bf16"`` (autocast).
    :param grad_accum: micro-batches per optimizer step.
    :param lr_schedule: ``"constant"`` or ``"cosine"`` (per epoch, restarted every experience).
    :param sampler_seed: seed of the distributed sampler.
    :param ddp_kwargs: ``DistributedDataParallel`` options.
    """

    _loss_scale: float = 1.0
    _dist_sampler = None

    def __init__(self, *, precision: str = "fp32", grad_accum: int = 1,
                 lr_schedule: str = "constant", sampler_seed: int = 0,
                 ddp_kwargs: Optional[Dict] = None, **kwargs):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if int(grad_accum) < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        self.precision = precision
        self.grad_accum = int(grad_accum)
        self.lr_schedule = lr_schedule
        self.sampler_seed = int(sampler_seed)
        self.ddp_kwargs = dict(ddp_kwargs or {})
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _grad_sync(self, sync: bool):
        if not sync and isinstance(self.model, nn.parallel.DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    @staticmethod
    def _distributed() -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    # ------------------------------------------------------------- data loaders
    def make_train_dataloader(self, shuffle=True, drop_last=False, **kwargs):
        """Avalanche's loader, or under torch.distributed one over a ``DistributedSampler``
        (re-seeded every epoch in :meth:`_before_training_epoch`)."""
        if not self._distributed():
            return super().make_train_dataloader(shuffle=shuffle, drop_last=drop_last, **kwargs)
        from avalanche.benchmarks.utils.data_loader import collate_from_data_or_kwargs
        from torch.utils.data import DataLoader, DistributedSampler

        args = self._loader_args(self.train_mb_size, drop_last=drop_last, **kwargs)
        collate_from_data_or_kwargs(self.adapted_dataset, args)
        self._dist_sampler = DistributedSampler(
            self.adapted_dataset, shuffle=shuffle, seed=self.sampler_seed, drop_last=drop_last
        )
        self.dataloader = DataLoader(self.adapted_dataset, sampler=self._dist_sampler, **args)

    def make_eval_dataloader(self, shuffle=False, **kwargs):
        """Avalanche's loader; under torch.distributed every rank reads the whole test set."""
        if not self._distributed():
            return super().make_eval_dataloader(shuffle=shuffle, **kwargs)
        from avalanche.benchmarks.utils.data_loader import SingleDatasetDataLoader

        args = self._loader_args(self.eval_mb_size, shuffle=shuffle, **kwargs)
        self.dataloader = SingleDatasetDataLoader(
            self.adapted_dataset, distributed_sampling=False, **args
        )

    def _loader_args(self, batch_size: int, num_workers=0, pin_memory=None,
                     persistent_workers=False, **kwargs) -> Dict:
        """DataLoader keywords (``shuffle``/``drop_last`` kept from ``kwargs``, the rest of
        the strategy's ``train``/``eval`` keywords ignored, as Avalanche's loaders do)."""
        keep = {k: v for k, v in kwargs.items() if k in ("shuffle", "drop_last")}
        return self._obtain_common_dataloader_parameters(
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, **keep)

    # ---------------------------------------------------------- experience hooks
    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        for g in self.optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        if self._distributed():
            from ..memory.distributed import wrap_ddp

            self.model = wrap_ddp(self.model, self.device, **self.ddp_kwargs)

    def _after_training_exp(self, **kwargs):
        if isinstance(self.model, nn.parallel.DistributedDataParallel):
            self.model = self.model.module
        super()._after_training_exp(**kwargs)

    def _before_training_epoch(self, **kwargs):
        if self._dist_sampler is not None:
            self._dist_sampler.set_epoch(
                10_000 * self.clock.train_exp_counter + self.clock.train_exp_epochs
            )
        if self.lr_schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * self.clock.train_exp_epochs / self.train_epochs))
            for g in self.optimizer.param_groups:
                g["lr"] = g["initial_lr"] * f
        super()._before_training_epoch(**kwargs)

    # ---------------------------------------------------------------- the loops
    def training_epoch(self, **kwargs):
        """Avalanche's training epoch with autocast, gradient accumulation and ``no_sync``."""
        k = max(1, int(self.grad_accum))
        n = len(self.dataloader)
        for i, self.mbatch in enumerate(self.dataloader):
            if self._stop_training:
                break
            start = i - i % k
            window = min(k, n - start)
            last = i == start + window - 1
            self._unpack_minibatch()
            self._before_training_iteration(**kwargs)
            if i == start:
                self.optimizer.zero_grad(set_to_none=True)
            self.loss = self._make_empty_loss()
            with self._grad_sync(last):
                with self._autocast():
                    self._before_forward(**kwargs)
                    self.mb_output = self.forward()
                    self._after_forward(**kwargs)
                    self.loss += self.criterion()
                    self._before_backward(**kwargs)
                self._loss_scale = 1.0 / window
                self.backward()
            self._after_backward(**kwargs)
            if last:
                self._before_update(**kwargs)
                self.optimizer_step()
                self._after_update(**kwargs)
            self._after_training_iteration(**kwargs)

    def backward(self):
        loss = self.loss if self._loss_scale == 1.0 else self.loss * self._loss_scale
        loss.backward(retain_graph=self.retain_graph)

    def eval_epoch(self, **kwargs):
        with self._autocast():
            super().eval_epoch(**kwargs)


class Naive(TrainingPath, avalanche.training.Naive):
    """Avalanche's ``Naive`` (fine-tuning; add plugins for replay) on the training path."""


class Cumulative(TrainingPath, avalanche.training.Cumulative):
    """Avalanche's ``Cumulative`` (all data seen so far) on the training path."""


class VLNaive(TrainingPath, _VLNaive):
    """:class:`~avalanche_cts.strategies.vl.VLNaive` on the training path."""


class VLCumulative(TrainingPath, _VLCumulative):
    """:class:`~avalanche_cts.strategies.vl.VLCumulative` on the training path."""


class InfLoRA(TrainingPath, _InfLoRA):
    """:class:`~avalanche_cts.strategies.inflora.InfLoRA` on the training path."""


class CODAPrompt(TrainingPath, _CODAPrompt):
    """:class:`~avalanche_cts.strategies.prompt.CODAPrompt` on the training path."""


def set_fused_attention(model: nn.Module, enabled: bool = True) -> int:
    """Set ``fused_attn`` (timm's switch to ``scaled_dot_product_attention``) on every
    attention module; return how many were set. Scorers that read attention weights switch
    it off only inside their own call."""
    mods = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for m in mods:
        m.fused_attn = enabled
    return len(mods)


def compile_blocks(model: nn.Module, **options) -> int:
    """``torch.compile`` each transformer block in place (``nn.Module.compile``), so full-image
    forwards and the sparse token path (which calls the blocks itself) both use the compiled
    blocks while adapters still see the timm model. Returns the number of blocks compiled."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(model).__name__} has no .blocks to compile")
    for blk in blocks:
        blk.compile(**options)
    return len(blocks)
