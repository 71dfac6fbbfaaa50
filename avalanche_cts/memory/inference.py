"""Inference in the shape of training: each evaluation image classified from its own top tokens.

A core tokenset model trains on partial inputs (its memory records and, with dropout, its new
data) but is tested on whole images. :class:`PartialInferencePlugin` closes that gap at test
time: before each evaluation forward it scores the batch with a token scorer run on the
**current** model (no label: scorers that need a target explain the model's own prediction),
keeps the top ``round(keep * T)`` tokens of each image and feeds them in a replay mode
(``mask``, ``zero`` or ``sparse``, as :meth:`partial_inputs` of the model's adapter applies
token dropout to training batches). Training is untouched; the model is left as found.
"""
from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from avalanche.core import SupervisedPlugin

from ..models import get_adapter
from ..models.timm_vit import MASK_TOKEN
from ..registry import Seeded
from ..scorers import get_scorer
from ..scorers.base import checked_scores
from ..tokens.patches import rank_tokens
from .recipe import REPLAY_MODES

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["PartialInferencePlugin", "check_inference_model", "label_free_scores",
           "top_tokens_mask"]


def top_tokens_mask(scores: Tensor, keep: float) -> Tensor:
    """``(B, T)`` bool mask of the ``round(keep * T)`` (at least 1) highest of ``(B, T)``
    ``scores`` per row (ties broken by position, as the memory's top-k)."""
    num_tokens = scores.shape[1]
    k = min(max(int(round(keep * num_tokens)), 1), num_tokens)
    rank = rank_tokens(scores.float(), "topk").argsort(1)
    return rank < k


class PartialInferencePlugin(SupervisedPlugin):
    """Evaluate every image from its top-``keep`` tokens under ``scorer`` run on the current
    model, fed in ``mode``; for any Avalanche strategy whose evaluation forward runs the
    model on ``strategy.mb_x`` (with or without
    :class:`~avalanche_cts.memory.plugin.CoreTokensetReplayPlugin`).

    :param keep: token keep rate in (0, 1] (``round(keep * T)`` tokens per image, at least 1).
    :param scorer: a registered scorer name (``rollout``, ``random``, ``gradcam``, ...) or a
        :class:`~avalanche_cts.scorers.base.TokenScorer`; called with ``targets=None`` (no
        label: gradient scorers explain the predicted class).
    :param mode: ``mask`` (the learned mask token the replay plugin trains: a model without
        one is refused), ``zero`` (0 in normalised space) or ``sparse`` (kept tokens only).
    :param seed: a seeded scorer (``random``) restarts its stream at ``seed + experiences
        trained`` for every evaluation, so a resumed run evaluates alike.

    :ivar scored_images: images scored so far (the scoring passes' count).
    """

    def __init__(self, keep: float, scorer="rollout", mode: str = "mask", seed: int = 0):
        super().__init__()
        if not isinstance(keep, (int, float)) or isinstance(keep, bool) or not (
                math.isfinite(keep) and 0.0 < keep <= 1.0):
            raise ValueError(f"keep (token keep rate at inference) must be in (0, 1], got {keep!r}")
        if mode not in REPLAY_MODES:
            raise ValueError(f"inference mode must be one of {REPLAY_MODES}, got {mode!r}")
        self.keep = float(keep)
        self.scorer = get_scorer(scorer)
        self.mode = mode
        self.seed = int(seed)
        self.scored_images = 0
        self._partial = contextlib.ExitStack()
        self._applied = None

    def before_eval(self, strategy: "SupervisedTemplate", **kwargs):
        check_inference_model(strategy.model, self.mode)
        if isinstance(self.scorer, Seeded):
            self.scorer.generator.manual_seed(self.seed + strategy.clock.train_exp_counter)

    def before_eval_forward(self, strategy: "SupervisedTemplate", **kwargs):
        images = strategy.mb_x
        keep = self.keep_mask(strategy.model, images)
        adapter = get_adapter(strategy.model)
        self._applied = self._partial.enter_context(
            adapter.partial_inputs(keep, self.mode, images))

    def after_eval_forward(self, strategy: "SupervisedTemplate", **kwargs):
        unused = self._applied is not None and not self._applied.uses
        self._applied = None
        self._partial.close()
        if unused:
            raise RuntimeError(
                f"{type(strategy).__name__}'s evaluation forward did not run the model on "
                f"strategy.mb_x, so top-token inference cannot apply: evaluate it on whole "
                f"images (inference='whole')")

    def keep_mask(self, model: nn.Module, images: Tensor) -> Tensor:
        """``(B, T)`` bool mask of the tokens each image keeps: the scorer's top ``keep``
        share under ``model`` (train/eval flags and gradients left as found)."""
        scores = label_free_scores(self.scorer, model, images, get_adapter(model).num_tokens)
        self.scored_images += len(images)
        return top_tokens_mask(scores, self.keep).to(images.device)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(keep={self.keep:g}, scorer={self.scorer.name!r}, "
                f"mode={self.mode!r})")


def check_inference_model(model: nn.Module, mode: str) -> None:
    """Refuse ``mask`` inference on a model without a learned mask token (a coreset or a
    plain backbone never trains one), naming the ways out."""
    if mode == "mask":
        base = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        if getattr(base, MASK_TOKEN, None) is None:
            raise ValueError(
                "mask inference needs the learned mask token the replay plugin trains "
                "(CoreTokensetReplayPlugin with replay_mode='mask'); this model has none: use "
                "inference mode 'zero' or 'sparse'")


def label_free_scores(scorer, model: nn.Module, images: Tensor, num_tokens: int) -> Tensor:
    """``(B, T)`` float32 CPU scores of ``images`` under ``model`` with no label
    (``targets=None``: gradient scorers explain the predicted class), checked by
    :func:`~avalanche_cts.scorers.base.checked_scores`; train flags and parameter ``.grad``
    left as found, autograd on only for scorers that need it."""
    with _as_found(model), torch.enable_grad() if scorer.needs_grad else torch.no_grad():
        return checked_scores(scorer, model, images, None, num_tokens).detach()


@contextlib.contextmanager
def _as_found(model: nn.Module):
    """Restore every module's train flag and every parameter's ``.grad`` on exit."""
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for p, g in grads:
            p.grad = g
