"""Token-level access to Hugging Face ``ViTForImageClassification`` (transformers 5.x).

The adapter reads the model's own modules. Attention probabilities are captured at each
``ViTAttention`` output with the eager attention function switched on for the capture only
(the model's ``config._attn_implementation`` is restored afterwards); AtMan scales the output of
``attention.k_proj``, which works with any attention function (eager, sdpa, flash).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Sequence, Tuple

from torch import Tensor, nn

from .attention import AttentionAccess
from ..tokens.normalization import Normalization
from ..tokens.patches import check_patch_size, zero_dropped

__all__ = ["HFVisionAdapter", "HFViTAdapter", "is_hf_vit"]


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class HFVisionAdapter(AttentionAccess):
    """Token geometry and zero-filled forwards shared by the Hugging Face vision adapters.

    Subclasses call :meth:`_set_geometry`, implement :class:`AttentionAccess` and set
    ``processor_normalization``, the default constants of the family's image processor.
    """

    processor_normalization = Normalization((0.5,) * 3, (0.5,) * 3)

    @property
    def normalization(self) -> Normalization:
        """The image processor's mean/std, per input channel."""
        return self.processor_normalization.for_channels(self.in_chans)

    def _set_geometry(self, image_size, patch_size, in_chans: int, num_blocks: int, config) -> None:
        self.image_size = _pair(image_size)
        self.patch_size = _pair(patch_size)[0]
        self.grid = check_patch_size(*self.image_size, self.patch_size)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.num_prefix_tokens = 1
        self.in_chans = int(in_chans)
        self.num_blocks = int(num_blocks)
        self.num_heads = int(config.num_attention_heads)
        self.embed_dim = int(config.hidden_size)

    def check_images(self, images: Tensor) -> None:
        """Raise a clear error when ``images`` do not fit the model."""
        if images.dim() != 4 or images.shape[1] != self.in_chans or tuple(images.shape[2:]) != self.image_size:
            raise ValueError(
                f"images of shape {tuple(images.shape)} do not fit the model, which expects "
                f"(B, {self.in_chans}, {self.image_size[0]}, {self.image_size[1]})"
            )

    @staticmethod
    def _probs(output) -> Tensor:
        return output[1]  # Hugging Face attention modules return (output, probabilities)

    def forward_zero(self, images: Tensor, keep: Tensor) -> Tensor:
        """Logits of images whose tokens outside the ``(B, T)`` bool mask ``keep`` are zero."""
        return self.logits(zero_dropped(images, keep, self.patch_size))


def is_hf_vit(model: nn.Module) -> bool:
    """True for a Hugging Face ``ViTForImageClassification`` (without importing transformers)."""
    if not type(model).__module__.startswith("transformers."):
        return False
    from transformers import ViTForImageClassification

    return isinstance(model, ViTForImageClassification)


class HFViTAdapter(HFVisionAdapter):
    """:class:`AttentionAccess` and token geometry for ``ViTForImageClassification``.

    :param model: a transformers 5.x ``ViTForImageClassification`` (``vit.layers[i].attention``
        with ``k_proj``); the class token is read out. Inputs are normalised with
        ``ViTImageProcessor``'s defaults, mean = std = 0.5.
    """

    def __init__(self, model: nn.Module):
        if not is_hf_vit(model):
            raise TypeError(f"expected a transformers ViTForImageClassification, got {type(model).__name__}")
        layers = getattr(model.vit, "layers", None)
        if layers is None or not hasattr(layers[0].attention, "k_proj"):
            raise TypeError(
                "this ViTForImageClassification has no vit.layers[i].attention.k_proj: "
                "Hugging Face ViT support needs transformers >= 5"
            )
        cfg = model.config
        self.model = self.module = model
        self.layers = layers
        self._set_geometry(cfg.image_size, cfg.patch_size, cfg.num_channels, len(layers), cfg)

    def logits(self, images: Tensor) -> Tensor:
        return self.model(pixel_values=images).logits

    def features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(pre_logits (B, D), logits (B, classes))`` of full images."""
        pre = self.model.vit(pixel_values=images).last_hidden_state[:, 0]
        return pre, self.model.classifier(pre)

    def patch_embeddings(self, images: Tensor) -> Tensor:
        return self.model.vit.embeddings.patch_embeddings(images)

    def _prob_modules(self, blocks: Sequence[int]) -> List[nn.Module]:
        return [self.layers[i].attention for i in blocks]

    @contextlib.contextmanager
    def _explicit_attention(self, blocks: Sequence[int]) -> Iterator[None]:
        cfg = self.model.config
        old = cfg._attn_implementation
        cfg._attn_implementation = "eager"
        try:
            yield
        finally:
            cfg._attn_implementation = old

    def _key_modules(self) -> List[nn.Module]:
        return [layer.attention.k_proj for layer in self.layers]

    def _scale_keys(self, output: Tensor, multipliers: Tensor) -> Tensor:
        return output * multipliers[:, :, None]
