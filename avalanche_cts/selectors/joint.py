"""Single-stage selection of samples and their tokens under a byte budget (beyond the paper).

One forward and one backward pass over a task's images give both halves of a core tokenset:

* **samples**: the forward's pre-logits and logits are the last-layer gradient features,
  so a feature-based selector (GradMatch by default) orders each class;
* **tokens**: input x gradient of the log-odds margin ``m = z_y - logsumexp_{c≠y} z_c``
  (the direction of the cross-entropy gradient without its vanishing ``1 - p_y`` factor),
  summed over each patch's pixels. Every sample keeps the fewest tokens that carry a common
  share ``ρ`` of its positive relevance, ``ρ`` set so the mean retention is
  ``token_retention``; counts are clamped to ``[t·T/spread, t·T·spread]``. Samples whose
  evidence is concentrated cost fewer bytes, so more samples fit.

Records of all classes are interleaved class-proportionally by bytes and taken while they
fit; a record that no longer fits is trimmed to the remaining bytes when it keeps at least
the minimum count, else skipped. Bytes still left then extend the kept records' tokens in
priority order, so the budget is used to within one token.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..models import get_adapter
from ..tokens import patchify
from .base import ClassFeatures, SampleSelector, Selection, get_selector, register_selector
from .budget import allocate_budget, merge_class_orders
from .features import row_chunks

__all__ = ["token_relevance", "relevance_counts", "JointGradSelector"]


def token_relevance(
    model: nn.Module, images: Tensor, targets: Tensor, batch_size: int = 64
) -> Tuple[Tensor, Tensor, Tensor]:
    """One forward and backward pass: ``(pre_logits (n, D), logits (n, C), relevance (n, T))``.

    ``relevance[i, t]`` is ``Σ_{pixels p of token t} x_p ∂m_i/∂x_p`` with ``m_i`` the
    log-odds margin of the target class. Runs in eval mode on the model's device in
    batches; uses ``torch.autograd.grad`` (no ``.grad`` is left on parameters) and
    restores every module's train/eval mode. Outputs are on the model's device.
    """
    adapter = get_adapter(model)
    param = next(model.parameters())
    modes = [m.training for m in model.modules()]
    model.eval()
    pres, logits, rel = [], [], []
    try:
        for sl in row_chunks(len(images), 1, batch_size):
            x = images[sl].to(device=param.device, dtype=param.dtype).clone().requires_grad_(True)
            y = targets[sl].to(param.device).long()[:, None]
            with torch.enable_grad():
                pre, z = adapter.features(x)
                others = z.scatter(1, y, float("-inf"))
                margin = z.gather(1, y)[:, 0] - torch.logsumexp(others, dim=1)
                (grad,) = torch.autograd.grad(margin.sum(), x)
            rel.append(patchify(x.detach() * grad, adapter.patch_size).sum(-1))
            pres.append(pre.detach())
            logits.append(z.detach())
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
    return torch.cat(pres), torch.cat(logits), torch.cat(rel)


def relevance_counts(
    relevance: Tensor, mean_tokens: float, low: int, high: int
) -> Tuple[Tensor, Tensor]:
    """Token ranking and per-sample token counts at a common relevance share.

    :param relevance: ``(n, T)`` token relevance.
    :param mean_tokens: target mean count; ``ρ`` is the smallest share (bisection) whose
        counts reach it on average.
    :param low: smallest count.
    :param high: largest count.
    :return: ``(n, T)`` int64 token positions, most relevant first, and ``(n,)`` counts:
        the fewest tokens whose positive relevance reaches ``ρ`` of the sample's total
        (uniform when a sample has none).
    """
    ranked, order = relevance.float().sort(dim=1, descending=True, stable=True)
    pos = ranked.clamp_min(0)
    total = pos.sum(1, keepdim=True)
    flat = torch.full_like(pos, 1.0 / pos.shape[1])
    share = torch.where(total > 0, pos / total.clamp_min(1e-30), flat).cumsum(1)

    def counts(rho: float) -> Tensor:
        reached = torch.searchsorted(share, torch.full_like(share[:, :1], rho))[:, 0]
        return (reached + 1).clamp(low, high)

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if counts(mid).float().mean() >= mean_tokens else (mid, hi)
    out = counts(hi)
    floor = low  # positive relevance exhausted below the target: raise the minimum count
    while floor < high and out.clamp_min(floor).float().mean() < mean_tokens:
        floor += 1
    return order, out.clamp_min(floor)


@register_selector("joint_grad")
class JointGradSelector(SampleSelector):
    """Chooses samples and their tokens together from one gradient pass (see module doc).

    Contract with the buffer: ``joint = True`` and :meth:`select_joint`. As a plain
    :class:`SampleSelector`, :meth:`select` is the inner selector's.

    :param sample_selector: feature-based selector ordering each class (name or object).
    :param token_retention: mean kept fraction of tokens ``t``; ``None``: ``√r`` for a budget
        of a fraction ``r`` of the data's bytes (the paper's 1% = 10% x 10%).
    :param spread: per-sample counts lie in ``[t·T/spread, t·T·spread]``.
    :param batch_size: batch of the gradient pass.
    """

    joint = True

    def __init__(
        self,
        sample_selector: Union[str, SampleSelector] = "gradmatch",
        token_retention: Optional[float] = None,
        spread: float = 4.0,
        batch_size: int = 64,
    ):
        if token_retention is not None and not 0 < token_retention <= 1:
            raise ValueError(f"token_retention must be in (0, 1], got {token_retention}")
        if spread < 1:
            raise ValueError(f"spread must be at least 1, got {spread}")
        self.selector = get_selector(sample_selector)
        self.needs_features = self.selector.needs_features
        self.token_retention, self.spread = token_retention, float(spread)
        self.batch_size = int(batch_size)

    def _select(self, k: int, n: int, features: Optional[ClassFeatures] = None) -> Selection:
        return self.selector.select(k, n, features)

    def select_joint(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Tensor,
        budget_bytes: int,
        token_bytes: int,
        record_bytes: int,
    ) -> List[Tuple[int, Tensor]]:
        """Records ``(sample index, (k_i,) int64 token positions)`` in priority order.

        :param images: ``(n, C, H, W)`` model inputs of the task.
        :param targets: ``(n,)`` class indices.
        :param budget_bytes: total cost allowed; a record costs
            ``record_bytes + k_i * token_bytes`` and the records' sum never exceeds it.
        """
        if token_bytes < 1 or record_bytes < 0:
            raise ValueError(
                f"need token_bytes >= 1 and record_bytes >= 0, got {token_bytes}, {record_bytes}"
            )
        num_tokens = get_adapter(model).num_tokens
        n = len(images)
        full = record_bytes + num_tokens * token_bytes
        if n == 0 or budget_bytes < record_bytes + token_bytes:
            return []
        t = self.token_retention or min(1.0, math.sqrt(budget_bytes / (n * full)))
        low = max(1, min(num_tokens, math.floor(t * num_tokens / self.spread)))
        high = max(low, min(num_tokens, math.ceil(t * num_tokens * self.spread)))
        pre, logits, rel = token_relevance(model, images, targets, self.batch_size)
        ranking, counts = relevance_counts(rel, t * num_tokens, low, high)
        ranking, counts = ranking.cpu(), counts.cpu()
        cost = record_bytes + counts * token_bytes
        y = targets.cpu().long()
        classes, sizes = y.unique(return_counts=True)
        # bytes per class, proportional to its size and capped at the whole class
        shares = allocate_budget((sizes * full).tolist(), int(budget_bytes))
        orders = []
        for c, share in zip(classes.tolist(), shares):
            members = (y == c).nonzero()[:, 0]
            fits = int((cost[members].sort().values.cumsum(0) <= share).sum())
            k = min(len(members), fits + 1)
            dev = members.to(pre.device)
            feats = ClassFeatures(pre[dev], logits[dev], y[members].to(pre.device))
            orders.append(members[self.selector.select(k, len(members), feats).indices])
        merged = merge_class_orders(orders, sizes.tolist(), [cost[o] for o in orders])
        kept, left = {}, int(budget_bytes)
        for i in merged.tolist():
            keep = min(int(counts[i]), (left - record_bytes) // token_bytes)
            if keep >= low:
                kept[i] = keep
                left -= record_bytes + keep * token_bytes
        for i, keep in kept.items():  # bytes left once no record fits: more tokens, by priority
            extra = min(num_tokens - keep, left // token_bytes)
            kept[i] += extra
            left -= extra * token_bytes
        return [(i, ranking[i, :keep].clone()) for i, keep in kept.items()]

    def __repr__(self) -> str:
        return (
            f"JointGradSelector(sample_selector={self.selector!r}, "
            f"token_retention={self.token_retention}, spread={self.spread})"
        )
