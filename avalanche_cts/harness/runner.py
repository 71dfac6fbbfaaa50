"""Run one continual-learning method on a benchmark and collect its metrics.

:func:`run` builds the method's strategy (:mod:`.methods`), gives it the GPU training path
(:mod:`avalanche_cts.strategies.training`: bf16 autocast, gradient accumulation, cosine schedule, DDP under
``torchrun``), loads the backbone (:mod:`.checkpoint`, fresh heads from their own random
stream), attaches Avalanche loggers, and with ``out_dir`` writes ``result.json``,
``accuracy.png`` and a run checkpoint after every experience (``state.pt``), from which an
interrupted run resumes. A result records every setting that shaped it (``settings``: the
run's and the data's) and is reused only when all of them match (:func:`check_reuse`).

Image-text streams (``benchmark.info["kind"]``: ``vqa`` or ``caption``, BLIP models) are
evaluated on generated text: the result's ``acc_matrix`` is the exact-match (VQA) or BLEU-4
(captioning) matrix, and ``metric_matrices`` holds every metric's matrix (VQA soft accuracy
where questions have several answers, ROUGE-L); ``settings["metrics"]`` names their
definitions.
"""
from __future__ import annotations

import json
import re
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.training.plugins import EvaluationPlugin

from .._files import check_folder, folder_owner, portable_path, write_text
from ..memory.buffer import CoreTokensetBuffer
from ..memory.plugin import CoreTokensetReplayPlugin
from ..models.loading import load_backbone
from .checkpoint import (
    load_run_state,
    restore_run_state,
    run_state_parts,
    save_run_state,
)
from .config import RunConfig, fingerprint, settings_diff
from .diagnostics import SingleClassWarning, memory_diagnostics
from .identity import is_unidentified, stream_fingerprint, weights_fingerprint
from ..memory.distributed import is_main_process, rank, world_size
from ..models import create_blip, is_blip_name
from .methods import RANK_SEED_STRIDE, build_strategy
from .pretrain import load_pretrained
from .pretrain_vl import BLIP_PRETRAINED, EMBEDDED_BLIP, load_pretrained_blip
from .report import plasticity, read_result
from ..memory.sample_buffers import ByteBudgetResize
from ..strategies.training import compile_blocks, set_fused_attention

__all__ = [
    "StaleResultError",
    "accuracy_summary",
    "check_reuse",
    "load_result",
    "make_model",
    "resolve_device",
    "run",
    "run_settings",
    "save_result",
]

_EXP_KEY = re.compile(r"^(\w+)_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")
PRIMARY_METRIC = {"classification": "Top1_Acc", "vqa": "VQA_ExactMatch", "caption": "BLEU4"}
"""The metric of ``acc_matrix`` per stream kind."""


class StaleResultError(ValueError):
    """A stored result or run state was made with other settings than the ones asked for."""


def _embedded_blip(cfg: RunConfig) -> bool:
    return cfg.pretrained and cfg.checkpoint is None and cfg.model in EMBEDDED_BLIP


def run_settings(cfg: RunConfig, data: Dict) -> Dict:
    """Everything that shapes a run's numbers: the run's settings, the data's, for a preset's
    embedded pretraining the backbone's and, for BLIP, the metrics' definitions (the VQA
    evaluation, the caption tokenisation:
    :func:`~avalanche_cts.evaluation.metrics.metric_settings`)."""
    out = dict(run=cfg.shaping(), data=data)
    if is_blip_name(cfg.model):
        from ..evaluation.metrics import metric_settings
        from ..models import BLIP_PRESETS

        out["metrics"] = metric_settings(BLIP_PRESETS.load(cfg.model)["kind"])
    spec = cfg.embedded_backbone()
    if spec is not None:
        out["backbone"] = spec.file_name()
    if _embedded_blip(cfg):
        out["backbone"] = BLIP_PRETRAINED["blip_vqa_tiny"].file_name()
    return out


