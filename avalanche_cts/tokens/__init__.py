"""Patch tokens and input normalisation: the layer every other one builds on.

* :mod:`.patches`: images to ``(B, T, P*P*C)`` tokens and back, kept-token scatter and
  gather, keep counts, random keep masks and score rankings.
* :mod:`.normalization`: the model-input normalisation (mean/std) that streams apply and
  the memory inverts to store exact pixels.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "normalization": ("CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "Normalization",
                      "NormalizationLike"),
    "patches": ("check_patch_size", "composite_records", "gather_tokens", "keep_count",
                "kept_positions", "mask_to_pixels", "patchify", "place_tokens", "random_keep_mask",
                "rank_tokens", "scatter_tokens", "take_kept", "take_tokens", "unpatchify",
                "zero_dropped"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
