"""Sample selectors behind one interface: ``select(k, n, features) -> Selection``."""
from .base import (
    ClassFeatures,
    SampleSelector,
    Selection,
    get_selector,
    list_selectors,
    register_selector,
)
from .random_selector import RandomSelector

__all__ = [
    "ClassFeatures",
    "SampleSelector",
    "Selection",
    "get_selector",
    "list_selectors",
    "register_selector",
    "RandomSelector",
]
