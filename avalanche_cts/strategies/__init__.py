"""Strategies: the rehearsal-free baselines (InfLoRA, CODA-Prompt), the BLIP VQA and
captioning templates (:mod:`.vl`) and the training path (bf16, gradient accumulation,
cosine schedule, DDP) as a declared mixin (:mod:`.training`). Names are imported on first use.
"""
from .._lazy import lazy_exports

PRECISIONS = ("fp32", "bf16")
"""Training precisions of :class:`~.training.TrainingPath` (bf16: autocast)."""
LR_SCHEDULES = ("constant", "cosine")
"""Learning-rate schedules of :class:`~.training.TrainingPath` (per epoch, every experience)."""

_EXPORTS = {
    "prompt": ("CODAPrompt", "CodaPromptViT"),
    "inflora": ("DualGPM", "InfLoRA", "KVLoRALinear", "dualgpm_threshold",
                "inflora_trainable_params"),
    "base": ("PEFTTemplate", "TaskHeads", "count_trainable", "param_groups"),
    "training": ("TrainingPath",),
    "vl": ("VLCumulative", "VLNaive", "VLTemplate"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, ("LR_SCHEDULES", "PRECISIONS"))
