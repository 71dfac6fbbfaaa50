"""Run one continual-learning method on a benchmark and collect its metrics.

Methods are registered by name (:func:`register_method`); a method builder receives the
run configuration, the model and an evaluator and returns an Avalanche strategy. Built in:
``naive``, ``cumulative``, ``replay`` (Avalanche's ``ReplayPlugin`` + ``ClassBalancedBuffer``
holding the same bytes), ``coreset``, ``core_tokens`` and ``core_tokenset``.

:func:`run` gives every strategy the GPU training path (:mod:`avalanche_cts.training_path`:
bf16 autocast, gradient accumulation, cosine schedule, DDP under ``torchrun``), loads the
backbone (:mod:`avalanche_cts.checkpoint`), attaches Avalanche loggers, and with
``out_dir`` writes ``result.json``, ``accuracy.png`` and a run checkpoint after every
experience (``state.pt``), from which an interrupted run resumes.
"""
from __future__ import annotations

import json
import math
import re
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.training.plugins import EvaluationPlugin

from .buffer import CoreTokensetBuffer
from .checkpoint import (
    load_backbone,
    load_run_state,
    restore_run_state,
    run_state_parts,
    save_run_state,
)
from .distributed import DistributedCoreTokensetBuffer, is_main_process, rank, world_size
from .plugin import CoreTokensetReplayPlugin
from .training_path import compile_blocks, enable_training_path, set_fused_attention

__all__ = [
    "RunConfig",
    "register_method",
    "list_methods",
    "build_strategy",
    "run",
    "default_token_retention",
    "accuracy_summary",
    "resolve_device",
    "save_result",
    "strategy_kwargs",
    "LOGGERS",
    "OPTIMIZERS",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
LOGGERS = ("progress", "text", "csv", "tensorboard")
_RANK_SEED_STRIDE = 1_000_003
"""Seed offset per rank for what should differ between ranks (dropout masks, memory batches)."""


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
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; under torchrun each rank uses its own GPU."""
    options: Dict = field(default_factory=dict)
    """Method-specific settings (e.g. InfLoRA's rank; ``buffer``/``plugin`` keywords)."""
    pretrained: bool = False
    """Fetch timm's pretrained weights for ``model`` (see :func:`~.checkpoint.load_backbone`)."""
    checkpoint: Optional[str] = None
    """Local backbone weights (.safetensors, .pth/.pt/.bin, .npz), loaded instead of fetching."""
    optimizer: str = "adam"
    momentum: float = 0.9
    """SGD momentum."""
    lr_schedule: str = "constant"
    """``constant`` or ``cosine`` (per epoch, restarted every experience)."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (autocast)."""
    grad_accum: int = 1
    """Micro-batches of ``batch_size`` per optimizer step (effective batch = product x ranks)."""
    compile: bool = False
    """``torch.compile`` the transformer blocks."""
    num_workers: int = 0
    """DataLoader workers (training, evaluation, memory passes)."""
    pin_memory: Optional[bool] = None
    """Pinned host memory for the loaders (default: on with CUDA)."""
    loggers: List[str] = field(default_factory=list)
    """Avalanche loggers: ``progress`` (tqdm bars), ``text``, ``csv``, ``tensorboard``
    (files under ``out_dir``)."""
    out_dir: Optional[str] = None
    """Folder of this run's files: result.json, accuracy.png, state.pt, logs."""
    resume: bool = True
    """Continue from ``out_dir/state.pt`` when it exists."""

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
        if self.method not in _NO_MEMORY:
            parts.append(f"r{self.budget:g}")
        if self.method == "coreset":
            parts.append(self.selector)
        if self.method in ("core_tokens", "core_tokenset"):
            parts += [self.selector, self.scorer, self.replay_mode]
            if self.token_retention is not None:
                parts.append(f"t{self.token_retention:g}")
        parts.append(f"s{self.seed}")
        return "_".join(parts).replace("/", "-")


_NO_MEMORY = ("naive", "cumulative", "inflora", "coda_prompt")
"""Methods whose results do not depend on ``budget``."""

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


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (adam, adamw, sgd with ``cfg.momentum``) over ``params``."""
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


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
    buffer_cls = DistributedCoreTokensetBuffer if world_size() > 1 else CoreTokensetBuffer
    buffer = buffer_cls(budget_fraction=cfg.budget, token_retention=t, selector=cfg.selector,
                        scorer=cfg.scorer, seed=cfg.seed,
                        **{"num_workers": cfg.num_workers, **cfg.options.get("buffer", {})})
    plugin = CoreTokensetReplayPlugin(buffer, batch_size_mem=cfg.batch_size_mem,
                                      replay_mode=cfg.replay_mode, dropout=cfg.dropout,
                                      seed=cfg.seed + _RANK_SEED_STRIDE * rank(),
                                      **cfg.options.get("plugin", {}))
    return Naive(**strategy_kwargs(cfg, model, evaluator), plugins=[plugin])


for _name in ("coreset", "core_tokens", "core_tokenset"):
    register_method(_name)(_token_method)


def build_strategy(cfg: RunConfig, model: nn.Module, evaluator: EvaluationPlugin):
    """The Avalanche strategy of ``cfg.method`` around ``model``. Names not registered yet are
    looked up after importing the baselines (:mod:`avalanche_cts.strategies.methods`)."""
    if cfg.method not in _METHODS:
        import importlib

        importlib.import_module("avalanche_cts.strategies.methods")
    if cfg.method not in _METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; registered: {list_methods()}")
    return _METHODS[cfg.method](cfg, model, evaluator)


_ACC_KEY = re.compile(r"Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


def accuracy_summary(matrix: List[List[float]],
                     sizes: Optional[List[int]] = None) -> Dict[str, float]:
    """Metrics of an accuracy matrix ``acc[i][j]`` (test experience j after training i).

    final accuracy = mean_j acc[T-1][j]; average incremental accuracy = mean_i of
    mean_{j<=i} acc[i][j]; forgetting = mean_{j<T-1} (max_{i<T-1} acc[i][j] - acc[T-1][j]).
    With the test set ``sizes`` of the experiences, also the sample-weighted versions
    (accuracy on all seen-class test images, as InfLoRA reports): ``final_acc_weighted``,
    ``avg_inc_acc_weighted``.
    """
    n = len(matrix)
    final = sum(matrix[-1][: n]) / n
    avg_inc = sum(sum(matrix[i][: i + 1]) / (i + 1) for i in range(n)) / n
    forg = [max(matrix[i][j] for i in range(j, n - 1)) - matrix[-1][j] for j in range(n - 1)]
    out = dict(final_acc=final, avg_inc_acc=avg_inc,
               forgetting=sum(forg) / len(forg) if forg else 0.0)
    if sizes is not None:
        seen = [sum(matrix[i][j] * sizes[j] for j in range(i + 1)) / sum(sizes[: i + 1])
                for i in range(n)]
        out.update(final_acc_weighted=seen[-1], avg_inc_acc_weighted=sum(seen) / n)
    return out


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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available; under torchrun a bare ``cuda`` means ``cuda:LOCAL_RANK``."""
    import os

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and world_size() > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank()))}"
    return torch.device(device)


