"""Token scorers behind one interface: ``score(model, images, targets) -> (B, T)``.

Registered names (:data:`SCORERS`): ``random``, ``rollout``, ``gradcam``, ``gradlrp``,
``atman``; ``get_scorer(name, **options)`` builds one, ``register_scorer(name)`` adds a
:class:`TokenScorer` subclass. Attribution scorers accept timm ``VisionTransformer``, Hugging
Face ``ViTForImageClassification`` and BLIP models, or any
:class:`~avalanche_cts.models.attention.AttentionAccess`. Names are imported on first use.
"""
from .._lazy import lazy_exports
from ..registry import Registry

SCORERS: Registry = Registry("token scorer", {
    "random": "avalanche_cts.scorers.random_scorer:RandomScorer",
    "rollout": "avalanche_cts.scorers.rollout:RolloutScorer",
    "gradcam": "avalanche_cts.scorers.gradcam:GradCamScorer",
    "gradlrp": "avalanche_cts.scorers.gradlrp:GradLRPScorer",
    "atman": "avalanche_cts.scorers.atman:AtManScorer",
}, base="avalanche_cts.scorers.base:TokenScorer")
"""Token scorers by name."""
get_scorer = SCORERS.build
"""A scorer object from a registered name (with options), or the scorer passed in."""
list_scorers = SCORERS.names
register_scorer = SCORERS.register
"""``@register_scorer("name")`` on a :class:`TokenScorer` subclass adds it."""

_EXPORTS = {
    "atman": ("AtManScorer",),
    "attribution": ("AttributionScorer", "GradientScorer"),
    "gradcam": ("GradCamScorer",),
    "gradlrp": ("GradLRPScorer",),
    "random_scorer": ("RandomScorer",),
    "rollout": ("RolloutScorer",),
    "base": ("TokenScorer", "check_inputs"),
}

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, _EXPORTS, ("SCORERS", "get_scorer", "list_scorers", "register_scorer"))