def make_model(cfg: RunConfig, num_classes: Optional[int]) -> nn.Module:
    """The run's network: a preset with ``pretrained=True`` gets its embedded pretraining
    (:func:`~.pretrain.load_pretrained`, :func:`~.pretrain_vl.load_pretrained_blip`), a BLIP
    name :func:`~avalanche_cts.models.create_blip` (``cfg.checkpoint``: a local folder), anything
    else :func:`~avalanche_cts.models.loading.load_backbone`; a classifier is drawn from the head stream of
    ``cfg.seed``."""
    if is_blip_name(cfg.model):
        if _embedded_blip(cfg):
            if cfg.model_kwargs:
                raise ValueError(f"model_kwargs {cfg.model_kwargs} cannot change the pretrained "
                                 f"preset {cfg.model!r}: drop them or set pretrained=False")
            return load_pretrained_blip(cfg.model)
        if cfg.pretrained is False and cfg.checkpoint is None and cfg.model not in EMBEDDED_BLIP:
            raise ValueError(f"{cfg.model} is a checkpoint: set pretrained=true (hub download) "
                             f"or checkpoint=DIR (a local copy)")
        return create_blip(cfg.model, checkpoint=cfg.checkpoint, **cfg.model_kwargs)
    spec = cfg.embedded_backbone()
    if spec is not None:
        if cfg.model_kwargs:
            raise ValueError(f"model_kwargs {cfg.model_kwargs} cannot change the pretrained "
                             f"preset {cfg.model!r}: drop them or set pretrained=False")
        return load_pretrained(spec, num_classes=num_classes, seed=cfg.seed)
    return load_backbone(cfg.model, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                         head_seed=cfg.seed, **{"num_classes": num_classes, **cfg.model_kwargs})


def check_reuse(saved: Dict, settings: Dict, path: Path, force_hint: str) -> None:
    """Raise :class:`StaleResultError` when ``saved`` settings (of a stored result or run
    state at ``path``) differ from ``settings``, naming the differences and both ways out, or
    when ``settings`` hold data that could not be fingerprinted (never reused)."""
    if is_unidentified(settings):
        raise StaleResultError(
            f"{path} exists, but this run's data cannot be identified "
            f"({settings['data'].get('why', '')}), so it cannot be told apart from another "
            f"stream: {force_hint}, or write to another output folder (--out DIR); to make the "
            f"data identifiable pass run(..., data={{...}}) describing it")
    diff = settings_diff(saved, settings)
    if diff:
        shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise StaleResultError(
            f"{path} was made with other settings ({shown}). Rerun it with these settings "
            f"({force_hint}), or keep it and write to another output folder (--out DIR)"
        )


def accuracy_summary(matrix: List[List[float]],
                     sizes: Optional[List[int]] = None) -> Dict[str, float]:
    """Metrics of an accuracy matrix ``acc[i][j]`` (test experience j after training i).

    final accuracy = mean_j acc[T-1][j]; average incremental accuracy = mean_i of
    mean_{j<=i} acc[i][j]; forgetting = mean_{j<T-1} (max_{i<T-1} acc[i][j] - acc[T-1][j]);
    plasticity = mean_{i>0} acc[i][i] (:func:`~.report.plasticity`).
    With the test set ``sizes`` of the experiences, also the sample-weighted versions
    (accuracy on all seen-class test images, as InfLoRA reports): ``final_acc_weighted``,
    ``avg_inc_acc_weighted``.
    """
    n = len(matrix)
    final = sum(matrix[-1][: n]) / n
    avg_inc = sum(sum(matrix[i][: i + 1]) / (i + 1) for i in range(n)) / n
    forg = [max(matrix[i][j] for i in range(j, n - 1)) - matrix[-1][j] for j in range(n - 1)]
    out = dict(final_acc=final, avg_inc_acc=avg_inc,
               forgetting=sum(forg) / len(forg) if forg else 0.0,
               plasticity=plasticity(matrix))
    if sizes is not None:
        seen = [sum(matrix[i][j] * sizes[j] for j in range(i + 1)) / sum(sizes[: i + 1])
                for i in range(n)]
        out.update(final_acc_weighted=seen[-1], avg_inc_acc_weighted=sum(seen) / n)
    return out


def _memory_stats(strategy) -> Dict[str, int]:
    for p in strategy.plugins:
        if isinstance(p, CoreTokensetReplayPlugin):
            b: CoreTokensetBuffer = p.storage_policy
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
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but no CUDA GPU is available: use cpu")
    if device == "cuda" and world_size() > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank()))}"
    return torch.device(device)