def _loggers(cfg: RunConfig, out: Optional[Path], stack: ExitStack) -> List:
    from avalanche.logging import CSVLogger, InteractiveLogger, TensorboardLogger, TextLogger

    unknown = set(cfg.loggers) - set(LOGGERS)
    if unknown:
        raise ValueError(f"unknown loggers {sorted(unknown)}; choose from {LOGGERS}")
    if out is None and set(cfg.loggers) - {"progress"}:
        raise ValueError("the text, csv and tensorboard loggers write under out_dir: set it")
    if not is_main_process():
        return []
    made = []
    for name in cfg.loggers:
        if name == "progress":
            made.append(InteractiveLogger())
        elif name == "text":
            out.mkdir(parents=True, exist_ok=True)
            made.append(TextLogger(stack.enter_context(open(out / "log.txt", "a"))))
        elif name == "csv":
            made.append(CSVLogger(log_folder=str(out / "csv")))
            stack.callback(made[-1].close)
        else:
            made.append(TensorboardLogger(tb_log_dir=str(out / "tb")))
            stack.callback(made[-1].writer.close)
    return made


def _evaluator(cfg: RunConfig, loggers: List) -> EvaluationPlugin:
    metrics = [accuracy_metrics(experience=True)]
    if loggers:
        metrics += [accuracy_metrics(epoch=True, stream=True), loss_metrics(epoch=True)]
    return EvaluationPlugin(*metrics, loggers=loggers)


_RESUME_FREE = {"out_dir", "resume", "loggers", "num_workers", "pin_memory", "device"}


