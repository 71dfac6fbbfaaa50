"""``RunConfig``: the settings of one run, checked when it is made, and their fingerprint.

Every field is validated in ``__post_init__`` (type and range), so a bad value in Python, a
YAML config or a ``--set`` override fails before any run starts, with a message naming the
field, the value and what is accepted. :meth:`RunConfig.shaping` lists the settings that
shape a result; :func:`settings_diff` compares two of them, so a stored result is reused only
when every such setting matches.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

from .._checks import SEED_RANGE, SettingError, is_int as _is_int, is_real as _is_num, is_seed
from .._checks import plain_number
from ..memory.recipe import DEFAULT_RECIPE, REPLAY_MODES, Recipe
from ..memory.settings import MemorySettings
from ..scorers import SCORERS
from ..strategies import LR_SCHEDULES, PRECISIONS
from . import METHODS
from .facts import MethodFacts
from .options import check_options
from .pretrain import BACKBONES, PRESET_BACKBONES

__all__ = [
    "LOGGERS",
    "OPTIMIZERS",
    "RunConfig",
    "check_inference",
    "fingerprint",
    "settings_diff",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
"""Optimisers of ``RunConfig.optimizer``."""
LOGGERS = ("progress", "text", "csv", "tensorboard")
"""Avalanche loggers of ``RunConfig.loggers``."""

_NOT_SHAPING = ("out_dir", "resume", "loggers", "num_workers", "pin_memory")
"""Settings that do not change a run's numbers."""
_INFERENCE_FIELDS = ("inference", "inference_scorer", "inference_mode")
"""Settings of top-token inference (shaping only when ``inference`` is not whole)."""

_RECIPE_FIELDS = ("replay_mode", "dropout", "dropout_schedule", "dropout_fraction",
                  "dropout_tokens", "dropout_refresh", "token_choice", "retention_exponent")
"""``RunConfig`` fields that are the :class:`~avalanche_cts.memory.recipe.Recipe`'s."""
_OWN_WORDS = {
    "budget_fraction": ("budget", "a fraction in (0, 1] of the bytes of the data seen (0.01 = 1%)"),
    "token_retention": ("token_retention", "None or a fraction in (0, 1]"),
}
"""How ``RunConfig`` names a memory setting and what it accepts, where they differ from
:class:`~avalanche_cts.memory.settings.MemorySettings` (``token_retention`` may be None)."""


def _check(ok: bool, name: str, value: Any, wanted: str) -> None:
    if not ok:
        raise ValueError(f"RunConfig.{name} must be {wanted}, got {value!r}")


def _plain_numbers(cfg: "RunConfig") -> None:
    """NumPy scalars and 0-d arrays or tensors in ``cfg``'s fields become Python numbers."""
    for f in fields(cfg):
        setattr(cfg, f.name, plain_number(getattr(cfg, f.name)))


def _restated(e: SettingError) -> ValueError:
    """A memory setting's error in ``RunConfig``'s field names."""
    name, wanted = _OWN_WORDS.get(e.field, (e.field, e.wanted))
    return ValueError(f"RunConfig.{name} must be {wanted}, got {e.value!r}")


