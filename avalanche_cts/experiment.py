"""Run one continual-learning method on a benchmark and collect its metrics.

Methods are registered by name (:func:`register_method`); a method builder receives the
run configuration, the model and an evaluator and returns an Avalanche strategy. Built in:
``naive``, ``cumulative``, ``replay`` (Avalanche's ``ReplayPlugin`` + ``ClassBalancedBuffer``
holding the same bytes), ``coreset``, ``core_tokens`` and ``core_tokenset``.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from .buffer import CoreTokensetBuffer
from .models import create_model
from .plugin import CoreTokensetReplayPlugin

__all__ = [
    "RunConfig",
    "register_method",
    "list_methods",
    "build_strategy",
    "run",
    "default_token_retention",
    "accuracy_summary",
]


@dataclass
class RunConfig:
    """Settings of one run. ``budget`` is a fraction of the bytes of the data seen so far."""

    method: str = "core_tokenset"
    budget: float = 0.01
    token_retention: Optional[float] = None
    selector: str = "random"
    scorer: str = "random"
    replay_mode: str = "zero"
    dropout: Optional[float] = None
    model: str = "vit_fmnist_tiny"
    model_kwargs: Dict = field(default_factory=dict)
    epochs: int = 2
    batch_size: int = 64
    batch_size_mem: Optional[int] = None
    eval_batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    options: Dict = field(default_factory=dict)
    """Method-specific settings (e.g. InfLoRA's rank)."""

    @classmethod
    def from_dict(cls, d: Dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown run settings {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    def key(self) -> str:
        """A file-name-safe identifier of the run."""
        parts = [self.method]
        if self.method not in ("naive", "cumulative"):
            parts.append(f"r{self.budget:g}")
        if self.method in ("core_tokens", "core_tokenset"):
            parts += [self.selector, self.scorer, self.replay_mode]
            if self.token_retention is not None:
                parts.append(f"t{self.token_retention:g}")
        parts.append(f"s{self.seed}")
        return "_".join(parts).replace("/", "-")


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


def strategy_kwargs(cfg: RunConfig, model: nn.Module, evaluator: EvaluationPlugin) -> Dict:
    """Keyword arguments shared by Avalanche strategies (Adam optimiser)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return dict(
        model=model,
        optimizer=torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=cfg.batch_size,
        train_epochs=cfg.epochs,
        eval_mb_size=cfg.eval_batch_size,
        device=cfg.device,
        evaluator=evaluator,
    )


def default_token_retention(method: str, budget: float) -> float:
    """Token retention t of a method at budget r: coreset 1, core tokens r, core tokenset sqrt(r)."""
    return {"coreset": 1.0, "core_tokens": budget, "core_tokenset": math.sqrt(budget)}[method]


@register_method("naive")
def _naive(cfg, model, evaluator):
    from avalanche.training import Naive

    return Naive(**strategy_kwargs(cfg, model, evaluator))


@register_method("cumulative")
def _cumulative(cfg, model, evaluator):
    from avalanche.training import Cumulative

    return Cumulative(**strategy_kwargs(cfg, model, evaluator))


class ByteBudgetResize(SupervisedPlugin):
    """Resizes an Avalanche sample buffer to ``budget * seen bytes / sample_bytes`` samples
    before it is updated, so it holds the same bytes as a core tokenset at that budget.

    Must come before the ``ReplayPlugin`` in the plugin list.
    """

    def __init__(self, storage_policy, budget: float, sample_bytes: Optional[int] = None):
        super().__init__()
        self.storage_policy = storage_policy
        self.budget = budget
        self.sample_bytes = sample_bytes
        self.seen_bytes = 0

    def after_training_exp(self, strategy, **kwargs):
        data = strategy.experience.dataset
        if self.sample_bytes is None:
            x = data[0][0]
            self.sample_bytes = x.numel()  # uint8 pixels of one sample
        self.seen_bytes += len(data) * self.sample_bytes
        self.storage_policy.max_size = int(self.budget * self.seen_bytes // self.sample_bytes)

    @property
    def nbytes(self) -> int:
        return len(self.storage_policy.buffer) * (self.sample_bytes or 0)


@register_method("replay")
def _replay(cfg, model, evaluator):
    from avalanche.training import Naive
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer

    policy = ClassBalancedBuffer(max_size=1, adaptive_size=True)
    plugins = [
        ByteBudgetResize(policy, cfg.budget),
        ReplayPlugin(mem_size=1, batch_size=cfg.batch_size,
                     batch_size_mem=cfg.batch_size_mem or cfg.batch_size, storage_policy=policy),
    ]
    return Naive(**strategy_kwargs(cfg, model, evaluator), plugins=plugins)


def _token_method(cfg, model, evaluator):
    from avalanche.training import Naive

    t = cfg.token_retention or default_token_retention(cfg.method, cfg.budget)
    buffer = CoreTokensetBuffer(budget_fraction=cfg.budget, token_retention=t,
                                selector=cfg.selector, scorer=cfg.scorer, seed=cfg.seed,
                                **cfg.options.get("buffer", {}))
    plugin = CoreTokensetReplayPlugin(buffer, batch_size_mem=cfg.batch_size_mem,
                                      replay_mode=cfg.replay_mode, dropout=cfg.dropout,
                                      seed=cfg.seed, **cfg.options.get("plugin", {}))
    return Naive(**strategy_kwargs(cfg, model, evaluator), plugins=[plugin])


for _name in ("coreset", "core_tokens", "core_tokenset"):
    register_method(_name)(_token_method)


def build_strategy(cfg: RunConfig, model: nn.Module, evaluator: EvaluationPlugin):
    """The Avalanche strategy of ``cfg.method`` around ``model``."""
    if cfg.method not in _METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; registered: {list_methods()}")
    return _METHODS[cfg.method](cfg, model, evaluator)


_ACC_KEY = re.compile(r"Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


def accuracy_summary(matrix: List[List[float]]) -> Dict[str, float]:
    """Metrics of an accuracy matrix ``acc[i][j]`` (test experience j after training i).

    final accuracy = mean_j acc[T-1][j]; average incremental accuracy = mean_i of
    mean_{j<=i} acc[i][j]; forgetting = mean_{j<T-1} (max_{i<T-1} acc[i][j] - acc[T-1][j]).
    """
    n = len(matrix)
    final = sum(matrix[-1][: n]) / n
    avg_inc = sum(sum(matrix[i][: i + 1]) / (i + 1) for i in range(n)) / n
    forg = [max(matrix[i][j] for i in range(j, n - 1)) - matrix[-1][j] for j in range(n - 1)]
    return dict(final_acc=final, avg_inc_acc=avg_inc,
                forgetting=sum(forg) / len(forg) if forg else 0.0)


def _memory_stats(strategy) -> Dict[str, int]:
    for p in strategy.plugins:
        if isinstance(p, CoreTokensetReplayPlugin):
            b = p.storage_policy
            return dict(memory_bytes=b.nbytes, memory_records=b.num_records,
                        memory_tokens=b.num_tokens)
        if isinstance(p, ByteBudgetResize):
            return dict(memory_bytes=p.nbytes, memory_records=len(p.storage_policy.buffer),
                        memory_tokens=-1)
    return dict(memory_bytes=0, memory_records=0, memory_tokens=0)


def run(cfg: RunConfig, benchmark, *, log: Optional[Callable[[str], None]] = print,
        model: Optional[nn.Module] = None) -> Dict:
    """Train ``cfg.method`` on ``benchmark.train_stream``, evaluating on the whole test
    stream after each experience. Returns a JSON-ready dict of settings and metrics."""
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(cfg.seed)
    if model is None:
        model = create_model(cfg.model, num_classes=benchmark.n_classes, **cfg.model_kwargs)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = build_strategy(cfg, model, evaluator)
    n = len(benchmark.train_stream)
    matrix: List[List[float]] = []
    start = time.perf_counter()
    for i, exp in enumerate(benchmark.train_stream):
        strategy.train(exp)
        metrics = strategy.eval(benchmark.test_stream)
        row = [0.0] * n
        for name, value in metrics.items():
            m = _ACC_KEY.search(name)
            if m:
                row[int(m.group(1))] = float(value)
        matrix.append(row)
        if log:
            seen = sum(row[: i + 1]) / (i + 1)
            mem = _memory_stats(strategy)["memory_bytes"]
            log(f"[{cfg.key()}] exp {i + 1}/{n}: acc on seen {seen:.3f}, memory {mem} B, "
                f"{time.perf_counter() - start:.1f} s")
    wall = time.perf_counter() - start
    return dict(config=asdict(cfg), key=cfg.key(), acc_matrix=matrix, wall_time_s=wall,
                **accuracy_summary(matrix), **_memory_stats(strategy))


def save_result(result: Dict, path: Path) -> None:
    """Write a run's result JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
