"""``TokenStore``: what a core tokenset memory holds and how it is kept.

Records grouped per (class, task), the byte budget and the exact bytes held, the pixel codec
and token layout fixed at the first experience, shrinking when classes arrive, and
persistence (``state_dict`` / ``load_state_dict``, checked before anything changes). What
goes in is decided by :class:`~avalanche_cts.memory.writer.MemoryWriter`;
:class:`~avalanche_cts.memory.buffer.CoreTokensetBuffer` is the two together as an
Avalanche storage policy.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..tokens.normalization import Normalization
from ..tokens.patches import keep_count
from .budget import water_fill
from .codec import STORAGE_DTYPES, PixelCodec
from .items import ClassItems, item_view
from .records import GROUP_HEADER_BYTES, LENGTH_DTYPE, POSITION_DTYPE, TokenGroup, TokenMemoryDataset

__all__ = ["TokenStore", "check_finite"]

GroupKey = Tuple[int, int]
"""(label, task) of a group of records."""


def check_finite(images: Tensor, indices: List[int], experience: int) -> None:
    """Raise naming the first sample whose pixels are NaN or infinite."""
    bad = (~torch.isfinite(images.flatten(1))).any(1) if images.is_floating_point() else None
    if bad is not None and bool(bad.any()):
        i = indices[int(bad.nonzero()[0])]
        raise ValueError(
            f"sample {i} of experience {experience} has NaN or infinite pixels: the memory "
            f"stores only finite images; fix or drop that sample in the dataset"
        )


class TokenStore:
    """Token records under a byte budget (see the module docstring).

    :param fixed_bytes: a fixed budget in bytes, or ``None`` with ``budget_fraction``.
    :param budget_fraction: budget as a fraction of the bytes of all data seen so far.

    :attr:`budget_bytes` is the budget in bytes it holds to now (the fixed one, or the
    fraction of the bytes seen).
    :param token_retention: fraction t of the T tokens a record keeps.
    :param weighted: records also store their selector weight (4 bytes each).
    :param keep_sources: records remember (experience, index), not counted in the bytes.
    """

    def __init__(self, fixed_bytes: Optional[int], budget_fraction: Optional[float],
                 token_retention: float, weighted: bool = False, keep_sources: bool = False):
        self.fixed_bytes = None if fixed_bytes is None else int(fixed_bytes)
        self.budget_fraction = budget_fraction
        self.token_retention = token_retention
        self.weighted = weighted
        self.keep_sources = keep_sources
        self.groups: Dict[GroupKey, TokenGroup] = {}
        self.seen_samples = 0
        self.seen_bytes = 0
        self.experiences = 0
        self.experience_ids: List[int] = []
        """Ids of the experiences stored, in order (each is stored once)."""
        self.codec: Optional[PixelCodec] = None
        self.layout: Optional[Dict[str, object]] = None
        self.items = ClassItems()
        """How experiences are read (:mod:`avalanche_cts.memory.items`), set at the first update."""

    # ------------------------------------------------------------- accounting
    @property
    def budget_bytes(self) -> int:
        """Current budget in bytes."""
        return self._budget_bytes(self.seen_bytes)

    def _budget_bytes(self, seen_bytes: int) -> int:
        """The budget in bytes after ``seen_bytes`` bytes of data were seen."""
        if self.fixed_bytes is not None:
            return self.fixed_bytes
        return int(self.budget_fraction * seen_bytes)

    @property
    def nbytes(self) -> int:
        """Exact bytes held by the memory."""
        return sum(g.nbytes for g in self.groups.values())

    @property
    def num_records(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def classes(self) -> List[int]:
        """The labels the memory holds records of, sorted."""
        return sorted({label for label, _ in self.groups})

    @property
    def num_tokens(self) -> int:
        return sum(g.num_tokens for g in self.groups.values())

    def token_bytes(self) -> int:
        """Bytes of one stored token of a partial record: its values plus its int16 position."""
        self._require_layout()
        v = self.layout["token_dim"]
        return v * self.codec.itemsize + torch.empty(0, dtype=POSITION_DTYPE).element_size()

    def record_bytes(self, k: Optional[int] = None) -> int:
        """Bytes of one record keeping ``k`` tokens (default: the memory's ``round(t*T)``).

        A record keeping all T tokens needs no positions (its tokens are in grid order).
        """
        self._require_layout()
        k = self.tokens_per_sample if k is None else k
        extra = torch.empty(0, dtype=LENGTH_DTYPE).element_size() + (4 if self.weighted else 0)
        if k == self.layout["num_tokens"]:
            return k * self.layout["token_dim"] * self.codec.itemsize + extra
        return k * self.token_bytes() + extra

    def text_floor(self) -> int:
        """Fewest bytes the text of a record takes (one length per text field)."""
        return len(self.items.text_fields) * torch.empty(0, dtype=LENGTH_DTYPE).element_size()

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

    # ------------------------------------------------------------ experiences
    def new_experience(self, exp) -> int:
        """The id of experience ``exp`` (its ``current_experience``, else the count of
        experiences stored); ``ValueError`` when the memory already holds that experience:
        storing it again would hold its samples twice and count its bytes twice."""
        experience = int(getattr(exp, "current_experience", self.experiences))
        if experience in self.experience_ids:
            raise ValueError(
                f"experience {experience} is already in the memory (stored after an earlier "
                f"train or post_adapt on it; stored: {self.experience_ids}): a second time "
                f"would store its samples twice and count its bytes twice in the budget; train "
                f"each experience once (raise train_epochs to train longer), and give each run "
                f"or stream its own buffer")
        return experience

    def admit(self, adapter, data, items, experience: int,
              normalization: Optional[Normalization], pixel_dtype: Optional[str]) -> None:
        """Count experience ``data`` (read through the item view ``items``) as seen, fixing
        the layout and codec at the first one.

        :raises TypeError, ValueError: for items the memory cannot hold (another item kind
            than before, images that are not ``(C, H, W)`` tensors, a changed layout).
        """
        if self.layout is not None and type(items) is not type(self.items):
            raise TypeError(f"the memory holds {type(self.items).__name__} records; this "
                            f"experience has {type(items).__name__}: one buffer serves one stream")
        self.items = items
        x = items.image(data[0])
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            raise TypeError(
                f"experience items must start with a (C, H, W) float image tensor (normalised "
                f"model inputs), got {type(x).__name__} {tuple(getattr(x, 'shape', ()))} "
                f"{getattr(x, 'dtype', '')}: add ToTensor() (and Normalize) to the eval "
                f"transforms"
            )
        adapter.check_images(x[None])
        layout = dict(
            image_shape=tuple(x.shape), patch_size=adapter.patch_size, grid=adapter.grid,
            num_tokens=adapter.num_tokens, channels=adapter.in_chans,
            token_dim=adapter.patch_size ** 2 * adapter.in_chans,
        )
        if items.text_fields:
            layout["text"] = items.state()
        if self.layout is None:
            norm = (normalization or adapter.normalization).for_channels(adapter.in_chans)
            if pixel_dtype:
                codec = PixelCodec(STORAGE_DTYPES[pixel_dtype], norm)
            else:
                sample = range(min(len(data), 64))
                images = torch.stack([items.image(data[i]) for i in sample])
                check_finite(images, list(sample), experience)
                codec = PixelCodec.infer(images, norm)
                if codec.dtype != torch.uint8:
                    _not_8bit(images, norm, codec)
            self.layout, self.codec = layout, codec
        elif layout != self.layout:
            raise ValueError(
                f"image/patch layout changed between experiences: stored {self.layout}, "
                f"now {layout}; one buffer serves one model and image size"
            )
        self.experiences += 1
        self.experience_ids.append(experience)
        self.seen_samples += len(data)
        self.seen_bytes += len(data) * self.sample_bytes()

    def group(self, key: GroupKey) -> TokenGroup:
        """The group of ``key``, created empty when new."""
        if key not in self.groups:
            self.groups[key] = TokenGroup(*key, self.layout["num_tokens"], self.layout["token_dim"],
                                          self.codec.dtype, self.weighted, self.keep_sources,
                                          self.items.text_fields)
        return self.groups[key]

    def shrink(self, key: GroupKey, quota: int) -> None:
        """Drop the lowest-priority records of group ``key`` until it fits ``quota`` bytes."""
        group = self.groups[key]
        if group.nbytes <= quota:
            return
        fits = (GROUP_HEADER_BYTES + group.record_nbytes().cumsum(0)) <= quota
        group.truncate(int(fits.sum()))

    def drop_empty(self) -> None:
        self.groups = {k: g for k, g in self.groups.items() if len(g)}

    def keep_records(self, n: int) -> None:
        """Keep at most ``n`` records, class-balanced, dropping lowest-priority ones."""
        if n < 0:
            raise ValueError(f"new_size must be >= 0, got {n}")
        keys = sorted(self.groups)
        for key, share in zip(keys, water_fill(n, [len(self.groups[k]) for k in keys])):
            self.groups[key].truncate(share)
        self.drop_empty()

    def dataset(self) -> TokenMemoryDataset:
        """Plain torch dataset over all records (collate with :func:`collate_tokens`)."""
        return TokenMemoryDataset([self.groups[k] for k in sorted(self.groups)])

    # ------------------------------------------------------------ persistence
    def store_state(self) -> Dict:
        """The records, counters, layout and codec (see :meth:`load_store_state`)."""
        norm = self.codec.normalization if self.codec is not None else None
        return {
            "seen_samples": self.seen_samples,
            "seen_bytes": self.seen_bytes,
            "experiences": self.experiences,
            "experience_ids": list(self.experience_ids),
            "codec": None if self.codec is None else str(self.codec.dtype).replace("torch.", ""),
            "normalization": None if norm is None else dict(mean=list(norm.mean), std=list(norm.std)),
            "layout": self.layout,
            "groups": [g.state_dict() for _, g in sorted(self.groups.items())],
        }

    def load_store_state(self, state: Dict) -> None:
        """Restore :meth:`store_state` after checking it (nothing changes when it fails).

        :raises ValueError: naming what is wrong (codec, layout, a group, the bytes held).
        """
        codec = _codec(state)
        layout = state["layout"]
        if layout is not None:
            layout = dict(layout, image_shape=tuple(layout["image_shape"]), grid=tuple(layout["grid"]))
        items = item_view(None, layout["text"]) if layout and layout.get("text") else ClassItems()
        groups = _groups(state["groups"], layout, codec, items)
        held = sum(g.nbytes for g in groups.values())
        budget = self._budget_bytes(int(state["seen_bytes"]))
        if held > budget:
            raise ValueError(f"buffer state holds {held} B, over its budget of {budget} B")
        self.seen_samples = int(state["seen_samples"])
        self.seen_bytes = int(state["seen_bytes"])
        self.experiences = int(state.get("experiences", 0))
        self.experience_ids = [int(e) for e in state.get("experience_ids", [])]
        self.codec, self.layout, self.groups, self.items = codec, layout, groups, items


def _not_8bit(images: Tensor, norm: Normalization, codec: PixelCodec) -> None:
    """Refuse 0-255 pixels fed as model inputs; warn that other float images are stored at
    their own dtype (more bytes per record, fewer records under the budget)."""
    x = norm.denormalize(images.detach().float())
    lo, hi = float(x.min()), float(x.max())
    if lo >= -1e-3 and 1.5 < hi <= 255.001 and bool((x - x.round()).abs().max() < 1e-3):
        raise ValueError(
            f"the images hold 0-255 pixel values ({lo:g}..{hi:g} after undoing the "
            f"normalisation {norm.mean}, {norm.std}), not the model's normalised inputs: scale "
            f"them to [0, 1] and normalise them (e.g. ToTensor() and Normalize with the model's "
            f"constants), or pass CoreTokensetBuffer(normalization=...) if the stream uses other "
            f"constants")
    warnings.warn(
        f"the images are not 8-bit pixels after undoing the normalisation {norm.mean}, "
        f"{norm.std} (values {lo:.3g}..{hi:.3g}): the memory stores them as {codec.dtype} "
        f"({codec.itemsize} bytes per value instead of 1), so its budget holds fewer records; "
        f"pass CoreTokensetBuffer(normalization=...) if the stream uses other constants, or "
        f"pixel_dtype= to choose the storage", stacklevel=4)


def _codec(state: Dict) -> Optional[PixelCodec]:
    if state["codec"] is None:
        return None
    if state["codec"] not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {state['codec']!r} in the buffer state")
    n = state.get("normalization")
    return PixelCodec(STORAGE_DTYPES[state["codec"]],
                      None if n is None else Normalization(n["mean"], n["std"]))


def _groups(states: List[Dict], layout, codec, items) -> Dict[GroupKey, TokenGroup]:
    """Groups from their saved states, each checked against the layout and codec."""
    groups: Dict[GroupKey, TokenGroup] = {}
    for gs in states:
        g = TokenGroup.from_state(gs)
        where = f"group (label {g.label}, task {g.task})"
        if layout is None or codec is None:
            raise ValueError("buffer state has records but no layout or codec")
        if g.full != layout["num_tokens"] or g.values.shape[1] != layout["token_dim"]:
            raise ValueError(f"{where} has {g.full} tokens of width {g.values.shape[1]}, the "
                             f"layout {layout['num_tokens']} of width {layout['token_dim']}")
        if g.text_fields != items.text_fields:
            raise ValueError(f"{where} holds text fields {g.text_fields}, the layout "
                             f"{items.text_fields}")
        if g.values.dtype != codec.dtype:
            raise ValueError(f"{where} stores {g.values.dtype}, the codec {codec.dtype}")
        if (g.label, g.task) in groups:
            raise ValueError(f"two groups for label {g.label}, task {g.task}")
        groups[(g.label, g.task)] = g
    return groups
