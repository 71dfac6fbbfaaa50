"""Model adapters: token-level access to vision transformers of several families.

``get_adapter(model)`` returns the adapter for a model object; adapters register
themselves with :func:`register_adapter`, most specific first.
"""
from typing import Callable, List, Tuple, Type

from torch import nn

from .timm_vit import SparseTokenDropout, TimmViTAdapter
from .presets import create_model, list_presets

_ADAPTERS: List[Tuple[Callable[[nn.Module], bool], Type]] = []


def register_adapter(matches: Callable[[nn.Module], bool], adapter_cls: Type) -> None:
    """Register ``adapter_cls`` for models where ``matches(model)`` is true."""
    _ADAPTERS.append((matches, adapter_cls))


def _is_timm_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


register_adapter(_is_timm_vit, TimmViTAdapter)


def get_adapter(model: nn.Module):
    """Return the token adapter for ``model``; raise ``TypeError`` naming the supported families."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    for matches, cls in _ADAPTERS:
        if matches(model):
            return cls(model)
    raise TypeError(
        f"{type(model).__name__} is not a supported vision transformer: core tokenset replay "
        f"needs a timm VisionTransformer (timm.create_model('vit_...')); scorers also accept "
        f"Hugging Face ViTForImageClassification and the BLIP vision model"
    )


__all__ = [
    "TimmViTAdapter",
    "SparseTokenDropout",
    "get_adapter",
    "register_adapter",
    "create_model",
    "list_presets",
]

# Hugging Face families (scorers; transformers is imported only when such a model is passed)
from .hf_vit import HFViTAdapter, is_hf_vit  # noqa: E402
from .hf_blip import HFBlipVisionAdapter, is_hf_blip  # noqa: E402

register_adapter(is_hf_vit, HFViTAdapter)
register_adapter(is_hf_blip, HFBlipVisionAdapter)
__all__ += ["HFViTAdapter", "HFBlipVisionAdapter"]
