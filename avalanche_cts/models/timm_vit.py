"""Token-level access to timm ``VisionTransformer`` models.

The adapter does not wrap or copy the model: it reads the model's own modules, so the
model a strategy trains is the one that replays tokens. Two ways to run a partial input:

* zero-filled (paper): dropped tokens are zeros in the input image, sequence length T;
* sparse (MAE-style): only kept tokens, with their own position embeddings, plus the
  prefix tokens go through the blocks; dropped tokens cost nothing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tokens import mask_to_pixels, patchify, random_keep_indices

__all__ = ["TimmViTAdapter", "SparseTokenDropout"]


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
        self.image_size: Tuple[int, int] = (
            self.grid[0] * self.patch_size,
            self.grid[1] * self.patch_size,
        )

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
                f"(patch size {self.patch_size}); resize the data or create the model with "
                f"img_size={h if h == w else (h, w)}, in_chans={c}"
            )

    # ---------------------------------------------------------------- forwards
    def forward_zero(self, images: Tensor, keep: Tensor) -> Tensor:
        """Logits for images whose dropped tokens are zero-filled.

        :param images: ``(B, C, H, W)``.
        :param keep: ``(B, T)`` bool mask of kept tokens.
        """
        pix = mask_to_pixels(keep, self.patch_size, self.grid).to(images.dtype)
        return self.model(images * pix)

    def embed_tokens(
        self, values: Tensor, positions: Tensor, valid: Optional[Tensor] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Embed kept tokens and prepend prefix tokens: the input of the first block.

        :param values: ``(B, K, P*P*C)`` token values (float, model input scale).
        :param positions: ``(B, K)`` grid positions in ``[0, T)``.
        :param valid: optional ``(B, K)`` bool mask for padded batches.
        :return: ``(B, p + K, D)`` embeddings and an SDPA bool mask ``(B, 1, 1, p + K)``
            (``None`` without padding).
        """
        m = self.model
        proj = m.patch_embed.proj
        weight = proj.weight.permute(0, 2, 3, 1).reshape(proj.out_channels, -1)
        x = F.linear(values.to(weight.dtype), weight, proj.bias)
        x = m.patch_embed.norm(x)
        positions = positions.long()
        b = x.shape[0]
        prefix = []
        if m.cls_token is not None:
            prefix.append(m.cls_token.expand(b, -1, -1))
        if m.reg_token is not None:
            prefix.append(m.reg_token.expand(b, -1, -1))
        if m.pos_embed is not None:
            offset = 0 if m.no_embed_class else self.num_prefix_tokens
            x = x + m.pos_embed[0, offset:][positions]
            if prefix and not m.no_embed_class:
                pre = torch.cat(prefix, dim=1)
                prefix = [pre + m.pos_embed[:, : pre.shape[1]]]
        x = torch.cat(prefix + [x], dim=1)
        x = m.norm_pre(m.pos_drop(x))
        mask = None
        if valid is not None and not bool(valid.all()):
            ones = valid.new_ones(b, self.num_prefix_tokens)
            mask = torch.cat([ones, valid], dim=1)[:, None, None, :]
        return x, mask

    def forward_tokens(
        self, values: Tensor, positions: Tensor, valid: Optional[Tensor] = None
    ) -> Tensor:
        """Sparse forward: logits from kept tokens only (see :meth:`embed_tokens`)."""
        x, mask = self.embed_tokens(values, positions, valid)
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

    def forward_sparse(self, images: Tensor, keep_idx: Tensor) -> Tensor:
        """Sparse forward of images keeping the ``(B, K)`` token indices ``keep_idx``."""
        tokens = patchify(images, self.patch_size)
        kept = tokens.gather(1, keep_idx.long()[..., None].expand(-1, -1, tokens.shape[-1]))
        return self.forward_tokens(kept, keep_idx)

    def features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pre_logits (B, D), logits (B, classes))`` of full images."""
        m = self.model
        pre = m.forward_head(m.forward_features(images), pre_logits=True)
        return pre, m.head(pre)

    # --------------------------------------------------------------- dropout
    @contextlib.contextmanager
    def sparse_dropout(self, keep: int, generator=None) -> Iterator["SparseTokenDropout"]:
        """Within the context, training forwards keep ``keep`` random tokens per sample.

        Swaps the model's ``patch_drop`` module (timm calls it after the position
        embedding) and restores it on exit. Eval-mode forwards are unaffected.
        """
        old = self.model.patch_drop
        drop = SparseTokenDropout(keep, self.num_prefix_tokens, generator=generator)
        self.model.patch_drop = drop
        try:
            yield drop
        finally:
            self.model.patch_drop = old


class SparseTokenDropout(nn.Module):
    """Keep exactly ``keep`` random patch tokens per sample in training mode.

    Replaces timm's ``patch_drop``; prefix tokens always pass. The draw is new every call.
    """

    def __init__(self, keep: int, num_prefix_tokens: int, generator=None):
        super().__init__()
        self.keep = int(keep)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        p = self.num_prefix_tokens
        prefix, patches = x[:, :p], x[:, p:]
        b, t, d = patches.shape
        if self.keep >= t:
            return x
        idx = random_keep_indices(b, t, self.keep, device=x.device, generator=self.generator)
        kept = patches.gather(1, idx[..., None].expand(-1, -1, d))
        return torch.cat([prefix, kept], dim=1)
