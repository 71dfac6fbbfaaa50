"""Token memory storage: kept token values at their native dtype, with int16 positions.

A :class:`TokenGroup` holds the records of one (class, task) in priority order, packed
(ragged) so that records may keep different numbers of tokens:

* ``values``: ``(sum_k, V)`` token values (uint8 for 8-bit images);
* ``positions``: int16 grid positions of the partial records (a record keeping all T
  tokens stores none: its tokens are in grid order);
* ``lengths``: ``(n,)`` int16 tokens per record;
* ``weights``: ``(n,)`` float32 selector weights, only when kept;
* ``texts``: for image-text records, per text field (e.g. ``question``, ``target``) the
  concatenated int16 token ids and ``(n,)`` int16 lengths (:data:`TEXT_DTYPE`).

Label and task id are stored once per group. ``nbytes`` is the exact size of all of it.
"""
from __future__ import annotations

import bisect
import itertools
from collections import abc
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from ..tokens.patches import place_tokens
from .codec import PixelCodec

__all__ = [
    "GROUP_HEADER_BYTES",
    "POSITION_DTYPE",
    "LENGTH_DTYPE",
    "TEXT_DTYPE",
    "TokenGroup",
    "TokenBatch",
    "RecordRows",
    "TextCollate",
    "TokenMemoryDataset",
    "check_group_state",
    "collate_tokens",
]

POSITION_DTYPE = torch.int16
LENGTH_DTYPE = torch.int16
TEXT_DTYPE = torch.int16
"""Token ids of stored text (BERT's 30,524-token vocabulary fits)."""
GROUP_HEADER_BYTES = 16
"""Label and task id of a group, stored as two int64."""


