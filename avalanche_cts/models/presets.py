"""Small ViT presets for the embedded benchmarks, created through timm.

``create_model(name, **kw)`` accepts a preset name below or any timm model name; keyword
arguments override the preset (e.g. ``num_classes``). A preset sets its input normalisation
in ``pretrained_cfg`` (the pixel mean and std of its pretraining data, as ImageNet's
constants are ImageNet's), so ``timm.data.resolve_data_config`` and the streams read it like
any timm model's; presets have no published weights (``avalanche_cts.harness.pretrain``
makes them).
"""
from typing import Any, Dict, List, Optional

from torch import nn

from ..registry import Registry
from ..tokens.normalization import Normalization

__all__ = ["PRESETS", "create_model", "list_presets", "model_normalization"]

PRESETS: Registry = Registry("model preset", {
    # Fashion-MNIST 28x28 grey: 7x7 = 49 tokens of 4x4 pixels
    "vit_fmnist_tiny": dict(
        base="vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1,
        embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, num_classes=10,
        mean=(0.2860,), std=(0.3530,),
    ),
    # Cluttered Fashion-MNIST 64x64 grey: 8x8 = 64 tokens of 8x8 pixels
    "vit_clutter_tiny": dict(
        base="vit_tiny_patch16_224", img_size=64, patch_size=8, in_chans=1,
        embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0, num_classes=10,
        mean=(0.207,), std=(0.215,),
    ),
    # sklearn digits 8x8 grey: 4x4 = 16 tokens of 2x2 pixels (tests)
    "vit_digits_micro": dict(
        base="vit_tiny_patch16_224", img_size=8, patch_size=2, in_chans=1,
        embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10,
        mean=(0.0,), std=(1.0,),
    ),
})
"""timm ViT presets: the base model and its keyword overrides, and the input mean/std."""


def list_presets() -> List[str]:
    """Names accepted by :func:`create_model` besides timm's own."""
    return PRESETS.names()


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Create a preset or timm model; ``kwargs`` override the preset's settings.

    :raises ValueError: for an unknown name, a preset asked for ``pretrained`` weights, or an
        image size the patch size does not divide.
    """
    import timm

    if not isinstance(name, str) or (name not in PRESETS and not timm.is_model(name)):
        raise ValueError(
            f"unknown model {name!r}: use a preset ({', '.join(list_presets())}) or a timm "
            f"model name (timm.list_models('vit_*'))"
        )
    cfg = dict(PRESETS.load(name)) if name in PRESETS else {}
    if cfg and pretrained:
        raise ValueError(
            f"{name!r} is a preset of this library and has no published weights: load a local "
            f"checkpoint (avalanche_cts.models.load_backbone(name, checkpoint=FILE)) or use "
            f"avalanche_cts.harness.load_pretrained"
        )
    base = cfg.pop("base", name)
    for key, low in (("num_classes", 0), ("in_chans", 1), ("embed_dim", 1), ("depth", 1),
                     ("num_heads", 1)):
        v = kwargs.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise ValueError(f"{name}: {key} must be an integer >= {low}, got {v!r}"
                             + (" (0 builds the model without a classifier)"
                                if key == "num_classes" else ""))
    overlay = {}
    if "mean" in cfg:
        overlay = dict(mean=cfg.pop("mean"), std=cfg.pop("std"), url="", hf_hub_id=None,
                       architecture=name, tag="")
    cfg.update(kwargs)
    _check_sizes(name, cfg)
    if overlay:
        cfg["pretrained_cfg_overlay"] = overlay
    model = timm.create_model(base, pretrained=pretrained, **cfg)
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "img_size", None) is not None:
        _check_sizes(name, dict(img_size=tuple(embed.img_size), patch_size=embed.patch_size[0]))
    return model


def _check_sizes(name: str, cfg: Dict[str, Any]) -> None:
    size, patch = cfg.get("img_size"), cfg.get("patch_size")
    if size is None or patch is None:
        return
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    if any(not isinstance(s, int) or s <= 0 for s in sizes) or not isinstance(patch, int) \
            or patch <= 0:
        raise ValueError(f"{name}: img_size and patch_size must be positive integers, got "
                         f"{size!r}, {patch!r}")
    if any(s % patch for s in sizes):
        fit = tuple(max(patch, s // patch * patch) for s in sizes)
        raise ValueError(
            f"{name}: image size {size} is not divisible by the patch size {patch}: use "
            f"img_size={fit[0] if fit[0] == fit[-1] else fit} or another patch_size"
        )


def model_normalization(name: str, in_chans: Optional[int] = None) -> Normalization:
    """Input normalisation of model ``name`` without building it: a preset's constants, BLIP's
    processor constants (CLIP) for BLIP names, or the mean/std of timm's ``pretrained_cfg``
    for that name (tags such as ``.augreg_in21k``
    included), for ``in_chans`` channels (default: the model's)."""
    if name in PRESETS:
        cfg = PRESETS.load(name)
        norm = Normalization(cfg["mean"], cfg["std"])
        return norm.for_channels(in_chans or cfg["in_chans"])
    from .blip_presets import is_blip_name

    if is_blip_name(name):
        from ..tokens.normalization import CLIP_MEAN, CLIP_STD

        return Normalization(CLIP_MEAN, CLIP_STD).for_channels(in_chans or 3)
    import timm

    pcfg = timm.models.get_pretrained_cfg(name)
    if pcfg is None:
        raise ValueError(f"timm knows no pretrained configuration for {name!r}")
    return Normalization(pcfg.mean, pcfg.std).for_channels(in_chans or len(pcfg.mean))