def _loggers(cfg: RunConfig, out: Optional[Path], stack: ExitStack) -> List:
    from avalanche.logging import CSVLogger, InteractiveLogger, TensorboardLogger, TextLogger

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


def stream_kind(benchmark) -> str:
    """``classification``, ``vqa`` or ``caption`` (``benchmark.info["kind"]``)."""
    return (getattr(benchmark, "info", None) or {}).get("kind", "classification")


def _evaluator(loggers: List, kind: str = "classification") -> EvaluationPlugin:
    if kind == "classification":
        metrics = [accuracy_metrics(experience=True)]
        if loggers:
            metrics += [accuracy_metrics(epoch=True, stream=True), loss_metrics(epoch=True)]
    else:
        from ..evaluation.metrics import caption_metrics, vqa_metrics

        metrics = vqa_metrics() if kind == "vqa" else caption_metrics()
        if loggers:
            metrics += [loss_metrics(epoch=True)]
    return EvaluationPlugin(*metrics, loggers=loggers)


def _resume(settings: Dict, path: Path, strategy,
            benchmark) -> Tuple[int, Dict[str, List[List[float]]], float]:
    """Restore ``strategy`` from a run checkpoint; return (next experience, the metric
    matrices so far, seconds)."""
    state = load_run_state(path)
    check_reuse(state["config"], settings, path, "delete it, set resume=False or pass --force")
    restore_run_state(state, strategy)
    start = state["next_experience"]
    from avalanche.training import Cumulative

    if isinstance(strategy, Cumulative) and start:
        from avalanche.benchmarks.utils import concat_datasets

        strategy.dataset = concat_datasets([e.dataset for e in benchmark.train_stream[:start]])
    matrices = state["acc_matrix"]
    if isinstance(matrices, list):  # written before per-metric matrices
        matrices = {PRIMARY_METRIC["classification"]: matrices}
    return start, matrices, state["elapsed_s"]


def _check_data(model: nn.Module, benchmark) -> None:
    """Labels outside the head, image sizes the model cannot take and, for BLIP, a stream of
    the other task or a vocabulary larger than the model's fail before any work."""
    from ..models import get_adapter

    adapter = get_adapter(model)
    data = benchmark.train_stream[0].dataset
    kind = stream_kind(benchmark)
    if kind == "classification":
        adapter.check_images(data[0][0][None])
        targets = [y for exp in benchmark.train_stream for y in exp.dataset.targets]
        adapter.check_targets(torch.as_tensor(targets))
        return
    if getattr(adapter, "kind", None) != kind:
        raise ValueError(f"the stream is {kind} but {type(model).__name__} is not a BLIP "
                         f"{'VQA' if kind == 'vqa' else 'captioning'} model")
    adapter.check_images(data[0]["pixel_values"][None])
    vocab = len(benchmark.tokenizer)
    if vocab > model.config.text_config.vocab_size:
        raise ValueError(f"the stream's tokenizer has {vocab} tokens, the model's text side "
                         f"{model.config.text_config.vocab_size}: use the model's tokenizer")


def _check_pretraining_images(cfg: RunConfig, benchmark) -> None:
    """Warn when the stream holds images the embedded backbone was pretrained on."""
    spec = cfg.embedded_backbone()
    info = getattr(benchmark, "info", None) or {}
    if not (spec is not None and info.get("name") in ("fmnist", "cluttered_fmnist")):
        return
    held = info.get("heldout_per_class", 0)
    if held < spec.heldout_per_class:
        warnings.warn(
            f"the stream leaves out {held} training images per class, but the backbone "
            f"{cfg.model} was pretrained on the last {spec.heldout_per_class} of every class: "
            f"the stream holds pretraining images and accuracy is inflated; build it with "
            f"heldout_per_class={spec.heldout_per_class}")