def _resume(cfg: RunConfig, path: Path, strategy,
            benchmark) -> Tuple[int, List[List[float]], float]:
    """Restore ``strategy`` from a run checkpoint; return (next experience, rows, seconds)."""
    state = load_run_state(path)
    saved, mine = state["config"], asdict(cfg)
    diff = {k: (saved.get(k), v) for k, v in mine.items()
            if k not in _RESUME_FREE and saved.get(k) != v}
    if diff:
        raise ValueError(f"{path} was written by another configuration (saved, this): {diff}; "
                         f"delete it or set resume=False")
    restore_run_state(state, strategy)
    start = state["next_experience"]
    from avalanche.training import Cumulative

    if isinstance(strategy, Cumulative) and start:
        from avalanche.benchmarks.utils import concat_datasets

        strategy.dataset = concat_datasets([e.dataset for e in benchmark.train_stream[:start]])
    return start, state["acc_matrix"], state["elapsed_s"]


def run(cfg: RunConfig, benchmark, *, log: Optional[Callable[[str], None]] = print,
        model: Optional[nn.Module] = None) -> Dict:
    """Train ``cfg.method`` on ``benchmark.train_stream``, evaluating on the whole test
    stream after each experience. Returns a JSON-ready dict of settings and metrics.

    With ``cfg.out_dir`` (main process only): ``result.json`` and ``accuracy.png`` at the end,
    ``state.pt`` after every experience; with ``cfg.resume`` a run restarts from ``state.pt``.
    Under torch.distributed every rank calls ``run`` and gets the same result.
    """
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if model is None:
        model = load_backbone(cfg.model, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                              **{"num_classes": benchmark.n_classes, **cfg.model_kwargs})
    set_fused_attention(model, True)
    if cfg.compile:
        compile_blocks(model)
    out = Path(cfg.out_dir) if cfg.out_dir else None
    with ExitStack() as stack:
        strategy = build_strategy(replace(cfg, device=str(device)), model,
                                  _evaluator(cfg, _loggers(cfg, out, stack)))
        enable_training_path(strategy, precision=cfg.precision, grad_accum=cfg.grad_accum,
                             lr_schedule=cfg.lr_schedule, sampler_seed=cfg.seed)
        _, unsupported = run_state_parts(strategy)
        state_path = out / "state.pt" if out is not None and not unsupported else None
        start, matrix, elapsed = 0, [], 0.0
        if state_path is not None and cfg.resume and state_path.is_file():
            start, matrix, elapsed = _resume(cfg, state_path, strategy, benchmark)
            if log:
                log(f"[{cfg.key()}] resumed from {state_path} after {start} experiences")
        if world_size() > 1:
            torch.manual_seed(cfg.seed + _RANK_SEED_STRIDE * rank() + start)
        loader_kw = dict(num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)
        sizes = [len(e.dataset) for e in benchmark.test_stream]
        n = len(benchmark.train_stream)
        t0 = time.perf_counter()
        for i, exp in enumerate(benchmark.train_stream):
            if i < start:
                continue
            strategy.train(exp, persistent_workers=cfg.num_workers > 0, **loader_kw)
            metrics = strategy.eval(benchmark.test_stream, **loader_kw)
            row = [0.0] * n
            for name, value in metrics.items():
                m = _ACC_KEY.search(name)
                if m:
                    row[int(m.group(1))] = float(value)
            matrix.append(row)
            seconds = elapsed + time.perf_counter() - t0
            if state_path is not None and is_main_process():
                save_run_state(state_path, strategy, next_experience=i + 1, acc_matrix=matrix,
                               elapsed_s=seconds, config=asdict(cfg))
            if log:
                seen = sum(row[: i + 1]) / (i + 1)
                mem = _memory_stats(strategy)["memory_bytes"]
                log(f"[{cfg.key()}] exp {i + 1}/{n}: acc on seen {seen:.3f}, memory {mem} B, "
                    f"{seconds:.1f} s")
    result = dict(config=asdict(cfg), key=cfg.key(), acc_matrix=matrix,
                  wall_time_s=elapsed + time.perf_counter() - t0, test_sizes=sizes,
                  benchmark=getattr(benchmark, "info", None), world_size=world_size(),
                  device=str(device), **accuracy_summary(matrix, sizes), **_memory_stats(strategy))
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    if out is not None and is_main_process():
        from .report import plot_run

        save_result(result, out / "result.json")
        plot_run(result, out / "accuracy.png")
    return result


def save_result(result: Dict, path: Path) -> None:
    """Write a run's result JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
