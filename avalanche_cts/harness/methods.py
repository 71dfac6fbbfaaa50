"""Continual-learning methods by name: each builds an Avalanche strategy from a ``RunConfig``.

Built in (``list_methods()``):

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

For BLIP VQA and captioning models (``cfg.model`` a BLIP preset or checkpoint) ``naive``,
``cumulative`` and the token-memory methods use the VL templates
(:class:`~avalanche_cts.vl.template.VLNaive`, :class:`~avalanche_cts.vl.template.VLCumulative`;
``cfg.options["template"]``: their generation and crop keywords); the replay plugin's memory
loss is then the answer/caption NLL. Avalanche's sample buffers and the rehearsal-free
baselines are classification methods.

Register more with ``@register_method("name")`` on ``fn(cfg, model, evaluator) -> strategy``.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import nn

from avalanche.training.plugins import EvaluationPlugin

from ..buffer import CoreTokensetBuffer
from ..models import resolve_normalization
from ..plugin import CoreTokensetReplayPlugin
from ..strategies.inflora import InfLoRA
from ..strategies.prompt import CODAPrompt
from .config import RunConfig
from .distributed import DistributedCoreTokensetBuffer, rank, world_size
from .sample_buffers import ByteBudgetResize

__all__ = [
    "BUFFER_METHODS",
    "PEFT_METHODS",
    "RANK_SEED_STRIDE",
    "build_strategy",
    "is_vl_model",
    "list_methods",
    "make_optimizer",
    "register_method",
    "strategy_kwargs",
]

RANK_SEED_STRIDE = 1_000_003
"""Seed offset per rank for what should differ between ranks (dropout masks, memory batches)."""

MethodBuilder = Callable[[RunConfig, nn.Module, EvaluationPlugin], "object"]
_METHODS: Dict[str, MethodBuilder] = {}


def register_method(name: str) -> Callable[[MethodBuilder], MethodBuilder]:
    """Register a strategy builder ``fn(cfg, model, evaluator) -> SupervisedTemplate``."""

    def deco(fn: MethodBuilder) -> MethodBuilder:
        _METHODS[name] = fn
        return fn

    return deco


def list_methods() -> List[str]:
    return sorted(_METHODS)


def build_strategy(cfg: RunConfig, model: nn.Module, evaluator: EvaluationPlugin):
    """The Avalanche strategy of ``cfg.method`` around ``model``."""
    if cfg.method not in _METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; registered: {list_methods()}")
    return _METHODS[cfg.method](cfg, model, evaluator)


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (adam, adamw, sgd with ``cfg.momentum``) over ``params``."""
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def strategy_kwargs(cfg: RunConfig, model: nn.Module, evaluator: EvaluationPlugin) -> Dict:
    """Keyword arguments shared by Avalanche strategies (optimiser from ``cfg.optimizer``)."""
    return dict(
        model=model,
        optimizer=make_optimizer(cfg, (p for p in model.parameters() if p.requires_grad)),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=cfg.batch_size,
        train_epochs=cfg.epochs,
        eval_mb_size=cfg.eval_batch_size,
        device=cfg.device,
        evaluator=evaluator,
    )


def is_vl_model(model: nn.Module) -> bool:
    """Whether ``model`` is a BLIP VQA or captioning model (trained with the VL templates)."""
    from ..models import is_blip_vl

    return is_blip_vl(model)


def _supervised(cfg: RunConfig, model: nn.Module, evaluator, cumulative: bool = False,
                plugins=()):
    """Avalanche's ``Naive`` / ``Cumulative``, or their VL templates for BLIP models."""
    kw = dict(strategy_kwargs(cfg, model, evaluator), plugins=list(plugins))
    if is_vl_model(model):
        from ..models import blip_tokenizer
        from ..vl.template import VLCumulative, VLNaive

        if world_size() > 1:
            raise ValueError("BLIP runs train on one device: start them without torchrun")
        cls = VLCumulative if cumulative else VLNaive
        return cls(tokenizer=blip_tokenizer(cfg.model, cfg.checkpoint), **kw,
                   **cfg.options.get("template", {}))
    from avalanche.training import Cumulative, Naive

    return (Cumulative if cumulative else Naive)(**kw)