def run(cfg: RunConfig, benchmark, *, log: Optional[Callable[[str], None]] = print,
        model: Optional[nn.Module] = None, data: Optional[Dict] = None) -> Dict:
    """Train ``cfg.method`` on ``benchmark.train_stream``, evaluating on the whole test
    stream after each experience. Returns a JSON-ready dict of settings and metrics.

    With ``cfg.out_dir`` (main process only): ``result.json`` and ``accuracy.png`` at the end,
    ``state.pt`` after every experience, written while this process owns the folder
    (``run.lock``, :func:`~avalanche_cts._files.folder_owner`: another live process writing it
    is refused, naming it); with ``cfg.resume`` a run restarts from ``state.pt``
    (refused, naming the differences, when it was written with other settings).
    Under torch.distributed every rank calls ``run`` and gets the same result.

    :param model: the network to train (default: :func:`make_model` with
        ``benchmark.n_classes`` outputs).
    :param data: the data settings recorded with the result (default ``benchmark.info``;
        a benchmark without it records :func:`~.identity.stream_fingerprint`).

    A given ``model``'s weights are recorded (:func:`~.identity.weights_fingerprint`), so a
    run state made from other weights is not resumed; ``cfg.out_dir`` is expanded like the
    command line's ``--out`` (``~``: the home folder; :func:`~avalanche_cts._files.check_folder`).
    """
    _check_run_arguments(cfg, benchmark, model, data)
    given = weights_fingerprint(model) if model is not None else None  # before training
    device, model = _prepare(cfg, benchmark, model)
    settings = run_settings(cfg, _data_settings(benchmark, data))
    if given is not None:
        settings["model"] = given  # cfg.model names a preset, not these weights
    out = check_folder(cfg.out_dir, "RunConfig.out_dir") if cfg.out_dir else None
    kind = stream_kind(benchmark)
    with ExitStack() as stack:
        if out is not None and is_main_process():
            stack.enter_context(folder_owner(out))  # one process writes a run folder
        strategy = build_strategy(replace(cfg, device=str(device)), model,
                                  _evaluator(_loggers(cfg, out, stack), kind))
        strategy.plugins.append(SingleClassWarning())
        _, unsupported = run_state_parts(strategy)
        state_path = out / "state.pt" if out is not None and not unsupported else None
        matrices, seconds = _experiences(cfg, strategy, benchmark, settings, state_path, log)
        result = _result(cfg, strategy, benchmark, settings, matrices, seconds, device)
        if out is not None and is_main_process():
            from .report import plot_run

            plot_run(result, out / "accuracy.png")
            save_result(result, out / "result.json")  # last: a result marks a finished folder
    return result


