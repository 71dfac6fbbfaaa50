"""avalanche-cts: core tokensets for the Avalanche continual-learning framework.

A core tokenset keeps, for the most important samples (chosen by a sample selector), only
their most relevant patch tokens (ranked by a token scorer), each with its position.
"""
from .buffer import CoreTokensetBuffer, TokenMemoryDataset
from .memory import PixelCodec, TokenBatch, TokenGroup, collate_tokens
from .models import create_model, get_adapter
from .plugin import CoreTokensetReplayPlugin
from .scorers import TokenScorer, get_scorer, list_scorers
from .selectors import SampleSelector, get_selector, list_selectors

__version__ = "0.1.0"

__all__ = [
    "CoreTokensetBuffer",
    "CoreTokensetReplayPlugin",
    "TokenMemoryDataset",
    "PixelCodec",
    "TokenBatch",
    "TokenGroup",
    "collate_tokens",
    "create_model",
    "get_adapter",
    "TokenScorer",
    "get_scorer",
    "list_scorers",
    "SampleSelector",
    "get_selector",
    "list_selectors",
]
