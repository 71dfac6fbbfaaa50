"""Continual-learning methods by name: each builds an Avalanche strategy from a ``RunConfig``.

Built in (:data:`avalanche_cts.harness.METHODS`), every strategy on the training path
(:class:`~avalanche_cts.strategies.training.TrainingPath`: ``cfg.precision``, ``cfg.grad_accum``,
``cfg.lr_schedule``):

* ``naive`` (no memory, the floor) and ``cumulative`` (retrains on all data seen so far, the
  ceiling);
* ``coreset``, ``core_tokens``, ``core_tokenset``: :class:`~avalanche_cts.CoreTokensetBuffer`
  with :class:`~avalanche_cts.CoreTokensetReplayPlugin` (t = 1, t = r, t = r ** e);
* ``replay`` (= ``replay_class_balanced``), ``replay_reservoir``, ``replay_herding``:
  Avalanche's ``ReplayPlugin`` with a ``ClassBalancedBuffer``, ``ReservoirSamplingBuffer`` or
  class-grouped herding ``ParametricBuffer``, resized after each experience to hold the same
  bytes as a core tokenset at ``cfg.budget`` (uint8 pixels);
* ``inflora`` (:class:`~avalanche_cts.strategies.InfLoRA`) and ``coda_prompt``
  (:class:`~avalanche_cts.strategies.CODAPrompt`): rehearsal-free, 0 bytes of memory;
  ``cfg.lr`` is their Adam learning rate and ``cfg.options`` their keywords.
* A memory on a PEFT strategy: every memory method above (token memories and Avalanche's
  buffers) runs on ``cfg.options["base"]`` (``inflora`` or ``coda_prompt``, keywords in
  ``cfg.options["base_options"]``) instead of ``Naive``, e.g. ``RunConfig(method="core_tokenset",
  options={"base": "coda_prompt", "base_options": {"pool_size": 100}})``. The memory loss is
  the cross-entropy over all seen classes' logits (old heads frozen); new data keeps the
  strategy's local cross-entropy (:meth:`~avalanche_cts.strategies.base.PEFTTemplate.criterion`).

For BLIP VQA and captioning models (``cfg.model`` a BLIP preset or checkpoint) ``naive``,
``cumulative`` and the token-memory methods use the VL templates
(:class:`~avalanche_cts.strategies.vl.VLNaive`, :class:`~avalanche_cts.strategies.vl.VLCumulative`;
``cfg.options["template"]``: their generation and crop keywords); the replay plugin's memory
loss is then the answer/caption NLL. Avalanche's sample buffers and the rehearsal-free
baselines are classification methods.

Register more with ``@avalanche_cts.harness.register_method("name", memory=..., ...)`` on
``fn(cfg, model, evaluator) -> strategy``: the keywords are the method's
:class:`~avalanche_cts.harness.facts.MethodFacts` (whether it keeps a memory, its retention
rule, its report label, the ``cfg.options`` it reads), which ``RunConfig``, the reports and the
demos read.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from avalanche.training.plugins import EvaluationPlugin

from ..memory.buffer import CoreTokensetBuffer
from ..memory.inference import PartialInferencePlugin, check_inference_model
from ..models import resolve_normalization
from ..memory.plugin import CoreTokensetReplayPlugin
from ..strategies.base import param_groups
from ..strategies.training import CODAPrompt, Cumulative, InfLoRA, Naive, VLCumulative, VLNaive
from .config import RunConfig
from ..memory.distributed import DistributedCoreTokensetBuffer, rank, world_size
from ..memory.sample_buffers import ByteBudgetResize, SampleReplayPlugin

__all__ = [
    "RANK_SEED_STRIDE",
    "build_strategy",
    "is_vl_model",
    "make_optimizer",
    "strategy_kwargs",
]

RANK_SEED_STRIDE = 1_000_003
"""Seed offset per rank for what should differ between ranks (dropout masks, memory batches)."""



def build_strategy(cfg: RunConfig, model: nn.Module, evaluator: EvaluationPlugin):
    """The Avalanche strategy of ``cfg.method`` around ``model``, evaluating in
    ``cfg.inference`` (top-token inference adds a
    :class:`~avalanche_cts.memory.inference.PartialInferencePlugin`)."""
    from . import METHODS

    strategy = METHODS.load(cfg.method)(cfg, model, evaluator)
    if cfg.inference != "whole":  # checked before training, not at the first evaluation
        if is_vl_model(model):
            raise ValueError("top-token inference classifies images: BLIP runs are evaluated "
                             "on whole images (inference='whole')")
        check_inference_model(model, cfg.inference_mode)
        strategy.plugins.append(PartialInferencePlugin(
            cfg.inference, cfg.inference_scorer, cfg.inference_mode, seed=cfg.seed))
    return strategy


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (adam, adamw, sgd with ``cfg.momentum``) over ``model``'s trainable
    parameters, its classifier head at ``cfg.lr * cfg.head_lr_scale``
    (:func:`~avalanche_cts.strategies.base.param_groups`)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    params = param_groups(model, head, cfg.head_lr_scale, cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def strategy_kwargs(cfg: RunConfig, model: nn.Module, evaluator: EvaluationPlugin,
                    optimizer: bool = True) -> Dict:
    """Keyword arguments shared by the strategies (optimiser from ``cfg.optimizer``, left out
    with ``optimizer=False`` for strategies that build their own; the training path's
    precision, gradient accumulation and schedule)."""
    return dict(
        model=model,
        optimizer=make_optimizer(cfg, model) if optimizer else None,
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=cfg.batch_size,
        train_epochs=cfg.epochs,
        eval_mb_size=cfg.eval_batch_size,
        device=cfg.device,
        evaluator=evaluator,
        precision=cfg.precision,
        grad_accum=cfg.grad_accum,
        lr_schedule=cfg.lr_schedule,
        sampler_seed=cfg.seed,
    )


def is_vl_model(model: nn.Module) -> bool:
    """Whether ``model`` is a BLIP VQA or captioning model (trained with the VL templates)."""
    from ..models import is_blip_vl

    return is_blip_vl(model)


def _supervised(cfg: RunConfig, model: nn.Module, evaluator, cumulative: bool = False,
                plugins=()):
    """``Naive`` / ``Cumulative`` on the training path, or their VL templates for BLIP models."""
    kw = dict(strategy_kwargs(cfg, model, evaluator), plugins=list(plugins))
    if is_vl_model(model):
        from ..models import blip_tokenizer

        if world_size() > 1:
            raise ValueError("BLIP runs train on one device: start them without torchrun")
        cls = VLCumulative if cumulative else VLNaive
        return cls(tokenizer=blip_tokenizer(cfg.model, cfg.checkpoint), **kw,
                   **cfg.options.get("template", {}))
    return (Cumulative if cumulative else Naive)(**kw)


def naive(cfg, model, evaluator):
    """Fine-tuning, the floor."""
    return _supervised(cfg, model, evaluator)


def cumulative(cfg, model, evaluator):
    """Training on all data seen so far, the ceiling."""
    return _supervised(cfg, model, evaluator, cumulative=True)


# ------------------------------------------------------------- token memories
def token_memory(cfg: RunConfig, model, evaluator):
    """``coreset``, ``core_tokens``, ``core_tokenset``: our buffer and replay plugin with
    ``cfg.memory()`` (the retention from the method's rule)."""
    buffer_cls = DistributedCoreTokensetBuffer if world_size() > 1 else CoreTokensetBuffer
    settings = cfg.memory()
    buffer = buffer_cls(settings=settings,
                        normalization=cfg.options.get("buffer", {}).get("normalization"))
    plugin = CoreTokensetReplayPlugin(
        buffer, recipe=settings.recipe, batch_size_mem=cfg.batch_size_mem,
        seed=cfg.seed + RANK_SEED_STRIDE * rank(), **cfg.options.get("plugin", {}))
    if cfg.options.get("base") is None:
        plugin.prepare_model(model)  # before the optimiser collects the trainable parameters
        return _supervised(cfg, model, evaluator, plugins=[plugin])
    strategy = _base_strategy(cfg, model, evaluator, [plugin])
    plugin.prepare_model(strategy.model)  # after the PEFT strategy froze what it adapts
    return strategy


# ------------------------------------------------------ Avalanche's sample buffers
def _classification_only(name: str, model: nn.Module) -> None:
    if is_vl_model(model):
        raise ValueError(f"method {name!r} is for classifiers; BLIP runs use naive, cumulative, "
                         f"coreset, core_tokens or core_tokenset")


def _sample_replay(cfg, model, evaluator, policy):
    """Avalanche's ``ReplayPlugin`` (:class:`SampleReplayPlugin`) over ``policy``, resized to
    the bytes of ``cfg.budget``."""
    _classification_only(cfg.method, model)
    replay = SampleReplayPlugin(mem_size=1, batch_size=cfg.batch_size,
                                batch_size_mem=cfg.batch_size_mem or cfg.batch_size,
                                storage_policy=policy)
    resize = ByteBudgetResize(policy, cfg.memory().budget_fraction, resolve_normalization(model))
    return _base_strategy(cfg, model, evaluator, [resize, replay])


def replay_class_balanced(cfg, model, evaluator):
    """Avalanche's ``ClassBalancedBuffer`` (``replay`` is this one)."""
    from avalanche.training.storage_policy import ClassBalancedBuffer

    return _sample_replay(cfg, model, evaluator, ClassBalancedBuffer(max_size=1, adaptive_size=True))


def replay_reservoir(cfg, model, evaluator):
    """Avalanche's ``ReservoirSamplingBuffer``."""
    from avalanche.training.storage_policy import ReservoirSamplingBuffer

    return _sample_replay(cfg, model, evaluator, ReservoirSamplingBuffer(max_size=1))


def replay_herding(cfg, model, evaluator):
    """Avalanche's class-grouped herding ``ParametricBuffer``."""
    from avalanche.training.storage_policy import HerdingSelectionStrategy, ParametricBuffer

    return _sample_replay(cfg, model, evaluator, ParametricBuffer(
        max_size=1, groupby="class", selection_strategy=HerdingSelectionStrategy(model, "head_drop")))


# ------------------------------------------------------------- rehearsal-free
def _peft(cls, name: str, cfg, model, evaluator, options: Dict, plugins=()):
    _classification_only(name, model)
    return cls(**strategy_kwargs(cfg, model, evaluator, optimizer=False), lr=cfg.lr,
               weight_decay=cfg.weight_decay, head_lr_scale=cfg.head_lr_scale,
               plugins=list(plugins), **options)


PEFT_BASES = {"inflora": InfLoRA, "coda_prompt": CODAPrompt}
"""Strategies a memory method can run on (``cfg.options["base"]``)."""


def _base_strategy(cfg: RunConfig, model: nn.Module, evaluator, plugins):
    """The strategy that carries a memory method's ``plugins``: ``Naive`` (the VL template
    for BLIP), or the PEFT strategy named by ``cfg.options["base"]`` (``inflora``,
    ``coda_prompt``) with ``cfg.options["base_options"]`` as its keywords; ``cfg.lr`` is its
    Adam learning rate."""
    base = cfg.options.get("base")
    if base is None:
        return _supervised(cfg, model, evaluator, plugins=plugins)
    if base not in PEFT_BASES:
        raise ValueError(f"options['base'] must be one of {sorted(PEFT_BASES)} (the strategy "
                         f"the memory is added to), got {base!r}; leave it out for Naive")
    return _peft(PEFT_BASES[base], base, cfg, model, evaluator,
                 cfg.options.get("base_options", {}), plugins)


def inflora(cfg, model, evaluator):
    """InfLoRA (rehearsal-free; ``cfg.lr`` is its Adam learning rate)."""
    return _peft(InfLoRA, cfg.method, cfg, model, evaluator, cfg.options)


def coda_prompt(cfg, model, evaluator):
    """CODA-Prompt (rehearsal-free; ``cfg.lr`` is its Adam learning rate)."""
    return _peft(CODAPrompt, cfg.method, cfg, model, evaluator, cfg.options)
