"""``CoreTokensetBuffer``: an Avalanche storage policy that keeps core tokensets under a byte budget.

Classification streams and image-text streams (BLIP VQA and captioning) share it; what
differs in reading an experience is in :mod:`avalanche_cts.memory.items`.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

import torch

from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.storage_policy import ExemplarsBuffer

from ..models import get_adapter, resolve_normalization
from ..scorers import TokenScorer
from ..selectors import SampleSelector
from ..tokens.normalization import Normalization, NormalizationLike
from .items import item_view
from .recipe import DEFAULT_RECIPE
from .records import TokenBatch, collate_tokens
from .settings import MemorySettings
from .store import TokenStore
from .writer import MemoryWriter

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["CoreTokensetBuffer"]

_STATE_KEYS = ("config", "seen_samples", "seen_bytes", "codec", "layout", "groups")


def _component(obj) -> str:
    """A selector's or scorer's identity: its repr without the seed (the random streams
    travel in the state's RNG part)."""
    return re.sub(r"seed=\d+(, )?", "", repr(obj))


def _from_store(name: str, doc: str = "") -> property:
    """A read-only view of the buffer's :class:`TokenStore` attribute ``name``."""
    return property(lambda self: getattr(self.store, name),
                    doc=doc or f"The store's ``{name}`` (:class:`TokenStore`).")


class CoreTokensetBuffer(ExemplarsBuffer):
    """Replay memory of core tokensets under a byte budget, class-balanced (task-balanced for
    image-text streams, which have no classes).

    After each experience, a sample selector picks samples per class and a token scorer
    ranks their patch tokens; the top ``round(t*T)`` tokens of each selected sample are
    stored at their native dtype with int16 positions (image-text records also keep their
    question and answer or caption token ids, int16, counted in the bytes). The number of
    samples follows from the budget and the token retention ``t``. When new classes arrive,
    old classes shrink by dropping their lowest-priority records, which frees their memory.

    Each experience is stored once (a second ``post_adapt`` on the same experience id is a
    ``ValueError``: it would hold its samples twice and count its bytes twice), and a buffer
    serves one strategy (:meth:`claim`; carry a memory over with ``load_state_dict``). A
    warning names budgets whose share per (class, task) group is below one record.

    ``token_retention=1`` is a whole-sample coreset; a small ``t`` with many samples is
    "core tokens"; both small is a core tokenset (paper: 10% samples x 10% tokens = 1%).

    Its settings are one :class:`~avalanche_cts.memory.settings.MemorySettings`
    (:attr:`settings`), given as ``settings=`` or built from the keyword arguments below.
    It holds a :attr:`store` (:class:`TokenStore`: records, bytes, codec, persistence) and a
    :attr:`writer` (:class:`MemoryWriter`: quotas, selection, scoring, token choice). Replay
    it with :class:`~avalanche_cts.memory.plugin.CoreTokensetReplayPlugin`; Avalanche's
    ``ReplayPlugin`` and sample-count buffers cannot hold token records (reading
    ``max_size``, which it does first, raises a ``TypeError`` saying so).

    :param settings: all of the settings below at once (then give no other keyword).
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
        ``temperature``) (Gumbel top-k); ``"compact"`` keeps the tokens nearest to the most
        relevant spot of the grid (:func:`~avalanche_cts.tokens.patches.compact_order`).
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
        settings: Optional[MemorySettings] = None,
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
        if settings is None:
            settings = MemorySettings(
                budget_fraction=budget_fraction, budget_bytes=budget_bytes,
                token_retention=token_retention, selector=selector, scorer=scorer,
                temperature=temperature, pixel_dtype=pixel_dtype, weighted=bool(weighted),
                keep_sources=bool(keep_sources), batch_size=batch_size, num_workers=num_workers,
                seed=seed, recipe=replace(DEFAULT_RECIPE, token_choice=token_choice))
        elif not isinstance(settings, MemorySettings):
            raise TypeError(f"settings must be a MemorySettings, got {type(settings).__name__}")
        self.settings = settings
        """Everything the memory was built with (:class:`MemorySettings`)."""
        s = settings
        self.store = TokenStore(
            s.budget_bytes, None if s.budget_fraction is None else float(s.budget_fraction),
            s.retention, s.weighted, s.keep_sources)
        """Records, bytes, codec and persistence (:class:`TokenStore`)."""
        self.writer = self.writer_class(s.selector, s.scorer, s.token_choice, s.temperature,
                                        s.batch_size, s.num_workers, s.seed)
        """Selection, scoring and token choice (:class:`MemoryWriter`)."""
        self.normalization: Optional[Normalization] = (
            None if normalization is None else resolve_normalization(normalization))

    writer_class = MemoryWriter
    """The writer a buffer builds (the distributed buffer shares the work over ranks)."""

    # what the store holds, read through the buffer
    groups = _from_store("groups")
    nbytes = _from_store("nbytes", "Exact bytes held by the memory.")
    num_records = _from_store("num_records", "Records held.")
    num_tokens = _from_store("num_tokens", "Tokens held.")
    budget_bytes = _from_store("budget_bytes", "Current budget in bytes.")
    codec = _from_store("codec")
    layout = _from_store("layout")
    items = _from_store("items")
    seen_samples = _from_store("seen_samples")
    seen_bytes = _from_store("seen_bytes")
    experiences = _from_store("experiences")
    experience_ids = _from_store("experience_ids", "Ids of the experiences stored, in order.")
    tokens_per_sample = _from_store("tokens_per_sample")
    dataset = _from_store("dataset", "The memory as a dataset (:meth:`TokenStore.dataset`).")
    record_bytes = _from_store("record_bytes", "Bytes of a record (:meth:`TokenStore.record_bytes`).")
    sample_bytes = _from_store("sample_bytes")
    budget_fraction = _from_store("budget_fraction")
    token_retention = _from_store("token_retention", "Fraction t of the tokens a record keeps.")
    weighted = _from_store("weighted")
    keep_sources = _from_store("keep_sources")
    # the settings the buffer was built with
    token_choice = property(lambda self: self.settings.token_choice)
    temperature = property(lambda self: float(self.settings.temperature))
    batch_size = property(lambda self: int(self.settings.batch_size))
    pixel_dtype = property(lambda self: self.settings.pixel_dtype)
    # the writer's built components (seeded objects)
    selector = property(lambda self: self.writer.selector)
    scorer = property(lambda self: self.writer.scorer)

    @property
    def max_size(self) -> int:
        """Not defined: the budget is bytes (see :attr:`budget_bytes`, :attr:`nbytes`,
        :attr:`num_records`). Avalanche's ``ReplayPlugin`` reads it first and is refused here."""
        raise TypeError(
            "CoreTokensetBuffer has a byte budget (budget_bytes, nbytes, num_records), not a sample "
            "count (max_size): Avalanche's ReplayPlugin cannot replay its token records (it "
            "concatenates whole samples with the new data); use "
            "avalanche_cts.CoreTokensetReplayPlugin(buffer) instead of ReplayPlugin"
        )

    # -------------------------------------------------------------- Avalanche
    @property
    def buffer(self) -> AvalancheDataset:
        """The memory as an AvalancheDataset of :class:`TokenMemoryDataset` items."""
        return AvalancheDataset([self.dataset()], collate_fn=self.collate)

    @buffer.setter
    def buffer(self, new_buffer):
        raise AttributeError("CoreTokensetBuffer manages its memory itself; use resize() or post_adapt()")

    def collate(self, items: List[Tuple]) -> TokenBatch:
        """Collate records into a :class:`~avalanche_cts.memory.records.TokenBatch` (stored
        token ids become the model's text tensors)."""
        return collate_tokens(items, text=self.items.text_batch if self.items.text_fields else None)

    _owner: Optional[weakref.ref] = None
    """The strategy the buffer serves (a weak reference), set by :meth:`claim`."""

    def claim(self, strategy) -> None:
        """Serve ``strategy`` from now on; ``ValueError`` when the buffer already serves
        another one (alive or not): its records belong to that strategy's run."""
        owner = None if self._owner is None else self._owner()
        if self._owner is not None and owner is not strategy:
            raise ValueError(
                f"this CoreTokensetBuffer already serves another strategy "
                f"({'a finished one' if owner is None else type(owner).__name__}) and holds its "
                f"{self.num_records} records: build a new buffer (and plugin) for each "
                f"strategy, or carry the memory over on purpose with "
                f"new_buffer.load_state_dict(buffer.state_dict())")
        self._owner = weakref.ref(strategy)

    def update(self, strategy: "SupervisedTemplate", **kwargs):
        """Add the strategy's current experience (Avalanche's storage-policy call)."""
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
        targets, tasks = items.keys(data)
        if hasattr(adapter, "check_targets") and not items.text_fields:
            adapter.check_targets(targets)
        experience = self.store.new_experience(exp)
        self.store.admit(adapter, data, items, experience, self.normalization, self.pixel_dtype)
        self.normalization = self.codec.normalization
        self.writer.write(self.store, model, device, data, targets, tasks, experience)

    def resize(self, strategy, new_size: int):
        """Keep at most ``new_size`` records, class-balanced, dropping lowest-priority ones."""
        self.store.keep_records(new_size)

    # ------------------------------------------------------------ persistence
    def _config(self) -> Dict:
        return dict(budget_bytes=self.store.fixed_bytes, budget_fraction=self.budget_fraction,
                    token_retention=self.token_retention, weighted=self.weighted,
                    token_choice=self.token_choice, temperature=self.temperature,
                    selector=_component(self.selector), scorer=_component(self.scorer))

    def _generators(self) -> Dict[str, torch.Generator]:
        """The random streams that travel with the memory: selector, scorer, token draws."""
        w = self.writer
        return {name: obj.generator for name, obj in
                (("selector", w.selector), ("scorer", w.scorer), ("tokens", w))
                if isinstance(getattr(obj, "generator", None), torch.Generator)}

    def state_dict(self) -> Dict:
        """Everything needed to resume: memory, counters, layout, codec and RNG states."""
        return dict(config=self._config(), **self.store.store_state(),
                    rng={n: g.get_state() for n, g in self._generators().items()})

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
        missing = [k for k in _STATE_KEYS if k not in state]
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
        self.store.load_store_state(state)
        self.normalization = None if self.codec is None else self.codec.normalization
        generators = self._generators()
        for name, st in state.get("rng", {}).items():
            if name in generators:
                generators[name].set_state(st)

    def __repr__(self) -> str:
        b = (f"{self.store.fixed_bytes} B" if self.store.fixed_bytes
             else f"{self.budget_fraction:.2%} of data")
        return (f"CoreTokensetBuffer(budget={b}, t={self.token_retention}, selector={self.selector!r}, "
                f"scorer={self.scorer!r}, records={self.num_records}, nbytes={self.nbytes})")
