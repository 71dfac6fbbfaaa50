"""Shared machinery of the rehearsal-free, parameter-efficient strategies.

* :class:`TaskHeads`: one linear head per experience; at test time the heads' logits are
  concatenated at their global class ids (class-incremental, no task id).
* :class:`PEFTTemplate`: a ``SupervisedTemplate`` that, before each experience, lets the
  subclass adapt the model (new head, new low-rank branch or prompt components), builds a
  fresh Adam over the trainable parameters only, trains with the *local* cross-entropy on
  the current head's logits and keeps the frozen backbone in ``eval()`` mode (no dropout, as
  InfLoRA's code does). The papers' per-epoch cosine schedule, bf16 and DDP come from the
  training path (:class:`avalanche_cts.strategies.training.InfLoRA`, ``lr_schedule="cosine"``),
  which the harness builds (``RunConfig(lr_schedule="cosine")``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche.training.templates import SupervisedTemplate

__all__ = ["TaskHeads", "PEFTTemplate", "count_trainable", "freeze", "param_groups"]

UNSEEN_LOGIT = -1000.0
"""Logit of classes no head covers yet (Avalanche's ``IncrementalClassifier`` mask value)."""


def freeze(module: nn.Module) -> None:
    """Set ``requires_grad=False`` on every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)


def count_trainable(module: nn.Module) -> int:
    """Number of scalar parameters with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def param_groups(model: nn.Module, head: Optional[nn.Module],
                 head_lr_scale: float = 1.0, lr: Optional[float] = None) -> List[Dict[str, Any]]:
    """Optimiser parameter groups of ``model``'s trainable parameters: one group, or with
    ``head_lr_scale != 1`` the trainable parameters of ``head`` (the classifier, inside
    ``model``) in a second group at ``lr * head_lr_scale`` (the first takes the optimiser's
    ``lr``). A freshly drawn linear head then learns a new task in the few steps at which the
    pretrained backbone may move only slowly.

    :raises ValueError: ``head_lr_scale != 1`` for a model without a classifier head.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if head_lr_scale == 1:
        return [dict(params=params)]
    if head is None or lr is None:
        raise ValueError(
            f"head_lr_scale={head_lr_scale:g} trains a classifier head at its own learning "
            f"rate, but {type(model).__name__} has no classifier head (get_classifier()): "
            f"pass head_lr_scale=1")
    ids = {id(p) for p in head.parameters()}
    return [dict(params=[p for p in params if id(p) not in ids]),
            dict(params=[p for p in params if id(p) in ids], lr=lr * head_lr_scale)]


class TaskHeads(nn.Module):
    """Per-experience ``Linear(in_features, n_t)`` heads over a fixed global label space.

    :param in_features: feature size ``D``.
    :param num_classes: size ``C`` of the global label space (logits ``(B, C)``).
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.heads = nn.ModuleList()
        self.register_buffer("class_ids", torch.zeros(0, dtype=torch.long))
        self.classes: List[List[int]] = []
        """Global class ids of each head."""

    def add_head(self, classes: Sequence[int]) -> nn.Linear:
        """Freeze the existing heads and append a trainable one for ``classes`` (global ids)."""
        classes = [int(c) for c in classes]
        if set(classes) & {c for cs in self.classes for c in cs}:
            raise ValueError(f"classes {classes} already have a head")
        if not classes or max(classes) >= self.num_classes or min(classes) < 0:
            raise ValueError(f"classes {classes} outside [0, {self.num_classes})")
        freeze(self)
        device = self.class_ids.device
        head = nn.Linear(self.in_features, len(classes), device=device)
        self.heads.append(head)
        new = torch.tensor(classes, dtype=torch.long, device=device)
        self.class_ids = torch.cat([self.class_ids, new])
        self.classes.append(classes)
        return head

    @property
    def current_classes(self) -> Tensor:
        """Global class ids of the newest head, ``(n_t,)``."""
        return self.class_ids[len(self.class_ids) - len(self.classes[-1]):]

    def is_current(self, y: Tensor) -> Tensor:
        """``(B,)`` bool: which global labels ``y`` belong to the newest head."""
        return (y[:, None] == self.current_classes[None]).any(1)

    def local_targets(self, y: Tensor) -> Tensor:
        """Map global labels ``(B,)`` of the current classes to ``[0, n_t)``."""
        hits = y[:, None] == self.current_classes[None]
        if not bool(hits.any(1).all()):
            raise ValueError("a training label is not among the current head's classes")
        return hits.float().argmax(1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)``; classes without a head get :data:`UNSEEN_LOGIT`."""
        if not len(self.heads):
            return x.new_full((x.shape[0], self.num_classes), UNSEEN_LOGIT)
        logits = torch.cat([h(x) for h in self.heads], dim=1)  # bf16 under autocast
        out = logits.new_full((x.shape[0], self.num_classes), UNSEEN_LOGIT)
        return out.index_copy(1, self.class_ids, logits)


class PEFTTemplate(SupervisedTemplate):
    """Template of rehearsal-free strategies training a few parameters per experience.

    Subclasses implement :meth:`prepare_experience` (called before training an
    experience, after which exactly the parameters to train have ``requires_grad``) and
    may implement :meth:`finish_experience` (called after training it).

    Resuming: :meth:`state_dict` holds what the model's state dict cannot (the heads'
    classes, the subclass's memory); :meth:`load_state_dict` on a fresh strategy rebuilds
    the grown modules, after which the saved model state dict loads.

    :param model: the model the strategy trains; its logits are those of ``heads``.
    :param heads: the :class:`TaskHeads` inside ``model``.
    :param lr: Adam learning rate.
    :param weight_decay: Adam weight decay.
    :param head_lr_scale: the heads' learning rate as a multiple of ``lr``
        (:func:`param_groups`).
    :param kwargs: ``SupervisedTemplate`` keywords (``train_mb_size``, ``train_epochs``,
        ``eval_mb_size``, ``device``, ``plugins``, ``evaluator``, ...). ``optimizer`` and
        ``criterion`` are ignored: the optimiser is rebuilt each experience and the loss is
        the local cross-entropy.
    """

    def __init__(self, *, model: nn.Module, heads: TaskHeads, lr: float,
                 weight_decay: float = 0.0, head_lr_scale: float = 1.0, **kwargs):
        kwargs.pop("optimizer", None)
        kwargs.pop("criterion", None)
        placeholder = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr)
        super().__init__(model=model, optimizer=placeholder, **kwargs)
        self.heads = heads
        self.lr = lr
        self.weight_decay = weight_decay
        self.head_lr_scale = float(head_lr_scale)

    # -------------------------------------------------------------- subclass hooks
    def prepare_experience(self, experience) -> None:
        """Adapt the model to ``experience`` before training it."""
        raise NotImplementedError

    def finish_experience(self, experience) -> None:
        """Update the strategy's state after training ``experience``."""

    def state_dict(self) -> Dict[str, Any]:
        """The per-experience structure: head classes (subclasses add their own entries)."""
        return {"head_classes": [list(c) for c in self.heads.classes]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Rebuild the heads of a :meth:`state_dict` (all frozen) in a fresh strategy."""
        for classes in state["head_classes"]:
            self.heads.add_head(classes)
        freeze(self.heads)

    # ------------------------------------------------------------ template hooks
    def check_model_and_optimizer(self, **kwargs):
        self.model = self.model_adaptation()
        self.make_optimizer()

    def model_adaptation(self, model=None):
        self.model.to(self.device)
        if self.is_training:
            self.prepare_experience(self.experience)
        return self.model.to(self.device)  # parameters added by prepare_experience

    def make_optimizer(self, **kwargs):
        """A fresh Adam over the trainable parameters (none between experiences: then the
        optimiser is left as it is, e.g. while a run checkpoint is restored)."""
        if any(p.requires_grad for p in self.model.parameters()):
            self.optimizer = torch.optim.Adam(
                param_groups(self.model, self.heads, self.head_lr_scale, self.lr), lr=self.lr,
                weight_decay=self.weight_decay)

    def criterion(self) -> Tensor:
        """Local cross-entropy on the current head while training; global CE otherwise.

        Samples of old classes in a training mini-batch (replayed by Avalanche's
        ``ReplayPlugin``, which concatenates them to it) get the cross-entropy over all
        seen classes' logits instead (old heads frozen: it trains the current parameters
        and the new head against the old classes); the loss is then the mean over the batch
        of both terms. A batch of current classes only takes the rehearsal-free path
        unchanged.
        """
        if not self.is_training:
            return F.cross_entropy(self.mb_output, self.mb_y)
        logits = self.mb_output[:, self.heads.current_classes]
        current = self.heads.is_current(self.mb_y)
        if bool(current.all()):
            return F.cross_entropy(logits, self.heads.local_targets(self.mb_y))
        return self._mixed_criterion(logits, current)

    def _mixed_criterion(self, logits: Tensor, current: Tensor) -> Tensor:
        """Local CE of current-class rows + seen-class CE of replayed rows, mean over ``B``."""
        y = self.mb_y
        old = y[~current]
        seen = self.heads.class_ids
        if not bool((old[:, None] == seen[None]).any(1).all()):
            raise ValueError(
                f"training labels {sorted(set(old.tolist()) - set(seen.tolist()))} have no head "
                f"yet: a mini-batch may hold the current experience's classes and replayed "
                f"samples of earlier experiences only")
        new = F.cross_entropy(logits[current], self.heads.local_targets(y[current]),
                              reduction="sum")
        replayed = F.cross_entropy(self.mb_output[~current], old, reduction="sum")
        return (new + replayed) / y.shape[0]

    def _before_training_epoch(self, **kwargs):
        super()._before_training_epoch(**kwargs)
        self.model.eval()

    def _after_training_exp(self, **kwargs):
        self.finish_experience(self.experience)
        super()._after_training_exp(**kwargs)
