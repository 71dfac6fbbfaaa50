"""Sample selectors behind one interface: ``select(k, n, features) -> Selection``.

Registered names: ``random``, ``herding``, ``craig``, ``gradmatch``.
"""
from .base import (
    ClassFeatures,
    SampleSelector,
    Selection,
    get_selector,
    list_selectors,
    register_selector,
)
from .budget import allocate_budget, merge_class_orders
from .features import GRADIENT_MODES, GradientFeatures
from .random_selector import RandomSelector
from .herding import HerdingSelector, herding_order
from .craig import CraigSelector, facility_location
from .gradmatch import GradMatchSelector, OMPResult, omp_select
from .avalanche import SelectionStrategyAdapter, extract_features

__all__ = [
    "ClassFeatures",
    "SampleSelector",
    "Selection",
    "get_selector",
    "list_selectors",
    "register_selector",
    "allocate_budget",
    "merge_class_orders",
    "GRADIENT_MODES",
    "GradientFeatures",
    "RandomSelector",
    "HerdingSelector",
    "herding_order",
    "CraigSelector",
    "facility_location",
    "GradMatchSelector",
    "OMPResult",
    "omp_select",
    "SelectionStrategyAdapter",
    "extract_features",
]

