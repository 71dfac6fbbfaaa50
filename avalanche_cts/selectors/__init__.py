"""Sample selectors behind one interface: ``select(k, n, features) -> Selection``.

Registered names (:data:`SELECTORS`): ``random``, ``herding``, ``craig``, ``gradmatch``;
``get_selector(name, **options)`` builds one, ``register_selector(name)`` adds a
:class:`SampleSelector` subclass. Names are imported on first use.
"""
from .._lazy import lazy_exports
from ..registry import Registry

SELECTORS: Registry = Registry("sample selector", {
    "random": "avalanche_cts.selectors.random_selector:RandomSelector",
    "herding": "avalanche_cts.selectors.herding:HerdingSelector",
    "craig": "avalanche_cts.selectors.craig:CraigSelector",
    "gradmatch": "avalanche_cts.selectors.gradmatch:GradMatchSelector",
}, base="avalanche_cts.selectors.base:SampleSelector")
"""Sample selectors by name."""
get_selector = SELECTORS.build
"""A selector object from a registered name (with options), or the selector passed in."""
list_selectors = SELECTORS.names
register_selector = SELECTORS.register
"""``@register_selector("name")`` on a :class:`SampleSelector` subclass adds it."""

_EXPORTS = {
    "base": ("ClassFeatures", "SampleSelector", "Selection"),
    "craig": ("CraigSelector", "facility_location"),
    "features": ("GRADIENT_MODES", "GradientFeatures", "extract_features"),
    "gradmatch": ("GradMatchSelector", "OMPResult", "omp_select"),
    "herding": ("HerdingSelector", "herding_order"),
    "random_selector": ("RandomSelector",),
}

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, _EXPORTS, ("SELECTORS", "get_selector", "list_selectors", "register_selector"))
