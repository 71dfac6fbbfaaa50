"""Token-level access to the vision tower of Hugging Face BLIP (transformers 5.x).

Accepts ``BlipVisionModel`` or any model holding one as ``vision_model``
(``BlipForQuestionAnswering``, ``BlipForConditionalGeneration``, ...); only the vision tower
runs. BLIP attention is explicit and returns its probabilities, so attention is captured at
each ``self_attn`` output; AtMan scales the key third of the ``self_attn.qkv`` output.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..normalization import CLIP_MEAN, CLIP_STD, Normalization
from .hf_vit import HFVisionAdapter

__all__ = ["HFBlipVisionAdapter", "is_hf_blip"]


def _vision_tower(model: nn.Module) -> Optional[nn.Module]:
    if not type(model).__module__.startswith("transformers."):
        return None
    from transformers import BlipVisionModel

    tower = model if isinstance(model, BlipVisionModel) else getattr(model, "vision_model", None)
    return tower if isinstance(tower, BlipVisionModel) else None


def is_hf_blip(model: nn.Module) -> bool:
    """True for ``BlipVisionModel`` or a model whose ``vision_model`` is one."""
    return _vision_tower(model) is not None


class HFBlipVisionAdapter(HFVisionAdapter):
    """:class:`~avalanche_cts.models.attention.AttentionAccess` for the BLIP vision tower.

    The tower has no classifier: ``logits`` are ``head(pooled)`` for the pooled class-token
    embedding ``(B, D)``. Without a ``head`` the pooled embedding itself stands in for logits,
    so a target selects an embedding dimension (the attention-only Rollout needs no target).
    Pass an adapter built with a task head (e.g. a linear probe) to a scorer in place of the model.

    :param model: ``BlipVisionModel`` or a BLIP model with ``vision_model``.
    :param head: optional callable ``(B, D) -> (B, C)``.
    """

    processor_normalization = Normalization(CLIP_MEAN, CLIP_STD)
    """``BlipImageProcessor``'s constants (OpenAI CLIP mean and std)."""

    def __init__(self, model: nn.Module, head: Optional[Callable[[Tensor], Tensor]] = None):
        tower = _vision_tower(model)
        if tower is None:
            raise TypeError(f"expected a BLIP vision model, got {type(model).__name__}")
        cfg = tower.config
        self.model = model
        self.module = tower
        self.head = head
        self.layers = tower.encoder.layers
        proj = tower.embeddings.patch_embedding
        self._set_geometry(cfg.image_size, cfg.patch_size, proj.in_channels, len(self.layers), cfg)

    def features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pooled (B, D), logits)``: the pooled class-token embedding and the head's output."""
        pooled = self.module(pixel_values=images).pooler_output
        return pooled, pooled if self.head is None else self.head(pooled)

    def logits(self, images: Tensor) -> Tensor:
        return self.features(images)[1]

    def patch_embeddings(self, images: Tensor) -> Tensor:
        proj = self.module.embeddings.patch_embedding
        return proj(images.to(proj.weight.dtype)).flatten(2).transpose(1, 2)

    def _prob_modules(self, blocks: Sequence[int]) -> List[nn.Module]:
        return [self.layers[i].self_attn for i in blocks]

    def _key_modules(self) -> List[nn.Module]:
        return [layer.self_attn.qkv for layer in self.layers]

    def _scale_keys(self, output: Tensor, multipliers: Tensor) -> Tensor:
        q, k, v = output.chunk(3, dim=-1)
        return torch.cat([q, k * multipliers[:, :, None], v], dim=-1)
