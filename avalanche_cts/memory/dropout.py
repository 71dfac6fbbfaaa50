"""Token dropout of new data: which tokens a new sample keeps while it is trained.

The memory replays partial inputs; new data is trained on partial inputs too, so the model
cannot tell the two apart by their shape (paper section 4.1). :class:`NewDataDropout` draws
the ``(B, T)`` keep mask of every new-data batch:

* how many tokens: ``round(rate * T)`` per sample (``schedule="fixed"``) or a rate drawn per
  sample in ``[rate, 1]`` (``"uniform"``), for a ``fraction`` of each batch (the rest whole);
* which tokens (:data:`~avalanche_cts.memory.recipe.DROPOUT_TOKENS`): ``random`` (the paper), or
  ``matched``: the tokens the memory itself would keep, i.e. the memory's scorer applied to
  the batch (target: its labels, or each item's answer or caption for BLIP) and the memory's
  token choice (top-k, or Gumbel top-k drawn anew every step);
* when the matched scores are computed (:data:`~avalanche_cts.memory.recipe.DROPOUT_REFRESH`): every
  ``step`` under the current model, or once per ``epoch`` / ``experience`` for the whole
  training set and looked up per batch by image fingerprint (a batch whose images were not
  scored, e.g. under random augmentation, is scored on the spot).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..models import attention_access, get_adapter
from ..scorers.base import checked_scores
from .recipe import DROPOUT_REFRESH, DROPOUT_SCHEDULES, DROPOUT_TOKENS
from ..tokens.patches import random_keep_mask, rank_tokens

__all__ = ["FINGERPRINT_VALUES", "NewDataDropout", "ScoreCache", "batch_images_targets", "fingerprints"]

_FINGERPRINT_SEED = 20241008
FINGERPRINT_VALUES = 16384
"""Values of an image a fingerprint reads at most: a fixed random subset of larger images
(a 224 px RGB image has 150,528), so that a look-up costs little beside a training step."""
_PROJECTIONS: Dict[Tuple[int, str], Tuple[Optional[Tensor], Tensor]] = {}


def batch_images_targets(batch) -> Tuple[Tensor, object]:
    """``(images (B, C, H, W), scorer targets)`` of a training mini-batch: the labels of a
    classification tuple ``(x, y, ...)``, or the collated text batch of a BLIP dict batch
    (each item's answer or caption)."""
    if isinstance(batch, dict):
        return batch["pixel_values"], batch
    return batch[0], batch[1]


def fingerprints(images: Tensor) -> Tensor:
    """``(B,)`` float64 fingerprint of each image: a fixed random projection of its values,
    of at most :data:`FINGERPRINT_VALUES` of them at fixed random places (equal images give
    equal fingerprints; different images collide with probability ~0 unless they agree on
    every value read, as near-duplicates differing in a few pixels of a large image may),
    computed on the images' device. Each image's fingerprint depends on its values only (on
    the CPU the rows go in chunks of :data:`_CHUNK_VALUES` values read, the same sums)."""
    flat = images.detach().flatten(1)
    places, projection = _projection(flat.shape[1], flat.device)
    step = len(flat) if flat.device.type != "cpu" else _CHUNK_VALUES // len(projection)
    step = max(1, step)
    return torch.cat([_project(flat[i:i + step], places, projection)
                      for i in range(0, max(len(flat), 1), step)])


_CHUNK_VALUES = 1 << 17
"""Values read per chunk of a CPU fingerprint: small temporaries come from the heap, not
fresh pages (a 64-image batch of 224 px at once spends ~10 ms faulting them in)."""


def _project(flat: Tensor, places: Optional[Tensor], projection: Tensor) -> Tensor:
    """``(b,)`` fingerprints of ``(b, values)`` rows (see :func:`fingerprints`)."""
    if places is not None:
        flat = flat.index_select(1, places)
    return (flat.double() * projection).sum(1)


def _projection(values: int, device) -> Tuple[Optional[Tensor], Tensor]:
    """``(places read (None: all), float64 weights)`` of images of ``values`` values."""
    key = (values, str(device))
    if key not in _PROJECTIONS:
        gen = torch.Generator().manual_seed(_FINGERPRINT_SEED)
        places = None
        if values > FINGERPRINT_VALUES:
            places = torch.randperm(values, generator=gen)[:FINGERPRINT_VALUES].sort().values
            places = places.to(device)
        weights = torch.randn(values if places is None else FINGERPRINT_VALUES, generator=gen,
                              dtype=torch.float64)
        _PROJECTIONS[key] = (places, weights.to(device))
    return _PROJECTIONS[key]


class ScoreCache:
    """Per-sample token rows of a training set (keep ranks or scores), looked up by image
    fingerprint on the device of the images looked up (moved there at the first look-up).

    :param keys: ``(N,)`` float64 fingerprints.
    :param rows: ``(N, T)`` rows, one per fingerprint (e.g. token ranks or float32 scores).
    """

    def __init__(self, keys: Tensor, rows: Tensor):
        order = keys.argsort()
        self.keys = keys[order]
        self.rows = rows[order.to(rows.device)]

    def lookup(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(rows (B, T), found (B,) bool)`` of a batch on its device; rows not found are 0."""
        f = fingerprints(images)
        if self.keys.device != f.device:
            self.keys, self.rows = self.keys.to(f.device), self.rows.to(f.device)
        right = torch.searchsorted(self.keys, f).clamp_(max=len(self.keys) - 1)
        left = (right - 1).clamp_(min=0)
        best = torch.where((self.keys[left] - f).abs() < (self.keys[right] - f).abs(), left, right)
        found = (self.keys[best] - f).abs() <= 1e-9 * (f.abs() + 1.0)
        return self.rows[best].masked_fill_(~found[:, None], 0), found


class NewDataDropout:
    """Keep masks of new-data batches under a recipe (see the module docstring).

    :param rate: keep rate in (0, 1].
    :param schedule: ``"fixed"`` or ``"uniform"`` (rate drawn per sample in ``[rate, 1]``).
    :param fraction: share in [0, 1] of each batch that is dropped.
    :param tokens: ``"random"`` or ``"matched"``.
    :param refresh: when matched scores are computed: ``"step"``, ``"epoch"``, ``"experience"``.
    :param scorer: the token scorer of ``matched`` (the memory's).
    :param token_choice: ``"topk"``, ``"gumbel"`` or ``"compact"`` (the memory's).
    :param temperature: Gumbel temperature (the memory's).
    :param batch_size: batch size of the epoch/experience scoring passes.

    Random draws use torch's global RNG (saved in run checkpoints). A random scorer under
    ``matched`` is random dropout, drawn as such (the memory's scorer stream is not touched).
    """

    def __init__(self, rate: float, *, schedule: str = "fixed", fraction: float = 1.0,
                 tokens: str = "random", refresh: str = "step", scorer=None,
                 token_choice: str = "topk", temperature: float = 1.0, batch_size: int = 128):
        if schedule not in DROPOUT_SCHEDULES:
            raise ValueError(f"dropout_schedule must be one of {DROPOUT_SCHEDULES}, got {schedule!r}")
        if tokens not in DROPOUT_TOKENS:
            raise ValueError(f"dropout_tokens must be one of {DROPOUT_TOKENS}, got {tokens!r}")
        if refresh not in DROPOUT_REFRESH:
            raise ValueError(f"dropout_refresh must be one of {DROPOUT_REFRESH}, got {refresh!r}")
        if tokens == "matched" and scorer is None:
            raise ValueError("dropout_tokens='matched' needs the memory's token scorer")
        self.rate = float(rate)
        self.schedule = schedule
        self.fraction = float(fraction)
        self.tokens = tokens
        self.refresh = refresh
        self.scorer = scorer
        self.token_choice = token_choice
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        self.cache: Optional[ScoreCache] = None
        self.scored_images = 0
        """Images scored so far (steps and refreshes): the cost of ``matched``."""
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def active(self) -> bool:
        """Whether any token is dropped at all."""
        return self.rate < 1.0 and self.fraction > 0.0

    @property
    def scored(self) -> bool:
        """Whether keep masks follow scores (``matched`` with a scorer that is not random)."""
        return self.tokens == "matched" and getattr(self.scorer, "name", "") != "random"

    def counts(self, batch: int, num_tokens: int) -> Tensor:
        """``(B,)`` tokens each sample keeps (``num_tokens``: the sample stays whole)."""
        t = self.rate
        rates = torch.full((batch,), t)
        if self.schedule == "uniform":
            rates = t + (1.0 - t) * torch.rand(batch)
        counts = (rates * num_tokens).round().clamp(1, num_tokens).long()
        if self.fraction < 1.0:
            counts = torch.where(torch.rand(batch) < self.fraction, counts,
                                 torch.full_like(counts, num_tokens))
        return counts

    def keep_mask(self, model, batch, num_tokens: int) -> Optional[Tensor]:
        """``(B, T)`` bool keep mask of a training mini-batch on its device (``None``: keep all).

        The counts (and, for Gumbel token choice, the noise) are drawn on the CPU, the same
        draws on every device; masks are ranked on the batch's device, matched ones from the
        ranks cached by :meth:`refresh_scores` (no ranking per step under top-k or compact
        choice)."""
        images, targets = batch_images_targets(batch)
        counts = self.counts(len(images), num_tokens)
        if bool((counts == num_tokens).all()):
            return None
        counts = counts.to(images.device, non_blocking=True)
        if not self.scored:
            return random_keep_mask(counts, num_tokens)
        rows = self._batch_rows(model, images, targets, num_tokens)
        if self.token_choice == "gumbel":
            rows = rank_tokens(rows, self.token_choice, self.temperature).argsort(1)
        return rows < counts[:, None]

    def _rows(self, scores: Tensor) -> Tensor:
        """What ``(B, T)`` scores are kept as: their token ranks under top-k or compact choice
        (int16 when they fit; ranked once), the scores themselves under Gumbel choice (whose
        noise is drawn anew every step)."""
        if self.token_choice == "gumbel":
            return scores
        rank = rank_tokens(scores, self.token_choice).argsort(1)
        return rank.to(torch.int16) if scores.shape[1] <= torch.iinfo(torch.int16).max else rank

    def _batch_rows(self, model, images: Tensor, targets, num_tokens: int) -> Tensor:
        """``(B, T)`` rows (:meth:`_rows`) of a batch on its device: looked up, or scored on
        the spot for images the cache lacks (all of them without a cache)."""
        if self.cache is None:
            self.scored_images += len(images)
            scores = checked_scores(self.scorer, model, images, targets, num_tokens)
            return self._rows(scores).to(images.device, non_blocking=True)
        rows, found = self.cache.lookup(images)
        hits = int(found.sum())  # the one read of the device per step
        self.cache_hits += hits
        self.cache_misses += len(images) - hits
        if hits < len(images):
            miss = (~found).nonzero().flatten()
            self.scored_images += len(miss)
            sub = attention_access(model).take_targets(targets, miss)
            scores = checked_scores(self.scorer, model, images[miss], sub, num_tokens)
            rows[miss] = self._rows(scores).to(rows.device)
        return rows

    def refresh_scores(self, model, dataset, collate=None, device="cpu") -> None:
        """Score every image of ``dataset`` (the training set) under ``model`` for lookups."""
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False,
                            collate_fn=collate)
        keys, scores = [], []
        num_tokens = get_adapter(model).num_tokens
        for batch in loader:
            images, targets = batch_images_targets(batch)
            images = images.to(device)
            targets = _to(targets, device)
            keys.append(fingerprints(images))
            scores.append(self._rows(checked_scores(self.scorer, model, images, targets,
                                                    num_tokens)))
            self.scored_images += len(images)
        self.cache = ScoreCache(torch.cat(keys), torch.cat(scores).to(device)) if keys else None
        """``None`` for an empty training set: every batch is scored on the spot."""

    def state(self) -> Dict[str, int]:
        """Cost counters: images scored, cache hits and misses."""
        return dict(scored_images=self.scored_images, cache_hits=self.cache_hits,
                    cache_misses=self.cache_misses)


def _to(targets, device):
    if isinstance(targets, dict):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in targets.items()}
    return torch.as_tensor(targets).to(device)

