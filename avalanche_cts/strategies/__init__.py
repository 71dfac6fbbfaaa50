"""Rehearsal-free baselines as Avalanche strategies: InfLoRA and CODA-Prompt."""
from .base import PEFTTemplate, TaskHeads, count_trainable
from .inflora import DualGPM, InfLoRA, KVLoRALinear, dualgpm_threshold, inflora_trainable_params
from .prompt import CODAPrompt, CodaPromptViT

__all__ = [
    "PEFTTemplate",
    "TaskHeads",
    "count_trainable",
    "DualGPM",
    "InfLoRA",
    "KVLoRALinear",
    "dualgpm_threshold",
    "inflora_trainable_params",
    "CODAPrompt",
    "CodaPromptViT",
]
