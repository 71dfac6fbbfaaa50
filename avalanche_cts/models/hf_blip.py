"""Token-level access to the vision tower of Hugging Face BLIP (transformers 5.x).

Accepts ``BlipVisionModel`` or any model holding one as ``vision_model``
(``BlipForQuestionAnswering``, ``BlipForConditionalGeneration``, ...); only the vision tower
runs here (the text side is :mod:`.hf_blip_vl`). BLIP attention is explicit and returns its
probabilities, so attention is captured at each ``self_attn`` output; AtMan scales the key third
of the ``self_attn.qkv`` output.

Resolution: the token grid follows ``image_size`` (default: the vision config's). At another
size than the config's (the VQA checkpoint's 384 px config at 480 px), forwards pass
``interpolate_pos_encoding=True`` and the sparse path uses the same bicubically interpolated
position table; :func:`resize_position_embeddings` makes the change permanent.

Partial inputs (:data:`avalanche_cts.memory.recipe.REPLAY_MODES`): ``zero`` fills dropped tokens with 0
(the mean colour in normalised space); ``sparse`` runs only kept tokens, each with its own
position embedding, after the class token (BLIP's encoder has no attention mask, so a batch
is split into groups of equal token count); ``mask`` puts a learned mask token (plus its
position embedding) at dropped positions.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tokens.normalization import CLIP_MEAN, CLIP_STD, Normalization
from ..tokens.patches import check_patch_size, place_tokens, scatter_tokens, zero_dropped
from .hf_vit import HFVisionAdapter, _pair

__all__ = ["HFBlipVisionAdapter", "is_hf_blip", "resize_position_embeddings"]

MASK_TOKEN = "cts_mask_token"


def _vision_tower(model: nn.Module) -> Optional[nn.Module]:
    if not type(model).__module__.startswith("transformers."):
        return None
    from transformers import BlipVisionModel

    tower = model if isinstance(model, BlipVisionModel) else getattr(model, "vision_model", None)
    return tower if isinstance(tower, BlipVisionModel) else None


def is_hf_blip(model: nn.Module) -> bool:
    """True for ``BlipVisionModel`` or a model whose ``vision_model`` is one."""
    return _vision_tower(model) is not None


@torch.no_grad()
def resize_position_embeddings(model: nn.Module, image_size: int) -> None:
    """Resample a BLIP vision tower's position table to ``image_size`` (BLIP's own bicubic
    interpolation) and set the config to it, so the model runs at that size without
    ``interpolate_pos_encoding``. No-op at the current size."""
    tower = _vision_tower(model)
    if tower is None:
        raise TypeError(f"expected a BLIP model, got {type(model).__name__}")
    cfg = tower.config
    check_patch_size(image_size, image_size, cfg.patch_size)
    if image_size == cfg.image_size:
        return
    emb = tower.embeddings
    n = (image_size // cfg.patch_size) ** 2
    dummy = emb.position_embedding.new_empty(1, n + 1, emb.embed_dim)
    table = emb.interpolate_pos_encoding(dummy, image_size, image_size).detach().clone()
    emb.position_embedding = nn.Parameter(table)
    emb.image_size, emb.num_patches, emb.num_positions = image_size, n, n + 1
    cfg.image_size = image_size
    if hasattr(model, "config") and hasattr(model.config, "vision_config"):
        model.config.vision_config.image_size = image_size


class HFBlipVisionAdapter(HFVisionAdapter):
    """:class:`~avalanche_cts.models.attention.AttentionAccess` and token-level forwards of the
    BLIP vision tower.

    The tower has no classifier: ``logits`` are ``head(pooled)`` for the pooled class-token
    embedding ``(B, D)``. Without a ``head`` the pooled embedding itself stands in for logits,
    so a target selects an embedding dimension (the attention-only Rollout needs no target).
    Pass an adapter built with a task head (e.g. a linear probe) to a scorer in place of the model.

    :param model: ``BlipVisionModel`` or a BLIP model with ``vision_model``.
    :param head: optional callable ``(B, D) -> (B, C)``.
    :param image_size: input side in pixels (default: the vision config's); another size than
        the config's interpolates the position embeddings.
    """

    processor_normalization = Normalization(CLIP_MEAN, CLIP_STD)
    """``BlipImageProcessor``'s constants (OpenAI CLIP mean and std)."""

    def __init__(self, model: nn.Module, head: Optional[Callable[[Tensor], Tensor]] = None,
                 image_size: Optional[Union[int, Tuple[int, int]]] = None):
        tower = _vision_tower(model)
        if tower is None:
            raise TypeError(f"expected a BLIP vision model, got {type(model).__name__}")
        cfg = tower.config
        self.model = model
        self.module = tower
        self.head = head
        self.layers = tower.encoder.layers
        proj = tower.embeddings.patch_embedding
        size = cfg.image_size if image_size is None else image_size
        self._set_geometry(size, cfg.patch_size, proj.in_channels, len(self.layers), cfg)
        self.interpolate = self.image_size != _pair(cfg.image_size)

    def check_images(self, images: Tensor) -> None:
        try:
            super().check_images(images)
        except ValueError as e:
            raise ValueError(
                f"{e}: resize the images, or run the model at their size with "
                f"{type(self).__name__}(model, image_size=...) (position embeddings are "
                f"interpolated) or resize_position_embeddings(model, size)"
            ) from None

    # ------------------------------------------------------------- full forwards
    def tower(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(states (B, 1 + T, D), pooled (B, D))`` of full images."""
        out = self.module(pixel_values=images, interpolate_pos_encoding=self.interpolate)
        return out.last_hidden_state, out.pooler_output

    def features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pooled (B, D), logits)``: the pooled class-token embedding and the head's output."""
        pooled = self.tower(images)[1]
        return pooled, pooled if self.head is None else self.head(pooled)

    def logits(self, images: Tensor) -> Tensor:
        return self.features(images)[1]

    def patch_embeddings(self, images: Tensor) -> Tensor:
        proj = self.module.embeddings.patch_embedding
        return proj(images.to(proj.weight.dtype)).flatten(2).transpose(1, 2)

    # ---------------------------------------------------------- token forwards
    def position_table(self) -> Tensor:
        """``(1 + T, D)`` position embeddings of the class token and the grid (interpolated
        when the size differs from the config's)."""
        emb = self.module.embeddings
        if not self.interpolate:
            return emb.position_embedding[0]
        dummy = emb.position_embedding.new_empty(1, self.num_tokens + 1, self.embed_dim)
        return emb.interpolate_pos_encoding(dummy, *self.image_size)[0]

    def embed_patches(self, values: Tensor) -> Tensor:
        """``(B, K, D)`` patch embeddings of token values ``(B, K, P*P*C)`` (patchify layout)."""
        proj = self.module.embeddings.patch_embedding
        weight = proj.weight.permute(0, 2, 3, 1).reshape(proj.out_channels, -1)
        return F.linear(values.to(weight.dtype), weight, proj.bias)

    def encode(self, embeddings: Tensor) -> Tensor:
        """The encoder layers and the final layer norm on ``(B, N, D)`` embeddings."""
        x = embeddings
        for layer in self.layers:
            x = layer(x)
        return self.module.post_layernorm(x)

    def _with_class_token(self, x: Tensor, pos: Tensor) -> Tensor:
        emb = self.module.embeddings
        cls = emb.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1) + pos[0].to(x.dtype)
        return torch.cat([cls, x], dim=1)

    def sparse_states(self, values: Tensor, positions: Tensor) -> Tensor:
        """``(B, 1 + K, D)`` states from K kept tokens per sample (values ``(B, K, V)``,
        grid positions ``(B, K)``): each with its own position embedding, after the class
        token; dropped tokens cost nothing."""
        pos = self.position_table()
        x = self.embed_patches(values) + pos[1 + positions.long()].to(values.dtype)
        return self.encode(self._with_class_token(x, pos))

    def add_mask_token(self, generator: Optional[torch.Generator] = None) -> nn.Parameter:
        """Register the learned mask token ``(D,)`` on the vision tower (normal, std 0.02) if it
        has none; returns it."""
        token = getattr(self.module, MASK_TOKEN, None)
        if token is None:
            ref = self.module.embeddings.class_embedding
            init = torch.randn(self.embed_dim, generator=generator) * 0.02
            token = nn.Parameter(init.to(device=ref.device, dtype=ref.dtype))
            self.module.register_parameter(MASK_TOKEN, token)
        return token

    def masked_states(self, values: Tensor, positions: Tensor, valid: Optional[Tensor]) -> Tensor:
        """``(B, 1 + T, D)`` states with the learned mask token at every dropped position."""
        token = getattr(self.module, MASK_TOKEN, None)
        if token is None:
            raise RuntimeError(
                "mask replay needs the learned mask token: call "
                "CoreTokensetReplayPlugin.prepare_model(model) before building the optimizer")
        kept = self.embed_patches(values)
        b = kept.shape[0]
        full = token.to(kept.dtype).expand(b, self.num_tokens, -1)
        full = scatter_tokens(kept, positions, self.num_tokens, valid, fill=full)
        pos = self.position_table()
        return self.encode(self._with_class_token(full + pos[1:].to(full.dtype), pos))

    def record_states(self, values: Tensor, positions: Tensor, valid: Optional[Tensor],
                      mode: str) -> Tuple[Tensor, Optional[Tensor]]:
        """Vision states of token records (``(B, K, V)`` normalised values, ``(B, K)``
        positions, optional ``(B, K)`` padding mask) in replay ``mode``.

        :return: ``(states (B, N, D), mask)``; ``mask`` ``(B, N)`` long marks real states when
            sparse records of different lengths were padded (else ``None``).
        """
        if mode == "zero":
            images = place_tokens(values, positions, self.patch_size, self.in_chans, self.grid, valid)
            return self.tower(images)[0], None
        if mode == "mask":
            return self.masked_states(values, positions, valid), None
        if mode != "sparse":
            raise ValueError(f"replay mode must be zero, sparse or mask, got {mode!r}")
        counts = torch.full((values.shape[0],), values.shape[1], device=values.device) \
            if valid is None else valid.sum(1)
        kmax = int(counts.max())
        if int(counts.min()) == kmax:
            return self.sparse_states(values[:, :kmax], positions[:, :kmax]), None
        states = values.new_zeros(values.shape[0], 1 + kmax, self.embed_dim)
        mask = torch.zeros(values.shape[0], 1 + kmax, dtype=torch.long, device=values.device)
        for k in counts.unique().tolist():  # BLIP's encoder cannot mask: equal lengths together
            rows = (counts == k).nonzero()[:, 0]
            states[rows, :1 + k] = self.sparse_states(values[rows, :k], positions[rows, :k]).to(states.dtype)
            mask[rows, :1 + k] = 1
        return states, mask

    def zero_states(self, images: Tensor, keep: Tensor) -> Tensor:
        """States of images whose tokens outside the ``(B, T)`` bool mask ``keep`` are 0."""
        return self.tower(zero_dropped(images, keep, self.patch_size))[0]

    # ------------------------------------------------------------------ attention
    def _prob_modules(self, blocks: Sequence[int]) -> List[nn.Module]:
        return [self.layers[i].self_attn for i in blocks]

    def _key_modules(self) -> List[nn.Module]:
        return [layer.self_attn.qkv for layer in self.layers]

    def _scale_keys(self, output: Tensor, multipliers: Tensor) -> Tensor:
        q, k, v = output.chunk(3, dim=-1)
        return torch.cat([q, k * multipliers[:, :, None], v], dim=-1)
