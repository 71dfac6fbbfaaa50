"""Token-level access to timm ``VisionTransformer`` models.

The adapter does not wrap or copy the model: it reads the model's own modules, so the
model a strategy trains is the one that replays tokens. A partial input (kept tokens with
their grid positions) runs in one of three modes (:data:`avalanche_cts.memory.recipe.REPLAY_MODES`):

* ``zero`` (paper): dropped tokens are 0 in the normalised input image (the mean colour),
  sequence length T;
* ``sparse`` (MAE encoder): only kept tokens, with their own position embeddings, plus the
  prefix tokens go through the blocks; dropped tokens cost nothing;
* ``mask`` (MAE-style mask token): dropped tokens are replaced by a learned embedding
  (``model.cts_mask_token``, added by :meth:`TimmViTAdapter.add_mask_token`) plus their
  position embedding, sequence length T.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tokens.normalization import Normalization
from ..tokens.patches import place_tokens, scatter_tokens, take_kept, take_tokens, zero_dropped
from .attention import AttentionAccess, fused_attention_off
from .partial import PartialInputs

__all__ = ["MASK_TOKEN", "TimmAttentionAccess", "TimmViTAdapter"]

MASK_TOKEN = "cts_mask_token"
"""Name of the learned mask-token parameter ``(1, 1, D)`` on a model using ``mask`` replay."""


class TimmViTAdapter:
    """Token-level forward passes for a timm ``VisionTransformer`` (any size).

    :param model: a ``timm.models.vision_transformer.VisionTransformer`` (or subclass)
        with a convolutional patch embedding whose stride equals its kernel.
    """

    def __init__(self, model: nn.Module):
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(model, VisionTransformer):
            raise TypeError(
                f"expected a timm VisionTransformer, got {type(model).__name__}; build the "
                f"model with timm.create_model('vit_...') or pass a supported model family "
                f"(see avalanche_cts.models.get_adapter)"
            )
        proj = getattr(model.patch_embed, "proj", None)
        if not isinstance(proj, nn.Conv2d) or proj.kernel_size != proj.stride:
            raise TypeError(
                "the model's patch embedding is not a non-overlapping Conv2d; token-level "
                "replay needs one token per P x P patch"
            )
        if getattr(model, "dynamic_img_size", False):
            raise ValueError("dynamic_img_size=True models are not supported: fix the image size")
        self.model = model
        self.patch_size: int = int(proj.kernel_size[0])
        self.grid: Tuple[int, int] = tuple(int(g) for g in model.patch_embed.grid_size)
        self.num_tokens: int = self.grid[0] * self.grid[1]
        self.in_chans: int = int(proj.in_channels)
        self.num_prefix_tokens: int = int(model.num_prefix_tokens)
        self.num_classes: int = int(model.num_classes)
        self.image_size: Tuple[int, int] = (
            self.grid[0] * self.patch_size,
            self.grid[1] * self.patch_size,
        )

    @property
    def normalization(self) -> Normalization:
        """The model's input mean/std (``timm.data.resolve_data_config``), per input channel."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config(model=self.model)
        return Normalization(cfg["mean"], cfg["std"]).for_channels(self.in_chans)

    # ------------------------------------------------------------------ checks
    def check_images(self, images: Tensor) -> None:
        """Raise a clear error when ``images`` do not fit the model."""
        if images.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
        _, c, h, w = images.shape
        if c != self.in_chans or (h, w) != self.image_size:
            raise ValueError(
                f"images of shape (C={c}, H={h}, W={w}) do not fit the model, which expects "
                f"C={self.in_chans}, H x W = {self.image_size[0]} x {self.image_size[1]} "
                f"(patch size {self.patch_size}); resize the data to "
                f"{self.image_size[0]} x {self.image_size[1]} with {self.in_chans} channel(s), "
                f"or create a model for this data (img_size={h if h == w else (h, w)}, "
                f"in_chans={c})"
            )

    def check_targets(self, targets: Tensor) -> None:
        """Raise when a label is outside the model's head (``0 .. num_classes - 1``)."""
        targets = torch.as_tensor(targets)
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            raise ValueError(
                f"labels {int(targets.min())}..{int(targets.max())} do not fit the model's head "
                f"of {self.num_classes} classes: create the model with num_classes >= "
                f"{int(targets.max()) + 1}"
            )

    # ---------------------------------------------------------------- forwards
    def embed_tokens(
        self, values: Tensor, positions: Tensor, valid: Optional[Tensor] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Embed kept tokens and prepend prefix tokens: the input of the first block.

        :param values: ``(B, K, P*P*C)`` token values (float, normalised model inputs).
        :param positions: ``(B, K)`` grid positions in ``[0, T)``.
        :param valid: optional ``(B, K)`` bool mask for padded batches.
        :return: ``(B, p + K, D)`` embeddings and an SDPA bool mask ``(B, 1, 1, p + K)``
            (``None`` without padding).
        """
        x = self._patch_embed(values)
        x = x + self._pos_embed(positions.long())
        return self._with_prefix(x, valid)

    def _patch_embed(self, values: Tensor) -> Tensor:
        proj = self.model.patch_embed.proj
        weight = proj.weight.permute(0, 2, 3, 1).reshape(proj.out_channels, -1)
        return self.model.patch_embed.norm(F.linear(values.to(weight.dtype), weight, proj.bias))

    def _pos_embed(self, positions: Tensor) -> Tensor:
        m = self.model
        if m.pos_embed is None:
            return torch.zeros((), device=positions.device)
        offset = 0 if m.no_embed_class else self.num_prefix_tokens
        return m.pos_embed[0, offset:][positions]

    def _with_prefix(self, x: Tensor, valid: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        m = self.model
        b = x.shape[0]
        prefix = []
        if m.cls_token is not None:
            prefix.append(m.cls_token.expand(b, -1, -1))
        if m.reg_token is not None:
            prefix.append(m.reg_token.expand(b, -1, -1))
        if prefix and m.pos_embed is not None and not m.no_embed_class:
            pre = torch.cat(prefix, dim=1)
            prefix = [pre + m.pos_embed[:, : pre.shape[1]]]
        x = torch.cat(prefix + [x], dim=1)
        x = m.norm_pre(m.pos_drop(x))
        mask = None
        if valid is not None and not bool(valid.all()):
            ones = valid.new_ones(b, self.num_prefix_tokens)
            mask = torch.cat([ones, valid], dim=1)[:, None, None, :]
        return x, mask

    def _blocks_and_head(self, x: Tensor, mask: Optional[Tensor],
                         valid: Optional[Tensor]) -> Tensor:
        m = self.model
        if mask is None:
            x = m.blocks(x)
        else:
            for blk in m.blocks:
                x = blk(x, attn_mask=mask)
        x = m.norm(x)
        if mask is not None and m.global_pool == "avg" and m.attn_pool is None:
            w = valid[..., None].to(x.dtype)
            pooled = (x[:, self.num_prefix_tokens:] * w).sum(1) / w.sum(1).clamp_min(1)
            return m.head(m.head_drop(m.fc_norm(pooled)))
        return m.forward_head(x)

    def forward_tokens(
        self, values: Tensor, positions: Tensor, valid: Optional[Tensor] = None
    ) -> Tensor:
        """Sparse forward: logits from kept tokens only (see :meth:`embed_tokens`)."""
        x, mask = self.embed_tokens(values, positions, valid)
        return self._blocks_and_head(x, mask, valid)

    def forward_masked(
        self, values: Tensor, positions: Tensor, valid: Optional[Tensor] = None
    ) -> Tensor:
        """Logits with the learned mask token (+ position embedding) at every dropped position."""
        token = getattr(self.model, MASK_TOKEN, None)
        if token is None:
            raise RuntimeError(
                "mask replay needs the learned mask token: call "
                "CoreTokensetReplayPlugin.prepare_model(model) (or TimmViTAdapter.add_mask_token) "
                "before building the optimizer"
            )
        kept = self._patch_embed(values)
        b, _, d = kept.shape
        full = token.to(kept.dtype).expand(b, self.num_tokens, d)
        full = scatter_tokens(kept, positions, self.num_tokens, valid, fill=full)
        x = full + self._pos_embed(torch.arange(self.num_tokens, device=full.device))[None]
        x, _ = self._with_prefix(x, None)
        return self._blocks_and_head(x, None, None)

    def forward_zero(self, images: Tensor, keep: Tensor) -> Tensor:
        """Logits of images whose tokens outside the ``(B, T)`` bool mask ``keep`` are 0
        (the mean colour in normalised space)."""
        return type(self.model).forward(self.model, zero_dropped(images, keep, self.patch_size))

    def forward_record(self, values: Tensor, positions: Tensor, valid: Optional[Tensor],
                       mode: str) -> Tensor:
        """Logits of stored token records (``(B, K, V)`` model-input values, ``(B, K)``
        positions, optional ``(B, K)`` padding mask) in replay ``mode``."""
        if mode == "sparse":
            return self.forward_tokens(values, positions, valid)
        if mode == "mask":
            return self.forward_masked(values, positions, valid)
        if mode != "zero":
            raise ValueError(f"replay mode must be zero, sparse or mask, got {mode!r}")
        images = place_tokens(values, positions, self.patch_size, self.in_chans, self.grid, valid)
        return type(self.model).forward(self.model, images)

    def forward_partial(self, images: Tensor, keep: Tensor, mode: str) -> Tensor:
        """Logits of ``(B, C, H, W)`` images keeping the tokens of the ``(B, T)`` bool mask
        ``keep`` (any count per sample) in replay ``mode``."""
        if mode == "zero":
            return self.forward_zero(images, keep)
        values, positions, valid = take_kept(images, keep, self.patch_size)
        return self.forward_record(values, positions, valid, mode)

    def forward_dropped(self, images: Tensor, keep: Tensor, mode: str) -> Tensor:
        """The forward :meth:`partial_inputs` runs on its batch: :meth:`forward_partial` (a
        wrapper's adapter may also read the whole ``images``, e.g. CODA-Prompt's query)."""
        return self.forward_partial(images, keep, mode)

    def forward_sparse(self, images: Tensor, keep_idx: Tensor) -> Tensor:
        """Sparse forward of images keeping the ``(B, K)`` token indices ``keep_idx``."""
        return self.forward_tokens(take_tokens(images, keep_idx, self.patch_size), keep_idx)

    @property
    def entry(self) -> nn.Module:
        """The module a strategy calls on its mini-batch (the model itself; a wrapper's
        adapter returns the wrapper), whose forward :meth:`partial_inputs` redirects."""
        return self.model

    @contextlib.contextmanager
    def partial_inputs(self, keep: Tensor, mode: str, images: Tensor) -> Iterator[PartialInputs]:
        """Within the context, calling the model on ``images`` (that tensor, the batch ``keep``
        was drawn for) runs :meth:`forward_dropped` with ``keep``; calls on other tensors are
        full forwards (how a strategy's own forward sees token dropout); restored on exit.
        Yields the :class:`~.partial.PartialInputs` (its ``uses``)."""
        partial = PartialInputs(images, keep, mode)
        model = self.entry

        def forward(x, *args, **kwargs):
            if partial.applies(x):
                return self.forward_dropped(x, keep, mode)
            return type(model).forward(model, x, *args, **kwargs)

        model.forward = forward
        try:
            yield partial
        finally:
            del model.forward

    def features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pre_logits (B, D), logits (B, classes))`` of full images."""
        m = self.model
        pre = m.forward_head(m.forward_features(images), pre_logits=True)
        return pre, m.head(pre)

    def add_mask_token(self, generator: Optional[torch.Generator] = None) -> nn.Parameter:
        """Register the learned mask token ``(1, 1, D)`` on the model (MAE init: normal, std
        0.02) if it has none; returns it."""
        token = getattr(self.model, MASK_TOKEN, None)
        if token is None:
            d = self.model.embed_dim
            ref = self.model.patch_embed.proj.weight
            init = torch.randn(1, 1, d, generator=generator) * 0.02
            token = nn.Parameter(init.to(device=ref.device, dtype=ref.dtype))
            self.model.register_parameter(MASK_TOKEN, token)
        return token


class TimmAttentionAccess(AttentionAccess):
    """:class:`AttentionAccess` for a timm ``VisionTransformer`` (any size, fused attention or not).

    Attention is captured at ``blocks[i].attn.attn_drop`` with ``fused_attn`` switched off for the
    captured blocks only; keys are scaled at the output of ``attn.k_norm`` ``(B, H, N, d)``.
    """

    def __init__(self, adapter):
        model = adapter.model
        if getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg"):
            raise ValueError(
                f"global_pool={model.global_pool!r}: token scorers read relevance from the class-token "
                f"row (global_pool='token') or the mean of patch rows (global_pool='avg'); other "
                f"pooling has no query row to read"
            )
        for i, blk in enumerate(model.blocks):
            attn = getattr(blk, "attn", None)
            if not all(hasattr(attn, a) for a in ("attn_drop", "k_norm", "num_heads")):
                raise TypeError(
                    f"block {i} has no timm Attention (attn.attn_drop, attn.k_norm): token scorers "
                    f"support the standard timm ViT attention"
                )
        self.model = self.module = model
        self.adapter = adapter
        self.patch_size = adapter.patch_size
        self.grid = adapter.grid
        self.num_tokens = adapter.num_tokens
        self.num_prefix_tokens = adapter.num_prefix_tokens
        self.num_blocks = len(model.blocks)
        self.num_heads = int(model.blocks[0].attn.num_heads)
        self.embed_dim = int(model.embed_dim)
        self.readout = "cls" if model.global_pool == "token" else "mean"

    def check_images(self, images: Tensor) -> None:
        self.adapter.check_images(images)

    def check_targets(self, targets: Tensor) -> None:
        self.adapter.check_targets(targets)

    def logits(self, images: Tensor) -> Tensor:
        return self.model(images)

    def patch_embeddings(self, images: Tensor) -> Tensor:
        return self.model.patch_embed(images)

    def _attn(self, blocks: Sequence[int]) -> List[nn.Module]:
        return [self.model.blocks[i].attn for i in blocks]

    def _prob_modules(self, blocks: Sequence[int]) -> List[nn.Module]:
        return [a.attn_drop for a in self._attn(blocks)]

    def _explicit_attention(self, blocks: Sequence[int]):
        return fused_attention_off(self._attn(blocks))

    def _key_modules(self) -> List[nn.Module]:
        return [a.k_norm for a in self._attn(range(self.num_blocks))]

    def _scale_keys(self, output: Tensor, multipliers: Tensor) -> Tensor:
        return output * multipliers[:, None, :, None]