@dataclass
class RunConfig:
    """Settings of one run. ``budget`` is a fraction of the bytes of the data seen so far."""

    method: str = "core_tokenset"
    budget: float = 0.01
    token_retention: Optional[float] = None
    """Fraction t of the tokens kept per stored sample; ``None``: coreset 1, core tokens r,
    core tokenset ``r ** retention_exponent``."""
    retention_exponent: float = DEFAULT_RECIPE.retention_exponent
    """Core tokenset split of a budget r: t = r ** e tokens of r ** (1 - e) of the samples."""
    selector: str = "random"
    scorer: str = "rollout"
    token_choice: str = DEFAULT_RECIPE.token_choice
    """``topk`` (the highest scores), ``gumbel`` (sampled from the scores) or ``compact`` (a
    disc around the most relevant spot; :data:`~avalanche_cts.memory.recipe.TOKEN_CHOICES`)."""
    replay_mode: str = DEFAULT_RECIPE.replay_mode
    """``zero`` (0 in normalised space), ``sparse`` (kept tokens only) or ``mask`` (a learned
    mask token in place of dropped tokens)."""
    dropout: Optional[float] = DEFAULT_RECIPE.dropout
    """Token keep rate on new data; ``None``: the memory's retention t; 1.0: off."""
    dropout_schedule: str = DEFAULT_RECIPE.dropout_schedule
    """``fixed`` keep rate, or ``uniform``: a keep rate drawn per sample in [rate, 1]."""
    dropout_fraction: float = DEFAULT_RECIPE.dropout_fraction
    """Share of each new-data batch that gets token dropout."""
    dropout_tokens: str = DEFAULT_RECIPE.dropout_tokens
    """Which tokens dropped new data keeps: ``random`` or ``matched`` (the memory's scorer
    and token choice applied to the batch)."""
    dropout_refresh: str = DEFAULT_RECIPE.dropout_refresh
    """When matched scores are computed: ``step``, ``epoch`` or ``experience``."""
    model: str = "vit_fmnist_tiny"
    model_kwargs: Dict = field(default_factory=dict)
    epochs: int = 2
    batch_size: int = 64
    batch_size_mem: Optional[int] = None
    eval_batch_size: int = 512
    lr: float = 1e-3
    head_lr_scale: float = 1.0
    """The classifier head's learning rate as a multiple of ``lr`` (its own parameter group:
    :func:`~avalanche_cts.strategies.base.param_groups`); 1: one rate for every parameter."""
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; under torchrun each rank uses its own GPU."""
    options: Dict = field(default_factory=dict)
    """Method-specific settings (e.g. InfLoRA's rank; ``buffer``/``plugin`` keywords)."""
    pretrained: bool = False
    """Fetch timm's pretrained weights for ``model`` (see :func:`~avalanche_cts.models.loading.load_backbone`)."""
    checkpoint: Optional[str] = None
    """Local backbone weights (.safetensors, .pth/.pt/.bin, .npz), loaded instead of fetching."""
    backbone: Optional[str] = None
    """With ``pretrained=True`` on a preset: which embedded pretraining (a name in
    :data:`~avalanche_cts.harness.pretrain.BACKBONES`, e.g. ``cluttered_fmnist_partial``);
    ``None``: the preset's default."""
    optimizer: str = "adam"
    momentum: float = 0.9
    """SGD momentum."""
    lr_schedule: str = "constant"
    """``constant`` or ``cosine`` (per epoch, restarted every experience)."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (autocast)."""
    grad_accum: int = 1
    """Micro-batches of ``batch_size`` per optimizer step (effective batch = product x ranks)."""
    compile: bool = False
    """``torch.compile`` the transformer blocks."""
    num_workers: int = 0
    """DataLoader workers (training, evaluation, memory passes)."""
    pin_memory: Optional[bool] = None
    """Pinned host memory for the loaders (default: on with CUDA)."""
    loggers: List[str] = field(default_factory=list)
    """Avalanche loggers: ``progress`` (tqdm bars), ``text``, ``csv``, ``tensorboard``
    (files under ``out_dir``)."""
    out_dir: Optional[str] = None
    """Folder of this run's files: result.json, accuracy.png, state.pt, logs."""
    resume: bool = True
    """Continue from ``out_dir/state.pt`` when it exists."""
    inference: Any = "whole"
    """How test images are classified: ``"whole"`` (all tokens), or a keep rate in (0, 1]:
    each image from its top tokens under ``inference_scorer`` run on the current model (no
    label), fed in ``inference_mode``
    (:class:`~avalanche_cts.memory.inference.PartialInferencePlugin`)."""
    inference_scorer: str = "rollout"
    """Scorer of top-token inference (a registered scorer name)."""
    inference_mode: str = "mask"
    """``mask``, ``zero`` or ``sparse``: how top-token inference feeds the kept tokens."""

    def __post_init__(self):
        c = self
        _plain_numbers(c)
        _check(c.method in METHODS, "method", c.method, f"one of {METHODS.names()}")
        for name in ("model_kwargs", "options"):
            _check(isinstance(getattr(c, name), dict), name, getattr(c, name), "a mapping")
        check_options(c.method, c.options, c.facts.memory)
        _check(isinstance(c.model, str) and bool(c.model), "model", c.model,
               "a preset or timm model name")
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum"):
            v = getattr(c, name)
            _check(_is_int(v) and v >= 1, name, v, "an integer >= 1")
        _check(c.batch_size_mem is None or (_is_int(c.batch_size_mem) and c.batch_size_mem >= 1),
               "batch_size_mem", c.batch_size_mem, "None or an integer >= 1")
        _check(_is_num(c.lr) and 0 < c.lr <= 10, "lr", c.lr,
               "a positive number up to 10 (1e-4 to 1e-2 are usual)")
        _check(_is_num(c.head_lr_scale) and 0 < c.head_lr_scale <= 1000, "head_lr_scale",
               c.head_lr_scale, "a positive number up to 1000 (1: the head learns at lr)")
        _check(_is_num(c.weight_decay) and c.weight_decay >= 0, "weight_decay", c.weight_decay,
               "a number >= 0")
        _check(_is_num(c.momentum) and 0 <= c.momentum < 1, "momentum", c.momentum,
               "a number in [0, 1)")
        _check(is_seed(c.seed), "seed", c.seed, f"an integer in [{SEED_RANGE[0]}, 2**32 - 1]")
        _check(isinstance(c.device, str) and (c.device in ("cpu", "cuda", "auto", "mps")
                                              or c.device.startswith("cuda:")),
               "device", c.device, "cpu, cuda, cuda:N or auto")
        _check(c.optimizer in OPTIMIZERS, "optimizer", c.optimizer, f"one of {list(OPTIMIZERS)}")
        _check(c.lr_schedule in LR_SCHEDULES, "lr_schedule", c.lr_schedule,
               f"one of {list(LR_SCHEDULES)}")
        _check(c.precision in PRECISIONS, "precision", c.precision, f"one of {list(PRECISIONS)}")
        _check(_is_int(c.num_workers) and c.num_workers >= 0, "num_workers", c.num_workers,
               "an integer >= 0")
        for name in ("pretrained", "compile", "resume"):
            _check(isinstance(getattr(c, name), bool), name, getattr(c, name), "true or false")
        _check(c.pin_memory is None or isinstance(c.pin_memory, bool), "pin_memory",
               c.pin_memory, "None, true or false")
        for name in ("checkpoint", "out_dir"):
            v = getattr(c, name)
            _check(v is None or (isinstance(v, str) and bool(v.strip())), name, v,
                   "None or a non-empty path")
        _check(isinstance(c.loggers, list) and set(c.loggers) <= set(LOGGERS)
               and len(set(c.loggers)) == len(c.loggers), "loggers", c.loggers,
               f"a list of {list(LOGGERS)}, each once")
        if self.facts.uses_memory:
            self.memory()  # checks the memory's settings and the recipe
        else:
            _check(_is_num(c.budget) and c.budget >= 0, "budget", c.budget, "a number >= 0")
            self.recipe()
        check_inference(c)
        check_backbone(c)

    @classmethod
    def from_dict(cls, d: Dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown run settings {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    @property
    def facts(self) -> MethodFacts:
        """What the method declared when it was registered (``METHODS.facts``)."""
        return METHODS.facts(self.method)

    def recipe(self) -> Recipe:
        """The run's partial-input recipe (checked)."""
        try:
            return Recipe(**{k: getattr(self, k) for k in _RECIPE_FIELDS})
        except SettingError as e:
            raise _restated(e) from None

    def memory(self) -> MemorySettings:
        """The run's memory settings (checked): the budget as a fraction, the token retention
        (or the method's retention rule), selector, scorer, seed and recipe, with
        ``options["buffer"]`` keywords on top (but ``normalization``, which is the stream's;
        their keys are checked with the other options, :mod:`.options`). For methods without
        a memory it says so."""
        if not self.facts.uses_memory:
            raise ValueError(f"method {self.method!r} keeps no memory")
        extra = {k: v for k, v in self.options.get("buffer", {}).items() if k != "normalization"}
        try:
            return MemorySettings(
                budget_fraction=self.budget, token_retention=self.token_retention,
                retention_rule=self.facts.retention or "whole", selector=self.selector,
                scorer=self.scorer, seed=self.seed, recipe=self.recipe(),
                **{"num_workers": self.num_workers, **extra})
        except SettingError as e:
            raise _restated(e) from None

    def retention(self) -> Optional[float]:
        """Token retention t the run uses (``None`` for methods without a token memory)."""
        return self.memory().retention if self.facts.memory == "tokens" else None

    def shaping(self) -> Dict[str, Any]:
        """The settings that shape a result (everything but output and loader options; the
        inference settings only when not whole, so whole-image results keep their
        fingerprints; the head's learning-rate scale only when not 1)."""
        skip = _NOT_SHAPING + (_INFERENCE_FIELDS if self.inference == "whole" else ())
        skip += ("head_lr_scale",) if self.head_lr_scale == 1 else ()
        skip += ("backbone",) if self.backbone is None else ()
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def embedded_backbone(self):
        """The :class:`~avalanche_cts.harness.pretrain.PretrainSpec` of the embedded
        pretraining this run loads (``pretrained=True`` on a preset, no ``checkpoint``):
        ``backbone``'s, or the preset's default; ``None`` for any other model."""
        if not self.pretrained or self.checkpoint is not None or \
                self.model not in PRESET_BACKBONES:
            return None
        return PRESET_BACKBONES[self.model] if self.backbone is None else BACKBONES[self.backbone]

    def key(self) -> str:
        """A readable, file-name-safe name of the run (not unique: see :func:`fingerprint`)."""
        base = self.options.get("base")  # the PEFT strategy a memory runs on
        parts = [self.method if base is None else f"{base}+{self.method}"]
        if self.facts.uses_memory:
            parts.append(f"r{self.budget:g}")
        for name in self.facts.key_fields:
            value = getattr(self, name)
            if name == "token_retention":
                parts += [] if value is None else [f"t{value:g}"]
            else:
                parts.append(str(value))
        if self.inference != "whole":
            parts.append(f"inf{self.inference:g}-{self.inference_scorer}-{self.inference_mode}")
        parts.append(f"s{self.seed}")
        return "_".join(parts).replace("/", "-")


def check_backbone(c: RunConfig) -> None:
    """Validate ``c.backbone``: an embedded pretraining of ``c.model``, with
    ``pretrained=True`` and no ``checkpoint``."""
    if c.backbone is None:
        return
    names = sorted(n for n, s in BACKBONES.items() if s.model == c.model)
    _check(c.backbone in names, "backbone", c.backbone,
           f"an embedded pretraining of {c.model}: one of {names}" if names else
           f"None ({c.model} has no embedded pretraining)")
    _check(c.pretrained is True and c.checkpoint is None, "backbone", c.backbone,
           "set only with pretrained=true and no checkpoint (it names the weights to load)")


def check_inference(c: RunConfig) -> None:
    """Validate the inference settings of ``c`` (``inference``, ``inference_scorer``,
    ``inference_mode``)."""
    _check(c.inference == "whole" or (_is_num(c.inference) and 0 < c.inference <= 1),
           "inference", c.inference,
           "'whole' or a token keep rate in (0, 1] (top tokens by inference_scorer)")
    _check(c.inference_scorer in SCORERS, "inference_scorer", c.inference_scorer,
           f"one of {SCORERS.names()}")
    _check(c.inference_mode in REPLAY_MODES, "inference_mode", c.inference_mode,
           f"one of {list(REPLAY_MODES)}")


def fingerprint(settings: Dict[str, Any]) -> str:
    """Short stable hash of JSON-able settings."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def settings_diff(saved: Dict[str, Any], mine: Dict[str, Any], prefix: str = "") -> List[str]:
    """``["epochs: 1 -> 3", ...]``: the settings that differ (nested mappings flattened)."""
    out = []
    for k in sorted(set(saved) | set(mine), key=str):
        a, b = saved.get(k, "<unset>"), mine.get(k, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_diff(a, b, f"{prefix}{k}.")
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
                             and list(a) == list(b)):
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out
