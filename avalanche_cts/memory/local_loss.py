"""New data's cross-entropy over its own experience's classes (ER-ACE's asymmetric loss).

Caccia et al., "New Insights on Reducing Abrupt Representation Change in Online Continual
Learning" (ICLR 2022, https://arxiv.org/abs/2104.05025): when new classes arrive, the
cross-entropy of new data over every seen class pushes the old classes' logits down and
reshapes the features abruptly; computed over the current experience's classes only, it
leaves the old classes to the memory's loss (over all seen classes). With
``CoreTokensetReplayPlugin(new_data_loss="local")`` the strategy's criterion is replaced by
:class:`LocalCriterion` while an experience trains, so the plugin composes with any
strategy that computes its loss through ``SupervisedProblem.criterion``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LocalCriterion", "balanced_rows", "local_cross_entropy", "local_loss_refusal"]


def local_cross_entropy(logits: Tensor, targets: Tensor, classes: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` ``(B, C)`` restricted to the columns ``classes``
    ``(K,)`` (sorted class ids), against ``targets`` ``(B,)``, each of which must be one of
    ``classes``."""
    pos = torch.searchsorted(classes, targets).clamp_max(classes.numel() - 1)
    stray = classes[pos] != targets
    if bool(stray.any()):
        raise ValueError(
            f"new_data_loss='local': training labels {sorted(set(targets[stray].tolist()))} are "
            f"not classes of the current experience {classes.tolist()}; a strategy that "
            f"concatenates replayed samples to the mini-batch (e.g. Avalanche's ReplayPlugin) "
            f"needs new_data_loss='all'")
    return F.cross_entropy(logits[:, classes], pos)


def balanced_rows(memory_rows: int, batch_rows: int, current_classes: int,
                  memory_classes: int) -> int:
    """How many of a mini-batch's ``batch_rows`` samples join a memory batch of
    ``memory_rows`` records in the all-class loss of ``new_data_loss="balanced"``: as many
    per current class as the batch holds per stored class (the memory is class-balanced),
    ``round(memory_rows * current_classes / memory_classes)``, at most ``batch_rows``."""
    if memory_classes <= 0:
        raise ValueError("balanced rows need a memory that holds at least one class")
    return min(batch_rows, round(memory_rows * current_classes / memory_classes))


class LocalCriterion:
    """A strategy's criterion while one experience trains: :func:`local_cross_entropy` over
    ``classes`` during training iterations, the wrapped ``inner`` criterion otherwise
    (evaluation inside training, e.g. ``eval_every``)."""

    def __init__(self, inner: Callable[[Tensor, Tensor], Tensor], classes: Sequence[int],
                 strategy) -> None:
        self.inner = inner
        self.classes = torch.tensor(sorted(int(c) for c in classes), dtype=torch.long)
        self.strategy = strategy

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        if not self.strategy.is_training:
            return self.inner(logits, targets)
        if self.classes.device != logits.device:  # moved once, not every step
            self.classes = self.classes.to(logits.device)
        return local_cross_entropy(logits, targets, self.classes)


def local_loss_refusal(strategy) -> str | None:
    """Why ``new_data_loss="local"`` cannot serve ``strategy`` (``None`` if it can): its loss
    must come from ``SupervisedProblem.criterion`` (``self._criterion(mb_output, mb_y)``)."""
    from avalanche.training.templates.problem_type.supervised_problem import SupervisedProblem

    if type(strategy).criterion is SupervisedProblem.criterion and hasattr(strategy, "_criterion"):
        return None
    return (f"new_data_loss='local' replaces the criterion of strategies that compute their "
            f"loss with SupervisedProblem.criterion; {type(strategy).__name__} defines its own "
            f"(the PEFT strategies' and the VL templates' losses are already their own): pass "
            f"new_data_loss='all'")
