"""``CoreTokensetBuffer``: an Avalanche storage policy that keeps core tokensets under a byte budget.

Classification streams and image-text streams (BLIP VQA and captioning, :mod:`avalanche_cts.vl`)
share it; what differs in reading an experience is in :mod:`avalanche_cts.items`.
"""
from __future__ import annotations

import math
import re
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.storage_policy import ExemplarsBuffer

from .budget import water_fill
from .items import ClassItems, item_view
from .memory import (
    GROUP_HEADER_BYTES,
    LENGTH_DTYPE,
    POSITION_DTYPE,
    PixelCodec,
    TokenBatch,
    TokenGroup,
    collate_tokens,
)
from .models import get_adapter, resolve_normalization
from .normalization import Normalization, NormalizationLike
from .recipe import DEFAULT_RECIPE, TOKEN_CHOICES
from .scorers import TokenScorer, get_scorer
from .selectors import ClassFeatures, SampleSelector, get_selector
from .tokens import keep_count, patchify, rank_tokens

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["CoreTokensetBuffer", "TokenMemoryDataset"]

_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float32": torch.float32}


def _check_finite(images: Tensor, indices: List[int], experience: int) -> None:
    """Raise naming the first sample whose pixels are NaN or infinite."""
    bad = (~torch.isfinite(images.flatten(1))).any(1) if images.is_floating_point() else None
    if bad is not None and bool(bad.any()):
        i = indices[int(bad.nonzero()[0])]
        raise ValueError(
            f"sample {i} of experience {experience} has NaN or infinite pixels: the memory "
            f"stores only finite images; fix or drop that sample in the dataset"
        )


def _component(obj) -> str:
    """A selector's or scorer's identity: its repr without the seed (the random streams
    travel in the state's RNG part)."""
    return re.sub(r"seed=\d+(, )?", "", repr(obj))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class TokenMemoryDataset(Dataset):
    """Flat view over token groups: item ``i`` is ``(values, positions, label, task, weight)``,
    followed by the record's token ids per text field for image-text records."""

    def __init__(self, groups: List[TokenGroup]):
        self.groups = [g for g in groups if len(g)]
        self._offsets = [g.offsets() for g in self.groups]
        self._text_offsets = [g.text_offsets() for g in self.groups]
        sizes = torch.tensor([len(g) for g in self.groups], dtype=torch.long)
        self._starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int):
        gi = int(torch.searchsorted(self._starts, torch.tensor(i), right=True)) - 1
        g, j = self.groups[gi], i - int(self._starts[gi])
        values, positions = g.record(j, self._offsets[gi])
        w = 1.0 if g.weights is None else float(g.weights[j])
        if g.texts:
            return values, positions, g.label, g.task, w, g.record_text(j, self._text_offsets[gi])
        return values, positions, g.label, g.task, w


