"""Which adapter serves a model object, and normalisation from a model or its constants."""
from typing import Callable, List, Optional, Tuple, Type

from torch import nn

from ..tokens.normalization import Normalization, NormalizationLike
from .attention import AttentionAccess
from .hf_blip import HFBlipVisionAdapter, is_hf_blip
from .hf_blip_vl import BlipVLAdapter, is_blip_vl
from .hf_vit import HFViTAdapter, is_hf_vit
from .timm_vit import TimmAttentionAccess, TimmViTAdapter

__all__ = ["attention_access", "get_adapter", "register_adapter", "resolve_normalization"]

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
    if callable(getattr(adapter, "attention_access", None)):
        return adapter.attention_access()
    if isinstance(adapter, TimmViTAdapter):
        return TimmAttentionAccess(adapter)
    raise TypeError(
        f"no attention access for {type(adapter).__name__}: token scorers cannot read its attention"
    )


def resolve_normalization(spec: NormalizationLike, channels: Optional[int] = None) -> Normalization:
    """A :class:`~avalanche_cts.tokens.normalization.Normalization` from an object, a ``(mean, std)``
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
        norm = Normalization(spec[0], spec[1])  # numbers (one channel) or per-channel lists
    else:
        raise TypeError(
            f"normalization must be a Normalization, a (mean, std) pair, a model or None, got "
            f"{type(spec).__name__}"
        )
    return norm if channels is None else norm.for_channels(channels)
