"""Use any sample selector as Avalanche's ``ExemplarsSelectionStrategy``.

``ParametricBuffer(max_size, groupby="class",
selection_strategy=SelectionStrategyAdapter("gradmatch"))`` ranks each group with the
selector and keeps a prefix of the ranking.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from avalanche.training.storage_policy import ExemplarsSelectionStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .base import ClassFeatures, SampleSelector, get_selector
from .budget import allocate_budget, merge_class_orders

__all__ = ["SelectionStrategyAdapter", "extract_features"]


@torch.no_grad()
def extract_features(
    model: nn.Module, data, batch_size: int = 256, device=None
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(pre_logits (n, D), logits (n, C), targets (n,))`` of ``data`` (eval transforms).

    One pass in eval mode through :meth:`TimmViTAdapter.features`; every module's
    train/eval mode is restored afterwards. Outputs stay on ``device`` (default: the
    model's).
    """
    from ..models import get_adapter

    adapter = get_adapter(model)
    device = device or next(model.parameters()).device
    data = data.eval() if hasattr(data, "eval") else data
    collate = getattr(data, "collate_fn", None)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
    modes = [m.training for m in model.modules()]
    model.eval()
    pres, logits, targets = [], [], []
    try:
        for x, y, *_ in loader:
            pre, z = adapter.features(x.to(device))
            pres.append(pre)
            logits.append(z)
            targets.append(torch.as_tensor(y).to(device))
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
    return torch.cat(pres), torch.cat(logits), torch.cat(targets).long()


class SelectionStrategyAdapter(ExemplarsSelectionStrategy):
    """Avalanche selection strategy backed by a :class:`SampleSelector` (name or object).

    The data of a group is split by class; each class is ranked by the selector on features
    computed with ``strategy.model`` (a timm ViT) and the per-class orders are interleaved
    (:func:`merge_class_orders`).

    :param num_selected: rank at most this many samples of a group with the selector
        (split over its classes by :func:`allocate_budget`); the rest follow in random
        order. ``None`` ranks all, which costs ``k = n`` selector steps.
    :param batch_size: batch size of the feature pass.
    :param seed: seed of the random tail.
    """

    def __init__(
        self,
        selector: Union[str, SampleSelector],
        num_selected: Optional[int] = None,
        batch_size: int = 256,
        seed: int = 0,
    ):
        self.selector = get_selector(selector)
        self.num_selected = num_selected
        self.batch_size = int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))

    def make_sorted_indices(self, strategy, data) -> List[int]:
        if self.selector.needs_features:
            pre, logits, targets = extract_features(
                strategy.model, data, self.batch_size, strategy.device
            )
        else:
            pre = logits = None
            targets = torch.as_tensor(list(data.targets)).long()
        classes, counts = targets.cpu().unique(return_counts=True)
        n = len(targets)
        budget = n if self.num_selected is None else min(n, int(self.num_selected))
        quotas = allocate_budget(counts.tolist(), budget)
        orders, sizes = [], []
        for c, k in zip(classes.tolist(), quotas):
            members = (targets == c).nonzero()[:, 0]
            feats = None
            if pre is not None:
                feats = ClassFeatures(pre[members], logits[members], targets[members])
            head = self.selector.select(k, len(members), feats).indices
            free = torch.ones(len(members), dtype=torch.bool)
            free[head] = False
            tail = free.nonzero()[:, 0]
            tail = tail[torch.randperm(len(tail), generator=self.generator)]
            orders.append(members.cpu()[torch.cat([head, tail])])
            sizes.append(len(members))
        return merge_class_orders(orders, sizes).tolist()

    def __repr__(self) -> str:
        return f"SelectionStrategyAdapter({self.selector!r}, num_selected={self.num_selected})"
