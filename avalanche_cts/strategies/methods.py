"""Baselines registered with the experiment runner (:mod:`avalanche_cts.experiment`).

Importing this module registers, besides the runner's own ``naive``, ``cumulative``
(upper bound: retrains on all data seen so far) and ``replay`` (class-balanced):

* ``replay_reservoir``, ``replay_class_balanced``, ``replay_herding``: Avalanche's
  ``ReplayPlugin`` with a ``ReservoirSamplingBuffer``, ``ClassBalancedBuffer`` or
  class-grouped herding ``ParametricBuffer`` (iCaRL selection on the pre-logits features),
  resized to hold the same bytes as a core tokenset at ``cfg.budget``;
* ``inflora`` (:class:`~.inflora.InfLoRA`) and ``coda_prompt`` (:class:`~.prompt.CODAPrompt`):
  rehearsal-free, memory 0 bytes; ``cfg.lr`` is their Adam learning rate and
  ``cfg.options`` their keywords, e.g. ``{"rank": 10}`` or ``{"pool_size": 100}``.

Each is a one-line config, e.g. ``RunConfig(method="inflora", lr=5e-4, lr_schedule="cosine",
options={"rank": 10})`` (InfLoRA's ImageNet-R protocol: 50 epochs, batch 128) or a grid cell
(``benchmarks/configs/baselines_fmnist.yaml``). The runner imports this module when it meets
a method name it does not know.
"""
from __future__ import annotations

from typing import Callable

from ..experiment import ByteBudgetResize, register_method, strategy_kwargs
from .inflora import InfLoRA
from .prompt import CODAPrompt

__all__ = ["BUFFER_METHODS", "PEFT_METHODS"]


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


BUFFER_METHODS = {"replay_reservoir": _reservoir, "replay_class_balanced": _class_balanced,
                  "replay_herding": _herding}
"""Method name -> storage-policy factory ``(cfg, model) -> ExemplarsBuffer``."""

PEFT_METHODS = {"inflora": InfLoRA, "coda_prompt": CODAPrompt}
"""Method name -> rehearsal-free strategy class."""


def _buffer_method(make_policy: Callable) -> Callable:
    def build(cfg, model, evaluator):
        from avalanche.training import Naive
        from avalanche.training.plugins import ReplayPlugin

        policy = make_policy(cfg, model)
        replay = ReplayPlugin(mem_size=1, batch_size=cfg.batch_size,
                              batch_size_mem=cfg.batch_size_mem or cfg.batch_size,
                              storage_policy=policy)
        return Naive(**strategy_kwargs(cfg, model, evaluator),
                     plugins=[ByteBudgetResize(policy, cfg.budget), replay])

    return build


def _peft_method(cls: type) -> Callable:
    def build(cfg, model, evaluator):
        return cls(**strategy_kwargs(cfg, model, evaluator), lr=cfg.lr,
                   weight_decay=cfg.weight_decay, **cfg.options)

    return build


for _name, _factory in BUFFER_METHODS.items():
    register_method(_name)(_buffer_method(_factory))
for _name, _cls in PEFT_METHODS.items():
    register_method(_name)(_peft_method(_cls))
