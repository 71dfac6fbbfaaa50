"""Small ViT presets for the embedded benchmark, created through timm.

``create_model(name, **kw)`` accepts a preset name below or any timm model name; keyword
arguments override the preset (e.g. ``num_classes``).
"""
from typing import Any, Dict, List

from torch import nn

__all__ = ["PRESETS", "create_model", "list_presets"]

PRESETS: Dict[str, Dict[str, Any]] = {
    # Fashion-MNIST 28x28 grey: 7x7 = 49 tokens of 4x4 pixels
    "vit_fmnist_tiny": dict(
        base="vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1,
        embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, num_classes=10,
    ),
    # sklearn digits 8x8 grey: 4x4 = 16 tokens of 2x2 pixels (tests)
    "vit_digits_micro": dict(
        base="vit_tiny_patch16_224", img_size=8, patch_size=2, in_chans=1,
        embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10,
    ),
}


def list_presets() -> List[str]:
    """Names accepted by :func:`create_model` besides timm's own."""
    return sorted(PRESETS)


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Create a preset or timm model; ``kwargs`` override the preset's settings."""
    import timm

    cfg = dict(PRESETS.get(name, {}))
    base = cfg.pop("base", name)
    cfg.update(kwargs)
    return timm.create_model(base, pretrained=pretrained, **cfg)
