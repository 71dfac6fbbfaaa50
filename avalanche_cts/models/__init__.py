"""Model adapters: token-level access to vision transformers of several families.

``get_adapter(model)`` returns the adapter of a model object (token geometry, zero-filled and
sparse forwards); ``attention_access(model)`` what the attribution scorers read (attention
maps, key scaling). Families register with :func:`register_adapter`, most specific first:
timm ``VisionTransformer`` (:mod:`.timm_vit`), Hugging Face ``ViTForImageClassification``
(:mod:`.hf_vit`), BLIP VQA and captioning models (:mod:`.hf_blip_vl`) and the BLIP vision tower
(:mod:`.hf_blip`). BLIP models by name: :mod:`.blip_presets`.
"""
from typing import Callable, List, Optional, Tuple, Type

from torch import nn

from ..normalization import Normalization, NormalizationLike
from .attention import AttentionAccess
from .blip_presets import BLIP_PRESETS, blip_tokenizer, create_blip, is_blip_name
from .hf_blip import HFBlipVisionAdapter, is_hf_blip, resize_position_embeddings
from .hf_blip_vl import BlipVLAdapter, is_blip_vl
from .hf_vit import HFViTAdapter, is_hf_vit
from .presets import create_model, list_presets, model_normalization
from .timm_vit import MASK_TOKEN, TimmAttentionAccess, TimmViTAdapter

__all__ = [
    "AttentionAccess",
    "BLIP_PRESETS",
    "BlipVLAdapter",
    "HFBlipVisionAdapter",
    "HFViTAdapter",
    "MASK_TOKEN",
    "TimmAttentionAccess",
    "TimmViTAdapter",
    "attention_access",
    "blip_tokenizer",
    "create_blip",
    "create_model",
    "get_adapter",
    "is_blip_name",
    "list_presets",
    "model_normalization",
    "register_adapter",
    "resize_position_embeddings",
    "resolve_normalization",
]

_ADAPTERS: List[Tuple[Callable[[nn.Module], bool], Type]] = []


def register_adapter(matches: Callable[[nn.Module], bool], adapter_cls: Type) -> None:
    """Register ``adapter_cls`` for models where ``matches(model)`` is true."""
    _ADAPTERS.append((matches, adapter_cls))


def _is_timm_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


register_adapter(_is_timm_vit, TimmViTAdapter)
register_adapter(is_hf_vit, HFViTAdapter)
register_adapter(is_blip_vl, BlipVLAdapter)
register_adapter(is_hf_blip, HFBlipVisionAdapter)


def get_adapter(model: nn.Module):
    """Return the token adapter for ``model``; raise ``TypeError`` naming the supported families."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    for matches, cls in _ADAPTERS:
        if matches(model):
            return cls(model)
    raise TypeError(
        f"{type(model).__name__} is not a supported vision transformer: core tokenset replay "
        f"needs a timm VisionTransformer (timm.create_model('vit_...')) or a Hugging Face "
        f"BlipForQuestionAnswering / BlipForConditionalGeneration; scorers also accept "
        f"Hugging Face ViTForImageClassification and the BLIP vision model"
    )


def attention_access(model) -> AttentionAccess:
    """The :class:`AttentionAccess` of a model (or pass one through); ``TypeError`` if unsupported."""
    if isinstance(model, AttentionAccess):
        return model
    adapter = get_adapter(model)
    if isinstance(adapter, AttentionAccess):
        return adapter
    if isinstance(adapter, TimmViTAdapter):
        return TimmAttentionAccess(adapter)
    raise TypeError(
        f"no attention access for {type(adapter).__name__}: token scorers cannot read its attention"
    )


def resolve_normalization(spec: NormalizationLike, channels: Optional[int] = None) -> Normalization:
    """A :class:`~avalanche_cts.normalization.Normalization` from an object, a ``(mean, std)``
    pair, a model (its own constants: timm ``pretrained_cfg``, the Hugging Face processor
    defaults), or ``None`` (identity: inputs in [0, 1]); adapted to ``channels`` when given."""
    if isinstance(spec, nn.Module):
        adapter = get_adapter(spec)
        norm = adapter.normalization
        channels = adapter.in_chans if channels is None else channels
    elif spec is None:
        norm = Normalization.identity(channels or 1)
    elif isinstance(spec, Normalization):
        norm = spec
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        norm = Normalization(tuple(spec[0]), tuple(spec[1]))
    else:
        raise TypeError(
            f"normalization must be a Normalization, a (mean, std) pair, a model or None, got "
            f"{type(spec).__name__}"
        )
    return norm if channels is None else norm.for_channels(channels)
