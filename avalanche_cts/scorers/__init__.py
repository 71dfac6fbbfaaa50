"""Token scorers behind one interface: ``score(model, images, targets) -> (B, T)``.

Registered names: ``random``, ``rollout``, ``gradcam``, ``gradlrp``, ``atman``
(``get_scorer(name, **options)``). Attribution scorers accept timm ``VisionTransformer``,
Hugging Face ``ViTForImageClassification`` and BLIP vision models, or any
:class:`AttentionAccess`.
"""
from .base import TokenScorer, get_scorer, list_scorers, register_scorer
from ..models import AttentionAccess, TimmAttentionAccess, attention_access
from .attribution import AttributionScorer, GradientScorer
from .random_scorer import RandomScorer
from .rollout import RolloutScorer
from .gradcam import GradCamScorer
from .gradlrp import GradLRPScorer
from .atman import AtManScorer

__all__ = [
    "TokenScorer",
    "get_scorer",
    "list_scorers",
    "register_scorer",
    "AttentionAccess",
    "TimmAttentionAccess",
    "attention_access",
    "AttributionScorer",
    "GradientScorer",
    "RandomScorer",
    "RolloutScorer",
    "GradCamScorer",
    "GradLRPScorer",
    "AtManScorer",
]
