"""Avalanche's whole-sample replay at the bytes of a core tokenset, and resumable.

:class:`ByteBudgetResize` resizes an Avalanche storage policy (``ClassBalancedBuffer``,
``ReservoirSamplingBuffer``, a grouped ``ParametricBuffer``) after each experience to the
samples a byte budget affords, and saves and restores the policy's samples (as 8-bit pixels)
and counters, so the replay baselines resume from run checkpoints like every other run.
"""
from __future__ import annotations

from typing import Dict, Optional

import warnings

import torch

from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import ReplayPlugin

from .budget import shortfall_message
from .codec import PixelCodec
from .settings import check_budget_fraction

__all__ = ["ByteBudgetResize", "SampleReplayPlugin"]


class SampleReplayPlugin(ReplayPlugin):
    """Avalanche's ``ReplayPlugin`` that fills its storage policy through ``post_adapt``, the
    call Avalanche 0.6's own plugin makes through the deprecated ``update()`` (which warns on
    every experience and resets the process's warning filters); the samples stored are the
    same."""

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)


class ByteBudgetResize(SupervisedPlugin):
    """Resizes an Avalanche sample buffer to ``budget_fraction * seen bytes / sample_bytes``
    samples before it is updated, so it holds the same bytes as a core tokenset at that budget.

    Must come before the ``ReplayPlugin`` in the plugin list. ``state_dict`` holds the
    buffer's samples as 8-bit pixels (exact for 8-bit images, as our memory stores them), so
    a run with an Avalanche buffer resumes like the others.

    :param budget_fraction: the budget as a fraction in (0, 1] of the bytes of the data seen.
    :param normalization: the stream's input normalisation, to store exact pixels.
    """

    def __init__(self, storage_policy, budget_fraction: float, normalization=None):
        super().__init__()
        check_budget_fraction(budget_fraction)
        self.storage_policy = storage_policy
        self.budget_fraction = budget_fraction
        self.normalization = normalization
        self.sample_bytes: Optional[int] = None
        self.seen_bytes = 0

    def after_training_exp(self, strategy, **kwargs):
        data = strategy.experience.dataset
        if self.sample_bytes is None:
            self.sample_bytes = data[0][0].numel()  # uint8 pixels of one sample
        self.seen_bytes += len(data) * self.sample_bytes
        budget_bytes = int(self.budget_fraction * self.seen_bytes)
        self.storage_policy.max_size = budget_bytes // self.sample_bytes
        _warn_short(self.storage_policy, strategy.experience, budget_bytes, self.sample_bytes)

    @property
    def nbytes(self) -> int:
        return len(self.storage_policy.buffer) * (self.sample_bytes or 0)

    def state_dict(self) -> Dict:
        """Counters, the policy's own counters and every group's samples (8-bit pixels)."""
        return dict(sample_bytes=self.sample_bytes, seen_bytes=self.seen_bytes,
                    policy=_policy_state(self.storage_policy, self.normalization))

    def load_state_dict(self, state: Dict) -> None:
        """Restore what :meth:`state_dict` saved into a freshly built policy."""
        self.sample_bytes, self.seen_bytes = state["sample_bytes"], state["seen_bytes"]
        _restore_policy(self.storage_policy, state["policy"], self.normalization)


def _warn_short(policy, experience, budget_bytes: int, sample_bytes: int) -> None:
    """Warn when the ``budget_bytes`` leave classes of a class-balanced ``policy`` (or
    the whole memory of another) without a sample, naming the per-class share."""
    groups = 1
    if hasattr(policy, "seen_classes"):  # ClassBalancedBuffer: max_size split over classes
        groups = len(set(policy.seen_classes) | set(experience.classes_in_this_experience))
    empty = max(0, groups - policy.max_size)
    if empty:
        warnings.warn(shortfall_message(experience.current_experience, empty, groups, budget_bytes,
                                        "sample", sample_bytes), stacklevel=3)


def _samples_state(buffer, normalization) -> Optional[Dict]:
    """A sample buffer's items as uint8 pixels, labels and task labels (``None`` if empty)."""
    data = buffer.buffer
    if len(data) == 0:
        return None
    xs, ys, ts = zip(*[data[i][:3] for i in range(len(data))])
    x = torch.stack(xs)
    codec = PixelCodec(torch.uint8, normalization and normalization.for_channels(x.shape[-3]))
    return dict(pixels=codec.encode(x.movedim(-3, -1)),
                labels=torch.tensor([int(y) for y in ys]),
                tasks=torch.tensor([int(t) for t in ts]))


def _samples_dataset(state: Dict, normalization):
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    pixels = state["pixels"]
    codec = PixelCodec(torch.uint8, normalization and normalization.for_channels(pixels.shape[-1]))
    x = codec.decode(pixels).movedim(-1, -3)
    return _make_taskaware_tensor_classification_dataset(
        x, state["labels"], task_labels=state["tasks"].tolist())


def _buffer_state(buffer, normalization) -> Dict:
    weights = getattr(buffer, "_buffer_weights", None)
    return dict(max_size=buffer.max_size, samples=_samples_state(buffer, normalization),
                weights=weights)


def _restore_buffer(buffer, state: Dict, normalization) -> None:
    buffer.max_size = state["max_size"]
    if state["samples"] is not None:
        buffer.buffer = _samples_dataset(state["samples"], normalization)
    if state["weights"] is not None:
        buffer._buffer_weights = state["weights"]


_POLICY_COUNTERS = ("seen_classes", "seen_groups", "_num_exps", "total_num_classes")


def _policy_state(policy, normalization) -> Dict:
    """State of an Avalanche storage policy: its counters and each group's samples."""
    counters = {k: getattr(policy, k) for k in _POLICY_COUNTERS if hasattr(policy, k)}
    groups = getattr(policy, "buffer_groups", None)
    if groups is None:
        return dict(counters=counters, main=_buffer_state(policy, normalization))
    return dict(counters=counters, max_size=policy.max_size,
                groups={k: _buffer_state(g, normalization) for k, g in groups.items()})


def _restore_policy(policy, state: Dict, normalization) -> None:
    from avalanche.training.storage_policy import (
        ParametricBuffer,
        ReservoirSamplingBuffer,
        _ParametricSingleBuffer,
    )

    for k, v in state["counters"].items():
        setattr(policy, k, v)
    if "main" in state:
        _restore_buffer(policy, state["main"], normalization)
        return
    policy.max_size = state["max_size"]
    for key, g in state["groups"].items():
        if key not in policy.buffer_groups:
            policy.buffer_groups[key] = (
                _ParametricSingleBuffer(g["max_size"], policy.selection_strategy)
                if isinstance(policy, ParametricBuffer) else ReservoirSamplingBuffer(g["max_size"]))
        _restore_buffer(policy.buffer_groups[key], g, normalization)
