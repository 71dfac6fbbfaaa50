"""Splitting a memory budget over classes, and merging per-class orders class-proportionally."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, TypeVar, Union, overload

import torch
from torch import Tensor

from ..budget import water_fill

__all__ = ["allocate_budget", "merge_class_orders"]

K = TypeVar("K")


def _largest_remainder(counts: List[int], budget: int) -> List[int]:
    """Proportional shares ``budget·n_c/N`` rounded by largest remainder (exact integers)."""
    total = sum(counts)
    out = [budget * n // total for n in counts]
    rest = budget - sum(out)
    order = sorted(range(len(counts)), key=lambda c: (-(budget * counts[c] % total), c))
    for c in order[:rest]:
        out[c] += 1
    return out


@overload
def allocate_budget(
    class_counts: Mapping[K, int], budget: int, proportional: bool = ...
) -> Dict[K, int]: ...
@overload
def allocate_budget(
    class_counts: Sequence[int], budget: int, proportional: bool = ...
) -> List[int]: ...


def allocate_budget(
    class_counts: Union[Mapping[K, int], Sequence[int]], budget: int, proportional: bool = True
) -> Union[Dict[K, int], List[int]]:
    """Per-class counts ``k_c ≤ n_c`` summing exactly to ``min(budget, Σ n_c)``.

    :param class_counts: ``n_c`` per class (sequence, or mapping class -> count).
    :param budget: total number of items (samples, or bytes) to keep.
    :param proportional: ``k_c ∝ n_c`` by largest remainder (ties: first class); otherwise
        equal shares with water-filling (a class with ``n_c`` below its share keeps all).
    :return: same container kind as ``class_counts``.
    """
    keys = list(class_counts) if isinstance(class_counts, Mapping) else None
    counts = [int(class_counts[k]) for k in keys] if keys else [int(n) for n in class_counts]
    if budget < 0 or any(n < 0 for n in counts):
        raise ValueError(f"budget and class counts must be non-negative, got {budget}, {counts}")
    total = sum(counts)
    if budget >= total:
        out = list(counts)
    else:
        budget = int(budget)
        out = _largest_remainder(counts, budget) if proportional else water_fill(budget, counts)
    return dict(zip(keys, out)) if keys is not None else out


def merge_class_orders(
    orders: List[Tensor], sizes: List[int], costs: Optional[List[Tensor]] = None
) -> Tensor:
    """Interleave per-class priority orders so that every prefix is near class-proportional.

    An element of class ``c`` whose cost is ``a`` and whose predecessors in its class cost
    ``A`` in total gets the key ``(A + a/2) / n_c``; keys are merged in ascending order,
    ties to the first class.

    :param orders: per class, global indices in priority order.
    :param sizes: ``n_c`` per class (the share of the class is proportional to it).
    :param costs: per class, the cost of each element (default 1: a count).
    """
    if not orders:
        return torch.empty(0, dtype=torch.long)
    keys = []
    for c, (o, s) in enumerate(zip(orders, sizes)):
        a = torch.ones(len(o), dtype=torch.float64) if costs is None else costs[c].double().cpu()
        keys.append((a.cumsum(0) - a / 2) / max(s, 1))
    cls = torch.cat([torch.full((len(o),), c) for c, o in enumerate(orders)])
    key, idx = torch.cat(keys), torch.cat([o.cpu().long() for o in orders])
    rank = torch.argsort(cls, stable=True)  # secondary key: class
    rank = rank[torch.argsort(key[rank], stable=True)]  # primary key: relative position
    return idx[rank]