class TokenGroup:
    """Records of one (class, task) in priority order: the last records are dropped first.

    ``sources`` (``(n, 2)`` int64: experience, index in its dataset) is kept only when asked
    for: a diagnostic of where each record came from, not part of the memory or its bytes.
    ``text_fields`` names the token-id sequences each record also holds (image-text records).
    """

    def __init__(self, label: int, task: int, num_tokens: int, token_dim: int, dtype: torch.dtype,
                 weighted: bool, keep_sources: bool = False, text_fields: Sequence[str] = ()):
        self.label = int(label)
        self.task = int(task)
        self.full = int(num_tokens)
        self.values = torch.empty(0, token_dim, dtype=dtype)
        self.positions = torch.empty(0, dtype=POSITION_DTYPE)
        self.lengths = torch.empty(0, dtype=LENGTH_DTYPE)
        self.weights: Optional[Tensor] = torch.empty(0) if weighted else None
        self.sources: Optional[Tensor] = torch.empty(0, 2, dtype=torch.long) if keep_sources else None
        self.texts: Dict[str, Tuple[Tensor, Tensor]] = {
            f: (torch.empty(0, dtype=TEXT_DTYPE), torch.empty(0, dtype=LENGTH_DTYPE))
            for f in text_fields}
        """Per text field: ``(ids (sum_L,), lengths (n,))``."""

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def text_fields(self) -> Tuple[str, ...]:
        return tuple(self.texts)

    @property
    def num_tokens(self) -> int:
        """Tokens stored in the group."""
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        """Exact bytes held by the group (header included)."""
        n = self.values.nbytes + self.positions.nbytes + self.lengths.nbytes
        if self.weights is not None:
            n += self.weights.nbytes
        n += sum(ids.nbytes + lengths.nbytes for ids, lengths in self.texts.values())
        return n + GROUP_HEADER_BYTES

    def record_nbytes(self) -> Tensor:
        """``(n,)`` int64 exact bytes of each record (all but the group header)."""
        k = self.lengths.long()
        partial = (k < self.full).long()
        per = k * self.values.shape[1] * self.values.element_size() \
            + partial * k * self.positions.element_size() + self.lengths.element_size()
        if self.weights is not None:
            per = per + self.weights.element_size()
        for ids, lengths in self.texts.values():
            per = per + lengths.long() * ids.element_size() + lengths.element_size()
        return per

    def append(self, values: Sequence[Tensor], positions: Sequence[Tensor], weights: Sequence[float],
               sources: Optional[Tensor] = None,
               texts: Optional[Dict[str, Sequence[Tensor]]] = None):
        """Append records; ``values[i]`` is ``(k_i, V)`` in the storage dtype, ``positions[i]``
        ``(k_i,)``; ``sources`` ``(n, 2)`` (experience, index) when the group keeps them;
        ``texts[field][i]`` the token ids of record i for every text field of the group."""
        if not values:
            return
        if self.sources is not None:
            if sources is None or len(sources) != len(values):
                raise ValueError("this group keeps sources: give one (experience, index) per record")
            self.sources = torch.cat([self.sources, sources.long().reshape(-1, 2)])
        texts = texts or {}
        if set(texts) != set(self.texts) or any(len(t) != len(values) for t in texts.values()):
            raise ValueError(f"give the token ids of every record for the text fields "
                             f"{self.text_fields}, got {sorted(texts)}")
        for f, seqs in texts.items():
            top = max((int(t.max()) for t in seqs if len(t)), default=0)
            if top > torch.iinfo(TEXT_DTYPE).max:
                raise ValueError(f"token id {top} does not fit the memory's {TEXT_DTYPE} text ids")
            ids, lengths = self.texts[f]
            self.texts[f] = (torch.cat([ids, *[t.to(TEXT_DTYPE) for t in seqs]]),
                             torch.cat([lengths, torch.tensor([len(t) for t in seqs],
                                                              dtype=LENGTH_DTYPE)]))
        lengths = torch.tensor([len(p) for p in positions], dtype=LENGTH_DTYPE)
        self.values = torch.cat([self.values, *values])
        partial = [p.to(POSITION_DTYPE) for p in positions if len(p) < self.full]
        self.positions = torch.cat([self.positions, *partial])
        self.lengths = torch.cat([self.lengths, lengths])
        if self.weights is not None:
            self.weights = torch.cat([self.weights, torch.as_tensor(weights, dtype=torch.float32)])

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` records; the rest is released (copies, not views)."""
        if n >= len(self):
            return
        k = int(self.lengths[:n].long().sum())
        kp = int(self._partial_lengths()[:n].sum())
        self.values = self.values[:k].clone()
        self.positions = self.positions[:kp].clone()
        self.lengths = self.lengths[:n].clone()
        if self.weights is not None:
            self.weights = self.weights[:n].clone()
        if self.sources is not None:
            self.sources = self.sources[:n].clone()
        for f, (ids, lengths) in self.texts.items():
            self.texts[f] = (ids[:int(lengths[:n].long().sum())].clone(), lengths[:n].clone())

    def _partial_lengths(self) -> Tensor:
        lengths = self.lengths.long()
        return torch.where(lengths < self.full, lengths, torch.zeros_like(lengths))

    def offsets(self) -> Tuple[Tensor, Tensor]:
        """``(n + 1,)`` start offsets of the records in ``values`` and in ``positions``
        (derived, not stored)."""
        zero = torch.zeros(1, dtype=torch.long)
        return (torch.cat([zero, self.lengths.long().cumsum(0)]),
                torch.cat([zero, self._partial_lengths().cumsum(0)]))

    def record(self, i: int, offsets: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """``(values (k, V), positions (k,))`` of record ``i``."""
        vo, po = self.offsets() if offsets is None else offsets
        a, b = int(vo[i]), int(vo[i + 1])
        if b - a == self.full:
            return self.values[a:b], torch.arange(self.full, dtype=POSITION_DTYPE)
        return self.values[a:b], self.positions[int(po[i]):int(po[i + 1])]

    def text_offsets(self) -> Dict[str, Tensor]:
        """Per text field, ``(n + 1,)`` start offsets of the records' ids (derived)."""
        zero = torch.zeros(1, dtype=torch.long)
        return {f: torch.cat([zero, lengths.long().cumsum(0)])
                for f, (_, lengths) in self.texts.items()}

    def record_text(self, i: int, offsets: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """Token ids (int64) of record ``i`` per text field."""
        offsets = self.text_offsets() if offsets is None else offsets
        return {f: ids[int(offsets[f][i]):int(offsets[f][i + 1])].long()
                for f, (ids, _) in self.texts.items()}

    def state_dict(self) -> Dict:
        return {
            "label": self.label,
            "task": self.task,
            "num_tokens": self.full,
            "values": self.values,
            "positions": self.positions,
            "lengths": self.lengths,
            "weights": self.weights,
            "sources": self.sources,
            "texts": {f: {"ids": ids, "lengths": lengths} for f, (ids, lengths) in self.texts.items()},
        }

    @classmethod
    def from_state(cls, state: Dict) -> "TokenGroup":
        """A group from :meth:`state_dict` output, after checking it is consistent."""
        check_group_state(state)
        texts = state.get("texts") or {}
        g = cls(state["label"], state["task"], state["num_tokens"], state["values"].shape[1],
                state["values"].dtype, state["weights"] is not None, text_fields=tuple(texts))
        g.texts = {f: (t["ids"].clone(), t["lengths"].clone()) for f, t in texts.items()}
        g.values = state["values"].clone()
        g.positions = state["positions"].clone()
        g.lengths = state["lengths"].clone()
        g.weights = None if state["weights"] is None else state["weights"].clone()
        g.sources = None if state.get("sources") is None else state["sources"].clone()
        return g


def check_group_state(state: Dict) -> None:
    """Raise ``ValueError`` naming the first inconsistency of a saved group: missing keys,
    dtypes, lengths vs values vs positions, positions outside the grid."""
    keys = ("label", "task", "num_tokens", "values", "positions", "lengths", "weights")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"saved token group lacks {missing}")
    where = f"group (label {state['label']}, task {state['task']})"
    t, values, pos, lengths = state["num_tokens"], state["values"], state["positions"], state["lengths"]
    for name, x, dtype in (("positions", pos, POSITION_DTYPE), ("lengths", lengths, LENGTH_DTYPE)):
        if not isinstance(x, Tensor) or x.dtype != dtype or x.dim() != 1:
            raise ValueError(f"{where}: {name} must be a 1-D {dtype} tensor")
    if not isinstance(values, Tensor) or values.dim() != 2:
        raise ValueError(f"{where}: values must be a 2-D (tokens, token width) tensor")
    if not isinstance(t, int) or t < 1:
        raise ValueError(f"{where}: num_tokens must be a positive integer, got {t!r}")
    k = lengths.long()
    if len(k) and (int(k.min()) < 1 or int(k.max()) > t):
        raise ValueError(f"{where}: record lengths must be in [1, {t}], got {int(k.min())}..{int(k.max())}")
    if int(k.sum()) != values.shape[0]:
        raise ValueError(f"{where}: lengths sum to {int(k.sum())} tokens but {values.shape[0]} values are stored")
    partial = int(torch.where(k < t, k, torch.zeros_like(k)).sum())
    if partial != pos.shape[0]:
        raise ValueError(f"{where}: partial records need {partial} positions, {pos.shape[0]} are stored")
    if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= t):
        raise ValueError(f"{where}: positions must be in [0, {t}) (the token grid), got "
                         f"{int(pos.min())}..{int(pos.max())}")
    w = state["weights"]
    if w is not None and (not isinstance(w, Tensor) or w.shape != lengths.shape):
        raise ValueError(f"{where}: weights must hold one value per record")
    src = state.get("sources")
    if src is not None and (not isinstance(src, Tensor) or tuple(src.shape) != (len(lengths), 2)):
        raise ValueError(f"{where}: sources must be (records, 2)")
    for f, t in (state.get("texts") or {}).items():
        ids, tl = t.get("ids"), t.get("lengths")
        if not (isinstance(ids, Tensor) and ids.dtype == TEXT_DTYPE and isinstance(tl, Tensor)
                and tl.dtype == LENGTH_DTYPE and tl.shape == lengths.shape
                and int(tl.long().sum()) == len(ids)):
            raise ValueError(f"{where}: text field {f!r} needs {TEXT_DTYPE} ids and one "
                             f"{LENGTH_DTYPE} length per record that sum to the ids stored")


@dataclass
class TokenBatch:
    """A padded batch of memory records.

    :ivar values: ``(B, K, V)`` stored values (storage dtype).
    :ivar positions: ``(B, K)`` int64 positions.
    :ivar valid: ``(B, K)`` bool, False on padding (``None`` when all records have K tokens).
    :ivar labels: ``(B,)`` int64; ``tasks``: ``(B,)`` int64; ``weights``: ``(B,)`` float32.
    :ivar text: image-text records: the model's text tensors (e.g. a
        :class:`~avalanche_cts.models.blip_text.VLCollator` batch of the stored ids), else ``None``.
    """

    values: Tensor
    positions: Tensor
    valid: Optional[Tensor]
    labels: Tensor
    tasks: Tensor
    weights: Tensor
    text: Optional[Dict[str, Tensor]] = None

    def to(self, device, non_blocking: bool = False) -> "TokenBatch":
        """The batch on ``device`` (stored values stay in their dtype: decode after the copy)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "TokenBatch":
        """The batch in page-locked host memory (what a ``DataLoader(pin_memory=True)`` calls),
        so that ``to(cuda, non_blocking=True)`` copies without blocking the host."""
        return self._map(Tensor.pin_memory)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "TokenBatch":
        """``fn`` applied to every tensor of the batch (``None`` fields stay ``None``)."""
        move = lambda t: None if t is None else fn(t)  # noqa: E731
        text = None if self.text is None else {k: move(v) for k, v in self.text.items()}
        return TokenBatch(*(move(getattr(self, f)) for f in
                            ("values", "positions", "valid", "labels", "tasks", "weights")), text)

    def images(self, codec: PixelCodec, patch_size: int, channels: int, grid: Tuple[int, int],
               dtype: torch.dtype = torch.float32) -> Tensor:
        """``(B, C, H, W)`` model inputs with the kept tokens at their positions and 0 (the mean
        colour in normalised space) elsewhere."""
        return place_tokens(codec.decode(self.values, dtype), self.positions, patch_size, channels,
                            grid, self.valid)


TextCollate = Callable[[List[Dict[str, Tensor]]], Dict[str, Tensor]]
"""Turns the stored token ids of records (one dict per record) into the model's text tensors."""


@dataclass(eq=False)
class RecordRows(abc.Sequence):
    """Memory records of one batch, padded to the longest with zeros: what
    :meth:`TokenMemoryDataset.__getitems__` returns and :func:`collate_tokens` turns into a
    :class:`TokenBatch`. Row ``i`` reads as the item ``dataset[i]`` would be, so that any
    ``collate_fn`` (or torch's ``Subset``, ``StackDataset``) may take it as the list of items.

    :ivar values: ``(B, K, V)`` stored values (storage dtype), 0 past each record's length.
    :ivar positions: ``(B, K)`` int64 grid positions, 0 past each record's length.
    :ivar lengths: ``(B,)`` int64 tokens per record.
    :ivar labels: ``(B,)`` int64; ``tasks``: ``(B,)`` int64; ``weights``: ``(B,)`` float32.
    :ivar texts: image-text records: per record its token ids per text field, else ``None``.
    """

    values: Tensor
    positions: Tensor
    lengths: Tensor
    labels: Tensor
    tasks: Tensor
    weights: Tensor
    texts: Optional[List[Dict[str, Tensor]]] = None

    @classmethod
    def from_items(cls, items: Sequence[Tuple]) -> "RecordRows":
        """Rows of ``(values (k,V), positions (k,), label, task, weight[, token ids])`` items."""
        return cls(
            pad_sequence([it[0] for it in items], batch_first=True),
            pad_sequence([it[1] for it in items], batch_first=True).long(),
            torch.tensor([len(it[1]) for it in items]),
            torch.tensor([it[2] for it in items], dtype=torch.long),
            torch.tensor([it[3] for it in items], dtype=torch.long),
            torch.tensor([it[4] for it in items], dtype=torch.float32),
            [it[5] for it in items] if len(items[0]) > 5 else None,
        )

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def __getitem__(self, i: int) -> Tuple:
        """The item of row ``i``: ``(values (k,V), positions (k,) int16, label, task, weight[,
        token ids])``, as :meth:`TokenMemoryDataset.__getitem__` gives it."""
        k = int(self.lengths[i])
        item = (self.values[i, :k], self.positions[i, :k].to(POSITION_DTYPE), int(self.labels[i]),
                int(self.tasks[i]), float(self.weights[i]))
        return item if self.texts is None else (*item, self.texts[i])

    def batch(self, text: Optional[TextCollate] = None) -> TokenBatch:
        """The :class:`TokenBatch` of the rows (``valid`` is ``None`` when no row is padded);
        the token ids of image-text records go through ``text``."""
        valid = torch.arange(self.values.shape[1])[None] < self.lengths[:, None]
        texts = None
        if self.texts is not None:
            if text is None:
                raise ValueError("these records hold text: pass the collate function of its ids")
            texts = text(self.texts)
        return TokenBatch(self.values, self.positions, None if bool(valid.all()) else valid,
                          self.labels, self.tasks, self.weights, texts)


def collate_tokens(items: Sequence[Tuple], text: Optional[TextCollate] = None) -> TokenBatch:
    """Collate ``(values (k,V), positions (k,), label, task, weight[, token ids])`` items (or
    the :class:`RecordRows` of :meth:`TokenMemoryDataset.__getitems__`), padding to max k with
    zeros; the token-id dicts of image-text records go through ``text``."""
    rows = items if isinstance(items, RecordRows) else RecordRows.from_items(items)
    return rows.batch(text)


class TokenMemoryDataset(Dataset):
    """Flat view over token groups: item ``i`` is ``(values, positions, label, task, weight)``,
    followed by the record's token ids per text field for image-text records.
    :meth:`__getitems__` reads a whole batch with one gather per group."""

    def __init__(self, groups: List[TokenGroup]):
        self.groups = [g for g in groups if len(g)]
        self._offsets = [g.offsets() for g in self.groups]
        self._text_offsets = [g.text_offsets() for g in self.groups]
        self._starts = [0, *itertools.accumulate(len(g) for g in self.groups)]
        """First item of each group, and the item count last."""
        self._table, self._weights = _record_table(self.groups, self._offsets)
        self._texts = any(g.texts for g in self.groups)
        self._scratch: Optional[Tuple[Tensor, Tensor]] = None

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> Tuple[int, int]:
        """``(group, record in the group)`` of item ``i``."""
        gi = bisect.bisect_right(self._starts, i) - 1
        return gi, i - self._starts[gi]

    def _record_text(self, i: int) -> Dict[str, Tensor]:
        gi, j = self._locate(i)
        return self.groups[gi].record_text(j, self._text_offsets[gi])

    def __getitem__(self, i: int):
        gi, j = self._locate(i)
        g = self.groups[gi]
        values, positions = g.record(j, self._offsets[gi])
        w = 1.0 if g.weights is None else float(g.weights[j])
        if g.texts:
            return values, positions, g.label, g.task, w, g.record_text(j, self._text_offsets[gi])
        return values, positions, g.label, g.task, w

    def __getitems__(self, indices: Sequence[int]) -> RecordRows:
        """The records at ``indices`` (non-negative), in that order, read with one gather per
        group (what a ``DataLoader`` calls for a batch): row by row equal to
        ``[self[i] for i in indices]``, and :func:`collate_tokens` of them equals that of
        the items."""
        if not len(indices):
            raise ValueError("read at least one record (got no indices)")
        idx = torch.as_tensor(indices, dtype=torch.long)
        group, value_start, position_start, lengths, partial, labels, tasks = \
            self._table[idx].unbind(1)
        kmax = int(lengths.max())
        slot = torch.arange(kmax)
        # (B, K) token of each slot in its record (the record's last token again on padding)
        offset = torch.minimum(slot, (lengths - 1)[:, None])
        partial, valid = partial.bool()[:, None], slot < lengths[:, None]
        values, stored = self._gather(group, value_start[:, None] + offset,
                                      torch.where(partial, position_start[:, None] + offset, 0),
                                      valid)
        # the tokens of a full-length record are in grid order (it stores no positions)
        positions = torch.where(valid & ~partial, slot, stored.long())
        texts = [self._record_text(i) for i in indices] if self._texts else None
        return RecordRows(values, positions, lengths, labels, tasks, self._weights[idx], texts)

    def _gather(self, group: Tensor, value_index: Tensor, position_index: Tensor,
                valid: Tensor) -> Tuple[Tensor, Tensor]:
        """``(values (B, K, V), positions (B, K) int16)`` at per-row indices ``(B, K)`` into
        each row's group (``group`` ``(B,)``), 0 where not ``valid`` ``(B, K)``: one
        ``index_select`` per group into rows sorted by group, then one that puts them in batch
        order and pads from a zero row. The positions of records that store none (full-length
        ones) are arbitrary."""
        b, k = value_index.shape
        order = torch.argsort(group)
        counts = torch.bincount(group, minlength=len(self.groups)).tolist()
        value_index, position_index = value_index[order].flatten(), position_index[order].flatten()
        values, positions = self._sorted_rows(b * k)
        a = 0
        for g, c in zip(self.groups, counts):
            at = slice(a * k, (a + c) * k)
            a += c
            torch.index_select(g.values, 0, value_index[at], out=values[at])
            if len(g.positions):
                torch.index_select(g.positions, 0, position_index[at], out=positions[at])
        # slot s of row i is slot s of sorted row rank[i], or the zero row (b * k) on padding
        rank = torch.argsort(order)
        take = torch.where(valid, rank[:, None] * k + torch.arange(k), b * k).flatten()
        return (values.index_select(0, take).view(b, k, -1),
                positions.index_select(0, take).view(b, k))

    def _sorted_rows(self, n: int) -> Tuple[Tensor, Tensor]:
        """``(n + 1, V)`` values and ``(n + 1,)`` int16 positions to gather ``n`` token slots
        into, the last row 0. A scratch kept between batches (so a dataset reads one batch at
        a time): a fresh megabyte per batch costs page faults where the allocator returns it."""
        if self._scratch is None or len(self._scratch[1]) <= n:
            first = self.groups[0].values
            self._scratch = (first.new_empty(n + 1, first.shape[1]),
                             torch.empty(n + 1, dtype=POSITION_DTYPE))
        values, positions = (t[:n + 1] for t in self._scratch)
        values[n] = 0
        positions[n] = 0
        return values, positions


def _record_table(groups: Sequence[TokenGroup],
                  offsets: Sequence[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
    """Per record of the flat view, ``(n, 7)`` int64 columns ``group, start in the group's
    values, start in its positions, length, partial (0/1), label, task``, and ``(n,)``
    float32 weights (1 for unweighted groups)."""
    if not groups:
        return torch.empty(0, 7, dtype=torch.long), torch.empty(0)
    cols, weights = [], []
    for gi, (g, (vo, po)) in enumerate(zip(groups, offsets)):
        n, k = len(g), g.lengths.long()
        cols.append(torch.stack([torch.full((n,), gi), vo[:-1], po[:-1], k, (k < g.full).long(),
                                 torch.full((n,), g.label), torch.full((n,), g.task)], 1))
        weights.append(torch.ones(n) if g.weights is None else g.weights.float())
    return torch.cat(cols), torch.cat(weights)
