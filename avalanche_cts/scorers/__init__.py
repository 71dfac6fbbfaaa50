"""Token scorers behind one interface: ``score(model, images, targets) -> (B, T)``."""
from .base import TokenScorer, get_scorer, list_scorers, register_scorer
from .random_scorer import RandomScorer

__all__ = ["TokenScorer", "get_scorer", "list_scorers", "register_scorer", "RandomScorer"]