def _check_run_arguments(cfg, benchmark, model, data) -> None:
    """``TypeError`` naming an argument of :func:`run` of the wrong kind."""
    if not isinstance(cfg, RunConfig):
        raise TypeError(f"run() takes a RunConfig, got {type(cfg).__name__}: build one with "
                        f"RunConfig(...) or RunConfig.from_dict(d)")
    if not (hasattr(benchmark, "train_stream") and hasattr(benchmark, "test_stream")):
        raise TypeError(f"run() takes a benchmark with train_stream and test_stream (an "
                        f"Avalanche benchmark), got {type(benchmark).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"run(model=...) takes a torch.nn.Module, got {type(model).__name__}")
    if data is not None and not isinstance(data, dict):
        raise TypeError(f"run(data=...) takes a dict describing the data, got "
                        f"{type(data).__name__}")


def _data_settings(benchmark, data: Optional[Dict]) -> Dict:
    """``data``, else ``benchmark.info``, else the streams' fingerprint."""
    if data is not None:
        return data
    return getattr(benchmark, "info", None) or stream_fingerprint(benchmark)


def _prepare(cfg: RunConfig, benchmark, model: Optional[nn.Module]) -> Tuple[torch.device, nn.Module]:
    """Seeds, the device and the model (built when not given), checked against the data."""
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if model is None:
        model = make_model(cfg, getattr(benchmark, "n_classes", None))
    _check_data(model, benchmark)
    _check_pretraining_images(cfg, benchmark)
    set_fused_attention(model, True)
    if cfg.compile:
        compile_blocks(model)
    return device, model


def _experiences(cfg: RunConfig, strategy, benchmark, settings: Dict, state_path: Optional[Path],
                 log) -> Tuple[Dict[str, List[List[float]]], float]:
    """Train on each experience (from a checkpoint's, when resuming) and evaluate on the
    whole test stream after it; returns the metric matrices and the seconds spent."""
    kind = stream_kind(benchmark)
    start, matrices, elapsed = 0, {}, 0.0
    if state_path is not None and cfg.resume and state_path.is_file():
        start, matrices, elapsed = _resume(settings, state_path, strategy, benchmark)
        if log:
            log(f"[{cfg.key()}] resumed from {state_path} after {start} experiences")
    if world_size() > 1:
        torch.manual_seed(cfg.seed + RANK_SEED_STRIDE * rank() + start)
    loader_kw = dict(num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)
    n = len(benchmark.train_stream)
    t0 = time.perf_counter()
    for i, exp in enumerate(benchmark.train_stream):
        if i < start:
            continue
        strategy.train(exp, persistent_workers=cfg.num_workers > 0, **loader_kw)
        _check_weights(strategy.model, i, cfg)
        rows = _metric_rows(strategy.eval(benchmark.test_stream, **loader_kw), n)
        for name, row in rows.items():
            matrices.setdefault(name, []).append(row)
        seconds = elapsed + time.perf_counter() - t0
        if state_path is not None and is_main_process():
            save_run_state(state_path, strategy, next_experience=i + 1, acc_matrix=matrices,
                           elapsed_s=seconds, config=settings)
        if log:
            row = rows[PRIMARY_METRIC[kind]]
            mem = _memory_stats(strategy)["memory_bytes"]
            log(f"[{cfg.key()}] exp {i + 1}/{n}: {PRIMARY_METRIC[kind]} on seen "
                f"{sum(row[: i + 1]) / (i + 1):.3f}, memory {mem} B, {seconds:.1f} s")
    return matrices, elapsed + time.perf_counter() - t0


def _check_weights(model: nn.Module, experience: int, cfg: RunConfig) -> None:
    """``FloatingPointError`` when training left NaN or infinite weights (the model would
    predict one class from then on)."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise FloatingPointError(
            f"training experience {experience} left non-finite weights ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}) with lr {cfg.lr:g}: lower the learning rate")


def _metric_rows(metrics: Dict[str, float], n: int) -> Dict[str, List[float]]:
    """Per metric, its value on each of the ``n`` test experiences (Avalanche's per-experience
    keys; forgetting left out)."""
    rows: Dict[str, List[float]] = {}
    for name, value in metrics.items():
        m = _EXP_KEY.search(name)
        if m and not m.group(1).endswith("_Forgetting"):
            rows.setdefault(m.group(1), [0.0] * n)[int(m.group(2))] = float(value)
    return rows


def _result(cfg: RunConfig, strategy, benchmark, settings: Dict,
            matrices: Dict[str, List[List[float]]], seconds: float, device) -> Dict:
    """The JSON-ready result of a finished run."""
    from .. import __version__

    kind = stream_kind(benchmark)
    sizes = [len(e.dataset) for e in benchmark.test_stream]
    matrix = matrices[PRIMARY_METRIC[kind]]
    config = asdict(cfg)
    if cfg.out_dir is not None:
        config["out_dir"] = portable_path(cfg.out_dir)
    result = dict(config=config, key=cfg.key(), settings=settings,
                  fingerprint=fingerprint(settings), version=__version__, acc_matrix=matrix,
                  wall_time_s=seconds, test_sizes=sizes,
                  benchmark=getattr(benchmark, "info", None), world_size=world_size(),
                  device=str(device), **accuracy_summary(matrix, sizes), **_memory_stats(strategy))
    if kind != "classification":
        result.update(kind=kind, metric=PRIMARY_METRIC[kind], metric_matrices=matrices,
                      metric_summaries={k: accuracy_summary(v) for k, v in matrices.items()})
    for p in strategy.plugins:
        if isinstance(p, CoreTokensetReplayPlugin):
            diag = memory_diagnostics(p.storage_policy, benchmark)
            if diag is not None:
                result["memory_diagnostics"] = diag
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return result


def load_result(path: Path, settings: Dict, force_hint: str = "--force") -> Optional[Dict]:
    """A stored result at ``path`` if it exists and was made with ``settings``; ``None`` if
    there is none; :class:`StaleResultError` if it was made with other settings. A file that
    is not a run's result raises naming it (:func:`~.report.read_result`)."""
    if not Path(path).is_file():
        return None
    result = read_result(path)
    check_reuse(result["settings"], settings, path, force_hint)
    return result


def save_result(result: Dict, path: Path) -> None:
    """Write a run's result JSON atomically."""
    write_text(path, json.dumps(result, indent=1))