@register_method("naive")
def _naive(cfg, model, evaluator):
    return _supervised(cfg, model, evaluator)


@register_method("cumulative")
def _cumulative(cfg, model, evaluator):
    return _supervised(cfg, model, evaluator, cumulative=True)


# ------------------------------------------------------------- token memories
def _token_method(cfg: RunConfig, model, evaluator):
    buffer_cls = DistributedCoreTokensetBuffer if world_size() > 1 else CoreTokensetBuffer
    buffer = buffer_cls(budget_fraction=cfg.budget, token_retention=cfg.retention(),
                        selector=cfg.selector, scorer=cfg.scorer, token_choice=cfg.token_choice,
                        seed=cfg.seed,
                        **{"num_workers": cfg.num_workers, **cfg.options.get("buffer", {})})
    plugin = CoreTokensetReplayPlugin(
        buffer, batch_size_mem=cfg.batch_size_mem, replay_mode=cfg.replay_mode,
        dropout=cfg.dropout, dropout_schedule=cfg.dropout_schedule,
        dropout_fraction=cfg.dropout_fraction, dropout_tokens=cfg.dropout_tokens,
        dropout_refresh=cfg.dropout_refresh, seed=cfg.seed + RANK_SEED_STRIDE * rank(),
        **cfg.options.get("plugin", {}))
    plugin.prepare_model(model)
    return _supervised(cfg, model, evaluator, plugins=[plugin])


for _name in ("coreset", "core_tokens", "core_tokenset"):
    register_method(_name)(_token_method)


# ------------------------------------------------------ Avalanche's sample buffers
def _reservoir(cfg, model):
    from avalanche.training.storage_policy import ReservoirSamplingBuffer

    return ReservoirSamplingBuffer(max_size=1)


def _class_balanced(cfg, model):
    from avalanche.training.storage_policy import ClassBalancedBuffer

    return ClassBalancedBuffer(max_size=1, adaptive_size=True)


def _herding(cfg, model):
    from avalanche.training.storage_policy import HerdingSelectionStrategy, ParametricBuffer

    return ParametricBuffer(max_size=1, groupby="class",
                            selection_strategy=HerdingSelectionStrategy(model, "head_drop"))


BUFFER_METHODS = {"replay": _class_balanced, "replay_reservoir": _reservoir,
                  "replay_class_balanced": _class_balanced, "replay_herding": _herding}
"""Method name -> storage-policy factory ``(cfg, model) -> ExemplarsBuffer``."""


def _classification_only(name: str, model: nn.Module) -> None:
    if is_vl_model(model):
        raise ValueError(f"method {name!r} is for classifiers; BLIP runs use naive, cumulative, "
                         f"coreset, core_tokens or core_tokenset")


def _buffer_method(make_policy: Callable) -> Callable:
    def build(cfg, model, evaluator):
        from avalanche.training import Naive

        _classification_only(cfg.method, model)
        from avalanche.training.plugins import ReplayPlugin

        policy = make_policy(cfg, model)
        replay = ReplayPlugin(mem_size=1, batch_size=cfg.batch_size,
                              batch_size_mem=cfg.batch_size_mem or cfg.batch_size,
                              storage_policy=policy)
        resize = ByteBudgetResize(policy, cfg.budget, resolve_normalization(model))
        return Naive(**strategy_kwargs(cfg, model, evaluator), plugins=[resize, replay])

    return build


PEFT_METHODS = {"inflora": InfLoRA, "coda_prompt": CODAPrompt}
"""Method name -> rehearsal-free strategy class."""


def _peft_method(cls: type) -> Callable:
    def build(cfg, model, evaluator):
        _classification_only(cfg.method, model)
        return cls(**strategy_kwargs(cfg, model, evaluator), lr=cfg.lr,
                   weight_decay=cfg.weight_decay, **cfg.options)

    return build


for _name, _factory in BUFFER_METHODS.items():
    register_method(_name)(_buffer_method(_factory))
for _name, _cls in PEFT_METHODS.items():
    register_method(_name)(_peft_method(_cls))
