"""``MemoryWriter``: what enters a :class:`~avalanche_cts.memory.store.TokenStore` after an
experience.

Each (class, task) group gets an equal share of the byte budget (whole records: groups differ
by at most one record; image-text records, whose sizes vary with their text, share bytes);
old groups shrink to their share; the sample selector picks new samples per group; the token
scorer ranks their patch tokens and the token choice keeps ``round(t*T)`` of them (top-k, or
a Gumbel top-k draw from the scores); the kept tokens are encoded and appended.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..scorers import get_scorer
from ..scorers.base import checked_scores
from ..selectors import ClassFeatures, get_selector
from ..selectors.base import check_selection
from ..tokens.patches import patchify, rank_tokens
from .budget import shortfall_message, water_fill
from .records import GROUP_HEADER_BYTES
from .store import GroupKey, TokenStore, check_finite

__all__ = ["MemoryWriter"]

Chosen = List[Tuple[GroupKey, Tensor, Tensor]]
"""Samples to store: ``(group key, indices into the experience, selector weights)``."""


class MemoryWriter:
    """Selection, scoring and token choice of a memory (see the module docstring).

    :param selector: sample selector (name or object; ``random`` is seeded with ``seed``).
    :param scorer: token scorer (name or object; ``random`` is seeded with ``seed``).
    :param token_choice: ``"topk"``, ``"gumbel"`` or ``"compact"`` (:func:`rank_tokens`).
    :param temperature: Gumbel temperature.
    :param batch_size: batch size of the feature and scoring passes.
    :param num_workers: DataLoader workers of those passes.
    :param seed: seed of the random selector and scorer; Gumbel draws use ``seed + 1``.
    """

    def __init__(self, selector="random", scorer="random", token_choice: str = "topk",
                 temperature: float = 1.0, batch_size: int = 128, num_workers: int = 0,
                 seed: int = 0):
        seed = int(seed)  # a NumPy integer too
        self.selector = get_selector(selector, seed=seed) if selector == "random" else \
            get_selector(selector)
        self.scorer = get_scorer(scorer, seed=seed) if scorer == "random" else get_scorer(scorer)
        self.token_choice = token_choice
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.generator = torch.Generator().manual_seed(seed + 1)
        """Stream of Gumbel token sampling."""

    def write(self, store: TokenStore, model, device, data, targets: Tensor, tasks: Tensor,
              experience: int) -> None:
        """Shrink old groups and add the chosen samples of experience ``data`` (item keys
        ``targets``, ``tasks``) to ``store``, every group within its share of the budget."""
        keys = sorted(set(zip(targets.tolist(), tasks.tolist())))
        for key in keys:
            store.group(key)
        members = {key: ((targets == key[0]) & (tasks == key[1])).nonzero().flatten()
                   for key in keys}
        quotas = self.quotas(store, members)
        for key in store.groups:
            store.shrink(key, quotas[key])
        feats = self.features(store, model, device, data, experience) \
            if self.selector.needs_features else None
        chosen = self.choose(store, keys, members, quotas, feats)
        self.store(store, model, device, data, chosen, experience)
        for key in keys:  # text makes record sizes vary: keep every group within its quota
            store.shrink(key, quotas[key])
        _warn_empty(store, experience)
        store.drop_empty()

    def quotas(self, store: TokenStore, members: Dict[GroupKey, Tensor]) -> Dict[GroupKey, int]:
        """Byte quota per group: equal shares of the budget, capped by what a group can use."""
        keys = sorted(store.groups)
        headers = GROUP_HEADER_BYTES * len(keys)
        if store.items.text_fields:  # record sizes vary with the text: share bytes
            per = store.record_bytes() + store.text_floor()
            caps = [store.groups[k].nbytes - GROUP_HEADER_BYTES + len(members.get(k, ())) * per
                    for k in keys]
            shares = water_fill(max(0, store.budget_bytes - headers), caps)
            return {k: GROUP_HEADER_BYTES + n for k, n in zip(keys, shares)}
        rb = store.record_bytes()
        caps = [len(store.groups[k]) + len(members.get(k, ())) for k in keys]
        counts = water_fill(max(0, store.budget_bytes - headers) // rb, caps)
        return {k: GROUP_HEADER_BYTES + n * rb for k, n in zip(keys, counts)}

    def features(self, store: TokenStore, model, device, data,
                 experience: int) -> Tuple[Optional[Tensor], ...]:
        """``(embeddings, logits, targets[, errors])`` of all of ``data`` in eval mode (float32,
        CPU; see :mod:`avalanche_cts.memory.items`)."""
        feats = store.items.features(model, data, self.batch_size, device)
        feats = tuple(None if f is None else f.float().cpu() if f.is_floating_point() else f.cpu()
                      for f in feats)
        bad = ~torch.isfinite(feats[0]).all(1)
        if bool(bad.any()):
            raise ValueError(
                f"sample {int(bad.nonzero()[0])} of experience {experience} gives "
                f"non-finite features: check its pixels for NaN or infinite values"
            )
        return feats

    def choose(self, store: TokenStore, keys, members, quotas, feats) -> Chosen:
        """Samples to store per group, from the selector, as many as fit the group's quota."""
        chosen: Chosen = []
        for key in keys:
            idx = members[key]
            room = quotas[key] - store.groups[key].nbytes
            k = max(0, room // (store.record_bytes() + store.text_floor()))
            if k == 0:
                continue
            cf = None if feats is None else ClassFeatures(*(None if f is None else f[idx]
                                                            for f in feats))
            sel = check_selection(self.selector, self.selector.select(int(k), len(idx), cf),
                                  int(k), len(idx))
            chosen.append((key, idx[sel.indices], sel.weights))
        return chosen

    def store(self, store: TokenStore, model, device, data, chosen: Chosen,
              experience: int) -> None:
        """Score the tokens of the chosen samples and append the kept ones to their groups."""
        if not chosen:
            return
        idx = torch.cat([c[1] for c in chosen])
        out_values, out_positions, out_texts = self.kept_tokens(store, model, device, data, idx,
                                                                experience)
        start = 0
        for key, sel_idx, weights in chosen:
            n = len(sel_idx)
            texts = None
            if out_texts is not None:
                texts = {f: [t[f] for t in out_texts[start:start + n]]
                         for f in store.items.text_fields}
            sources = torch.stack([torch.full_like(sel_idx, experience), sel_idx], dim=1) \
                if store.keep_sources else None
            store.groups[key].append(out_values[start:start + n], out_positions[start:start + n],
                                     weights.tolist(), sources, texts)
            start += n

    def kept_tokens(self, store: TokenStore, model, device, data, idx: Tensor, experience: int
                    ) -> Tuple[List[Tensor], List[Tensor], Optional[List[Dict[str, Tensor]]]]:
        """Encoded values ``(k, V)``, positions ``(k,)`` and (image-text records) token ids of
        the kept tokens of each sample ``data[idx[i]]``, in order, scored in batches of
        ``batch_size``."""
        k = store.tokens_per_sample
        t = store.layout["num_tokens"]
        out_values, out_positions = [], []
        out_texts = [] if store.items.text_fields else None
        start = 0
        for x, y, texts in store.items.batches(data, idx, self.batch_size, self.num_workers):
            check_finite(x, idx[start:start + len(x)].tolist(), experience)
            start += len(x)
            tokens = patchify(x, store.layout["patch_size"])
            if k >= t:
                order = torch.arange(t).expand(len(x), t)
            else:
                target = {n: v.to(device) for n, v in y.items()} if texts else y.to(device)
                scores = checked_scores(self.scorer, model, x.to(device), target, t)
                order = self.choose_tokens(scores, k)
            kept = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
            out_values.extend(store.codec.encode(kept).unbind(0))
            out_positions.extend(order.unbind(0))
            if texts:
                out_texts.extend(texts)
        return out_values, out_positions, out_texts

    def choose_tokens(self, scores: Tensor, k: int) -> Tensor:
        """``(B, k)`` positions of the tokens to keep from ``(B, T)`` scores: the top k, a
        Gumbel top-k sample of softmax(standardised scores / temperature), or the k nearest to
        the most relevant spot (``"compact"``)."""
        return rank_tokens(scores, self.token_choice, self.temperature,
                           generator=self.generator)[:, :k]


def _warn_empty(store: TokenStore, experience: int) -> None:
    """Warn when (class, task) groups hold no record after ``experience``, naming the cause:
    the whole budget, or each group's share of it, below one record."""
    empty = sum(1 for g in store.groups.values() if not len(g))
    if empty:
        warnings.warn(shortfall_message(
            experience, empty, len(store.groups), store.budget_bytes, "record",
            store.record_bytes() + store.text_floor(), GROUP_HEADER_BYTES), stacklevel=4)
