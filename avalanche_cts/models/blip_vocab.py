"""The closed vocabulary of the generated vision-language streams (no model imports, so
model builders can read it)."""
from __future__ import annotations

from typing import Dict, Tuple

from .blip_text import closed_tokenizer

__all__ = ["CAPTION_CLASSES", "COLOURS", "SCENE_WORDS", "SHAPES", "scene_tokenizer"]

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 230),
    "yellow": (235, 215, 40), "purple": (150, 60, 190), "orange": (245, 140, 30),
}
"""Object colours (RGB, 0-255)."""
SHAPES = ("square", "circle", "triangle")
"""Shapes of the VQA scenes."""
CAPTION_CLASSES = ("square", "circle", "triangle", "diamond", "cross")
"""One captioning task per class, in this order."""
_PLURAL = {s: s + "s" for s in SHAPES}
SCENE_WORDS: Tuple[str, ...] = tuple(sorted(set(
    "what colour is the how many are there left of object objects on right shape yes no a "
    "picture "
    "small large in top bottom".split()
    + list(COLOURS) + list(CAPTION_CLASSES) + list(_PLURAL.values())
    + [str(i) for i in range(1, 6)])))
"""The closed vocabulary of every generated stream."""


def scene_tokenizer():
    """The ``BertTokenizer`` of :data:`SCENE_WORDS` (cached vocab file)."""
    return closed_tokenizer(SCENE_WORDS)