class CoreTokensetBuffer(ExemplarsBuffer):
    """Replay memory of core tokensets under a byte budget, class-balanced (task-balanced for
    image-text streams, which have no classes).

    After each experience, a sample selector picks samples per class and a token scorer
    ranks their patch tokens; the top ``round(t*T)`` tokens of each selected sample are
    stored at their native dtype with int16 positions (image-text records also keep their
    question and answer or caption token ids, int16, counted in the bytes). The number of
    samples follows from the budget and the token retention ``t``. When new classes arrive,
    old classes shrink by dropping their lowest-priority records, which frees their memory.

    ``token_retention=1`` is a whole-sample coreset; a small ``t`` with many samples is
    "core tokens"; both small is a core tokenset (paper: 10% samples x 10% tokens = 1%).

    :param budget_bytes: fixed budget in bytes (exclusive with ``budget_fraction``).
    :param budget_fraction: budget as a fraction in (0, 1] of the bytes of all data seen so
        far (whole samples at the storage dtype).
    :param token_retention: fraction t in (0, 1] of the T patch tokens kept per sample.
    :param selector: sample selector name (``random``, ``herding``, ``craig``,
        ``gradmatch``, ...) or object.
    :param scorer: token scorer name (``random``, ``rollout``, ``gradcam``, ``gradlrp``,
        ``atman``) or object.
    :param token_choice: ``"topk"`` keeps the highest-scoring tokens; ``"gumbel"`` samples
        them without replacement with probabilities softmax(standardised score /
        ``temperature``) (Gumbel top-k).
    :param temperature: temperature of ``"gumbel"`` (lower = closer to top-k).
    :param normalization: the stream's input normalisation, inverted when encoding so that
        exact 8-bit pixels are stored (a ``Normalization``, ``(mean, std)`` or ``None``: the
        model's own constants, read from the model at the first update).
    :param pixel_dtype: storage dtype (``"uint8"``, ``"float16"``, ``"float32"``); ``None``
        stores uint8 when the images are exact 8-bit pixels after undoing the normalisation.
    :param weighted: also store the selector's weights (4 bytes per record).
    :param keep_sources: remember each record's (experience, index) for diagnostics (not
        counted in the bytes: it is not part of the memory).
    :param batch_size: batch size of the feature and scoring passes.
    :param num_workers: DataLoader workers of those passes.
    :param seed: seed of the default random selector and scorer and of Gumbel sampling.
    """

    def __init__(
        self,
        *,
        budget_bytes: Optional[int] = None,
        budget_fraction: Optional[float] = None,
        token_retention: float = 1.0,
        selector: Union[str, SampleSelector] = "random",
        scorer: Union[str, TokenScorer] = "random",
        token_choice: str = DEFAULT_RECIPE.token_choice,
        temperature: float = 1.0,
        normalization: NormalizationLike = None,
        pixel_dtype: Optional[str] = None,
        weighted: bool = False,
        keep_sources: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(max_size=0)
        if (budget_bytes is None) == (budget_fraction is None):
            raise ValueError("give exactly one of budget_bytes or budget_fraction")
        if budget_bytes is not None and (not _is_int(budget_bytes) or budget_bytes <= 0):
            raise ValueError(f"budget_bytes must be a positive integer, got {budget_bytes!r}")
        if budget_fraction is not None and not (_is_real(budget_fraction)
                                                and 0.0 < budget_fraction <= 1.0):
            raise ValueError(
                f"budget_fraction must be a number in (0, 1] (e.g. 0.01 for 1% of the data), "
                f"got {budget_fraction!r}"
            )
        if not (_is_real(token_retention) and 0.0 < token_retention <= 1.0):
            raise ValueError(
                f"token_retention must be a number in (0, 1] (fraction of patch tokens kept per "
                f"sample), got {token_retention!r}"
            )
        if token_choice not in TOKEN_CHOICES:
            raise ValueError(f"token_choice must be one of {TOKEN_CHOICES}, got {token_choice!r}")
        if not (_is_real(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if pixel_dtype is not None and pixel_dtype not in _DTYPES:
            raise ValueError(f"pixel_dtype must be one of {sorted(_DTYPES)} or None, got {pixel_dtype!r}")
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                 ("seed", seed, 0)):
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.budget_bytes = budget_bytes
        self.budget_fraction = None if budget_fraction is None else float(budget_fraction)
        self.token_retention = float(token_retention)
        self.selector = get_selector(selector, seed=seed) if isinstance(selector, str) and \
            selector == "random" else get_selector(selector)
        self.scorer = get_scorer(scorer, seed=seed) if isinstance(scorer, str) and \
            scorer == "random" else get_scorer(scorer)
        self.token_choice = token_choice
        self.temperature = float(temperature)
        self.normalization: Optional[Normalization] = (
            None if normalization is None else resolve_normalization(normalization))
        self.pixel_dtype = pixel_dtype
        self.weighted = bool(weighted)
        self.keep_sources = bool(keep_sources)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.generator = torch.Generator().manual_seed(seed + 1)
        """Stream of Gumbel token sampling."""
        self.groups: Dict[Tuple[int, int], TokenGroup] = {}
        self.seen_samples = 0
        self.seen_bytes = 0
        self.experiences = 0
        self.codec: Optional[PixelCodec] = None
        self.layout: Optional[Dict[str, object]] = None
        self.items = ClassItems()
        """How experiences are read (:mod:`avalanche_cts.items`), set at the first update."""

    @property
    def max_size(self) -> int:
        """Records held (Avalanche's ``ExemplarsBuffer`` size)."""
        if sys._getframe(1).f_globals.get("__name__") == "avalanche.training.plugins.replay":
            raise TypeError(
                "CoreTokensetBuffer holds token records that Avalanche's ReplayPlugin cannot "
                "replay (it concatenates whole samples with the new data): use "
                "avalanche_cts.CoreTokensetReplayPlugin(buffer) instead of ReplayPlugin"
            )
        return self._max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        self._max_size = int(value)

    # ------------------------------------------------------------- accounting
    @property
    def budget(self) -> int:
        """Current budget in bytes."""
        if self.budget_bytes is not None:
            return self.budget_bytes
        return int(self.budget_fraction * self.seen_bytes)

    @property
    def nbytes(self) -> int:
        """Exact bytes held by the memory."""
        return sum(g.nbytes for g in self.groups.values())

    @property
    def num_records(self) -> int:
        return sum(len(g) for g in self.groups.values())

    @property
    def num_tokens(self) -> int:
        return sum(g.num_tokens for g in self.groups.values())

    def token_bytes(self) -> int:
        """Bytes of one stored token of a partial record: its values plus its int16 position."""
        self._require_layout()
        v = self.layout["token_dim"]
        return v * self.codec.itemsize + torch.empty(0, dtype=POSITION_DTYPE).element_size()

    def record_bytes(self, k: Optional[int] = None) -> int:
        """Bytes of one record keeping ``k`` tokens (default: the buffer's ``round(t*T)``).

        A record keeping all T tokens needs no positions (its tokens are in grid order).
        """
        self._require_layout()
        k = self.tokens_per_sample if k is None else k
        extra = torch.empty(0, dtype=LENGTH_DTYPE).element_size() + (4 if self.weighted else 0)
        if k == self.layout["num_tokens"]:
            return k * self.layout["token_dim"] * self.codec.itemsize + extra
        return k * self.token_bytes() + extra

    @property
    def tokens_per_sample(self) -> int:
        self._require_layout()
        return keep_count(self.layout["num_tokens"], self.token_retention)

    def sample_bytes(self) -> int:
        """Bytes of one whole sample at the storage dtype (the unit of ``budget_fraction``)."""
        self._require_layout()
        c, h, w = self.layout["image_shape"]
        return c * h * w * self.codec.itemsize

    def _require_layout(self):
        if self.layout is None:
            raise RuntimeError("the buffer has seen no data yet: sizes are known after the first update")

    # -------------------------------------------------------------- Avalanche
    @property
    def buffer(self) -> AvalancheDataset:
        """The memory as an AvalancheDataset of :class:`TokenMemoryDataset` items."""
        return AvalancheDataset([self.dataset()], collate_fn=self.collate)

    def collate(self, items: List[Tuple]) -> TokenBatch:
        """Collate records into a :class:`~avalanche_cts.memory.TokenBatch` (stored token ids
        become the model's text tensors)."""
        return collate_tokens(items, text=self.items.text_batch if self.items.text_fields else None)

    @buffer.setter
    def buffer(self, new_buffer):
        raise AttributeError("CoreTokensetBuffer manages its memory itself; use resize() or post_adapt()")

    def dataset(self) -> TokenMemoryDataset:
        """Plain torch dataset over all records (collate with :func:`collate_tokens`)."""
        return TokenMemoryDataset([self.groups[k] for k in sorted(self.groups)])

    def update(self, strategy: "SupervisedTemplate", **kwargs):
        """Add the strategy's current experience (what ``ReplayPlugin`` calls)."""
        self.post_adapt(strategy, strategy.experience)

    def post_adapt(self, agent_state, exp):
        """Add experience ``exp`` using ``agent_state.model`` and ``agent_state.device``."""
        model, device = agent_state.model, getattr(agent_state, "device", "cpu")
        data = exp.dataset.eval()
        if len(data) == 0:
            raise ValueError(
                f"experience {getattr(exp, 'current_experience', '?')} has no samples: "
                f"nothing can be stored; remove empty experiences from the stream"
            )
        adapter = get_adapter(model)
        items = item_view(data)
        if self.layout is not None and type(items) is not type(self.items):
            raise TypeError(f"the memory holds {type(self.items).__name__} records; this "
                            f"experience has {type(items).__name__}: one buffer serves one stream")
        self.items = items
        targets, tasks = items.keys(data)
        if hasattr(adapter, "check_targets") and not items.text_fields:
            adapter.check_targets(targets)
        self._experience = int(getattr(exp, "current_experience", self.experiences))
        self._init_layout(adapter, data)
        self.experiences += 1
        self.seen_samples += len(data)
        self.seen_bytes += len(data) * self.sample_bytes()

        keys = sorted(set(zip(targets.tolist(), tasks.tolist())))
        for key in keys:
            self.groups.setdefault(key, TokenGroup(*key, self.layout["num_tokens"],
                                                   self.layout["token_dim"], self.codec.dtype,
                                                   self.weighted, self.keep_sources,
                                                   items.text_fields))
        members = {key: ((targets == key[0]) & (tasks == key[1])).nonzero().flatten()
                   for key in keys}
        quotas = self._quotas(members)
        for key, group in self.groups.items():
            self._shrink(group, quotas[key])

        feats = self._features(model, device, data) if self.selector.needs_features else None
        chosen = self._choose(model, device, data, keys, members, quotas, feats)
        self._store(model, device, data, chosen)
        for key in keys:  # text makes record sizes vary: keep every group within its quota
            self._shrink(self.groups[key], quotas[key])
        self.groups = {k: g for k, g in self.groups.items() if len(g)}
        self.max_size = self.num_records

    def resize(self, strategy, new_size: int):
        """Keep at most ``new_size`` records, class-balanced, dropping lowest-priority ones."""
        if new_size < 0:
            raise ValueError(f"new_size must be >= 0, got {new_size}")
        keys = sorted(self.groups)
        shares = water_fill(new_size, [len(self.groups[k]) for k in keys])
        for key, n in zip(keys, shares):
            self.groups[key].truncate(n)
        self.groups = {k: g for k, g in self.groups.items() if len(g)}
        self.max_size = self.num_records

    # --------------------------------------------------------------- helpers
    def _init_layout(self, adapter, data) -> None:
        x = self.items.image(data[0])
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise TypeError(
                f"experience items must start with a (C, H, W) image tensor, got "
                f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}: add ToTensor() to the "
                f"eval transforms"
            )
        adapter.check_images(x[None])
        layout = dict(
            image_shape=tuple(x.shape), patch_size=adapter.patch_size, grid=adapter.grid,
            num_tokens=adapter.num_tokens, channels=adapter.in_chans,
            token_dim=adapter.patch_size ** 2 * adapter.in_chans,
        )
        if self.items.text_fields:
            layout["text"] = self.items.state()
        if self.layout is None:
            norm = (self.normalization or adapter.normalization).for_channels(adapter.in_chans)
            if self.pixel_dtype:
                codec = PixelCodec(_DTYPES[self.pixel_dtype], norm)
            else:
                sample = range(min(len(data), 64))
                images = torch.stack([self.items.image(data[i]) for i in sample])
                _check_finite(images, list(sample), self._experience)
                codec = PixelCodec.infer(images, norm)
            self.layout, self.codec, self.normalization = layout, codec, norm
        elif layout != self.layout:
            raise ValueError(
                f"image/patch layout changed between experiences: stored {self.layout}, "
                f"now {layout}; one buffer serves one model and image size"
            )

    def _quotas(self, members: Dict[Tuple[int, int], Tensor]) -> Dict[Tuple[int, int], int]:
        """Byte quota per group: equal shares of the budget, capped by what a group can use.

        With one record size the shares are whole records, so groups differ by at most one
        record; records with text (varying sizes) share bytes.
        """
        keys = sorted(self.groups)
        headers = GROUP_HEADER_BYTES * len(keys)
        if self.items.text_fields:  # record sizes vary with the text: share bytes
            per = self.record_bytes() + self._text_floor()
            caps = [self.groups[k].nbytes - GROUP_HEADER_BYTES + len(members.get(k, ())) * per
                    for k in keys]
            shares = water_fill(max(0, self.budget - headers), caps)
            return {k: GROUP_HEADER_BYTES + n for k, n in zip(keys, shares)}
        rb = self.record_bytes()
        caps = [len(self.groups[k]) + len(members.get(k, ())) for k in keys]
        counts = water_fill(max(0, self.budget - headers) // rb, caps)
        return {k: GROUP_HEADER_BYTES + n * rb for k, n in zip(keys, counts)}

    def _text_floor(self) -> int:
        """Fewest bytes the text of a record takes (one length per text field)."""
        return len(self.items.text_fields) * torch.empty(0, dtype=LENGTH_DTYPE).element_size()

    def _shrink(self, group: TokenGroup, quota: int) -> None:
        if group.nbytes <= quota:
            return
        fits = (GROUP_HEADER_BYTES + group.record_nbytes().cumsum(0)) <= quota
        group.truncate(int(fits.sum()))

    def _loader(self, data, indices: Tensor) -> DataLoader:
        return DataLoader(Subset(data, indices.tolist()), batch_size=self.batch_size,
                          shuffle=False, num_workers=self.num_workers)

    def _features(self, model, device, data) -> Tuple[Optional[Tensor], ...]:
        """``(embeddings, logits, targets[, errors])`` of all of ``data`` in eval mode (float32,
        CPU; see :mod:`avalanche_cts.items`)."""
        feats = self.items.features(model, data, self.batch_size, device)
        feats = tuple(None if f is None else f.float().cpu() if f.is_floating_point() else f.cpu()
                      for f in feats)
        bad = ~torch.isfinite(feats[0]).all(1)
        if bool(bad.any()):
            raise ValueError(
                f"sample {int(bad.nonzero()[0])} of experience {self._experience} gives "
                f"non-finite features: check its pixels for NaN or infinite values"
            )
        return feats

    def _choose(self, model, device, data, keys, members, quotas,
                feats) -> List[Tuple[Tuple[int, int], Tensor, Tensor]]:
        """Samples to store, ``(group key, indices into data, weights)`` per group, from the
        selector."""
        chosen: List[Tuple[Tuple[int, int], Tensor, Tensor]] = []
        for key in keys:
            group, idx = self.groups[key], members[key]
            room = quotas[key] - group.nbytes
            k = max(0, room // (self.record_bytes() + self._text_floor()))
            if k == 0:
                continue
            cf = None if feats is None else ClassFeatures(*(None if f is None else f[idx]
                                                            for f in feats))
            sel = self.selector.select(int(k), len(idx), cf)
            chosen.append((key, idx[sel.indices], sel.weights))
        return chosen

    def _store(self, model, device, data, chosen) -> None:
        """Score the tokens of the chosen samples and append the kept ones to their groups."""
        if not chosen:
            return
        idx = torch.cat([c[1] for c in chosen])
        out_values, out_positions, out_texts = self._kept_tokens(model, device, data, idx)
        start = 0
        for key, sel_idx, weights in chosen:
            n = len(sel_idx)
            texts = None
            if out_texts is not None:
                texts = {f: [t[f] for t in out_texts[start:start + n]]
                         for f in self.items.text_fields}
            self.groups[key].append(out_values[start:start + n], out_positions[start:start + n],
                                    weights.tolist(), self._sources(sel_idx), texts)
            start += n

    def _sources(self, idx: Tensor) -> Optional[Tensor]:
        if not self.keep_sources:
            return None
        return torch.stack([torch.full_like(idx, self._experience), idx], dim=1)

    def _kept_tokens(self, model, device, data, idx: Tensor
                     ) -> Tuple[List[Tensor], List[Tensor], Optional[List[Dict[str, Tensor]]]]:
        """Encoded values ``(k, V)``, positions ``(k,)`` and (image-text records) token ids of
        the kept tokens of each sample ``data[idx[i]]``, in order, scored in batches of
        ``batch_size``."""
        k = self.tokens_per_sample
        t = self.layout["num_tokens"]
        out_values, out_positions = [], []
        out_texts = [] if self.items.text_fields else None
        start = 0
        for x, y, texts in self.items.batches(data, idx, self.batch_size, self.num_workers):
            _check_finite(x, idx[start:start + len(x)].tolist(), self._experience)
            start += len(x)
            tokens = patchify(x, self.layout["patch_size"])
            if k >= t:
                order = torch.arange(t).expand(len(x), t)
            else:
                target = {n: v.to(device) for n, v in y.items()} if texts else y.to(device)
                scores = self.scorer.score(model, x.to(device), target)
                order = self.choose_tokens(scores.float().cpu(), k)
            kept = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
            out_values.extend(self.codec.encode(kept).unbind(0))
            out_positions.extend(order.unbind(0))
            if texts:
                out_texts.extend(texts)
        return out_values, out_positions, out_texts

    def choose_tokens(self, scores: Tensor, k: int) -> Tensor:
        """``(B, k)`` positions of the tokens to keep from ``(B, T)`` scores: the top k, or a
        Gumbel top-k sample of softmax(standardised scores / temperature)."""
        return rank_tokens(scores, self.token_choice, self.temperature,
                           generator=self.generator)[:, :k]

    # ------------------------------------------------------------ persistence
    def _config(self) -> Dict:
        return dict(budget_bytes=self.budget_bytes, budget_fraction=self.budget_fraction,
                    token_retention=self.token_retention, weighted=self.weighted,
                    token_choice=self.token_choice, temperature=self.temperature,
                    selector=_component(self.selector), scorer=_component(self.scorer))

    def state_dict(self) -> Dict:
        """Everything needed to resume: memory, counters, layout, codec and RNG states."""
        rng = {name: obj.generator.get_state() for name, obj in
               (("selector", self.selector), ("scorer", self.scorer), ("tokens", self))
               if isinstance(getattr(obj, "generator", None), torch.Generator)}
        norm = self.codec.normalization if self.codec is not None else None
        return {
            "config": self._config(),
            "seen_samples": self.seen_samples,
            "seen_bytes": self.seen_bytes,
            "experiences": self.experiences,
            "codec": None if self.codec is None else str(self.codec.dtype).replace("torch.", ""),
            "normalization": None if norm is None else dict(mean=list(norm.mean), std=list(norm.std)),
            "layout": self.layout,
            "groups": [g.state_dict() for _, g in sorted(self.groups.items())],
            "rng": rng,
        }

    def load_state_dict(self, state: Dict, strict: bool = True) -> None:
        """Restore a memory saved by :meth:`state_dict` into a buffer of the same configuration.

        The state is checked first (structure, lengths vs values vs positions, positions
        inside the grid, dtypes vs the codec, bytes within the budget) and nothing changes
        when it fails. ``strict=False`` accepts another selector, scorer or token choice (the
        memory is kept; new records follow this buffer's settings).

        :raises ValueError: naming what is wrong.
        """
        if not isinstance(state, dict):
            raise ValueError(f"a buffer state is a dict from state_dict(), got {type(state).__name__}")
        missing = [k for k in ("config", "seen_samples", "seen_bytes", "codec", "layout", "groups")
                   if k not in state]
        if missing:
            raise ValueError(f"buffer state lacks {missing}: it was not written by "
                             f"CoreTokensetBuffer.state_dict()")
        mine, cfg = self._config(), state["config"]
        keys = ["budget_bytes", "budget_fraction", "token_retention", "weighted"]
        if strict:
            keys += ["selector", "scorer", "token_choice", "temperature"]
        diff = {k: (cfg.get(k), mine[k]) for k in keys if cfg.get(k) != mine[k]}
        if diff:
            raise ValueError(f"saved buffer configuration differs (saved, this): {diff}; build "
                             f"the buffer with the saved settings"
                             + ("" if not strict else " or load with strict=False to keep "
                                "another selector or scorer"))
        codec = None
        if state["codec"] is not None:
            if state["codec"] not in _DTYPES:
                raise ValueError(f"unknown storage dtype {state['codec']!r} in the buffer state")
            n = state.get("normalization")
            codec = PixelCodec(_DTYPES[state["codec"]],
                               None if n is None else Normalization(n["mean"], n["std"]))
        layout = state["layout"]
        if layout is not None:
            layout = dict(layout, image_shape=tuple(layout["image_shape"]), grid=tuple(layout["grid"]))
        items = item_view(None, layout["text"]) if layout and layout.get("text") else ClassItems()
        groups = {}
        for gs in state["groups"]:
            g = TokenGroup.from_state(gs)
            if layout is None or codec is None:
                raise ValueError("buffer state has records but no layout or codec")
            if g.full != layout["num_tokens"] or g.values.shape[1] != layout["token_dim"]:
                raise ValueError(f"group (label {g.label}, task {g.task}) has {g.full} tokens of "
                                 f"width {g.values.shape[1]}, the layout {layout['num_tokens']} of "
                                 f"width {layout['token_dim']}")
            if g.text_fields != items.text_fields:
                raise ValueError(f"group (label {g.label}, task {g.task}) holds text fields "
                                 f"{g.text_fields}, the layout {items.text_fields}")
            if g.values.dtype != codec.dtype:
                raise ValueError(f"group (label {g.label}, task {g.task}) stores {g.values.dtype}, "
                                 f"the codec {codec.dtype}")
            if (g.label, g.task) in groups:
                raise ValueError(f"two groups for label {g.label}, task {g.task}")
            groups[(g.label, g.task)] = g
        held = sum(g.nbytes for g in groups.values())
        budget = (self.budget_bytes if self.budget_bytes is not None
                  else int(self.budget_fraction * int(state["seen_bytes"])))
        if held > budget:
            raise ValueError(f"buffer state holds {held} B, over its budget of {budget} B")
        self.seen_samples = int(state["seen_samples"])
        self.seen_bytes = int(state["seen_bytes"])
        self.experiences = int(state.get("experiences", 0))
        self.codec, self.layout, self.groups, self.items = codec, layout, groups, items
        self.normalization = None if codec is None else codec.normalization
        for name, st in state.get("rng", {}).items():
            obj = self if name == "tokens" else getattr(self, name)
            gen = getattr(obj, "generator", None)
            if isinstance(gen, torch.Generator):
                gen.set_state(st)
        self.max_size = self.num_records

    def __repr__(self) -> str:
        b = f"{self.budget_bytes} B" if self.budget_bytes else f"{self.budget_fraction:.2%} of data"
        return (f"CoreTokensetBuffer(budget={b}, t={self.token_retention}, selector={self.selector!r}, "
                f"scorer={self.scorer!r}, records={self.num_records}, nbytes={self.nbytes})")
