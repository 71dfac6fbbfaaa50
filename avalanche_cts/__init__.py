"""avalanche-cts: core tokensets for the Avalanche continual-learning framework.

A core tokenset keeps, for the most important samples (chosen by a sample selector), only
their most relevant patch tokens (ranked by a token scorer), each with its position.

Layers, each importing only from the ones before it: :mod:`.tokens` (patch tokens,
normalisation) -> :mod:`.models` (adapters, presets) -> :mod:`.scorers`, :mod:`.selectors`
-> :mod:`.memory` (storage policy, replay plugin, recipe) -> :mod:`.strategies`,
:mod:`.evaluation` -> :mod:`.benchmarks` (streams) -> :mod:`.harness` (runs, grids, command
line). The public API below is imported on first use, so ``import avalanche_cts`` is cheap.
"""
from ._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    "memory.buffer": ("CoreTokensetBuffer",),
    "memory.plugin": ("CoreTokensetReplayPlugin",),
    "memory.inference": ("PartialInferencePlugin",),
    "memory.recipe": ("DEFAULT_RECIPE", "Recipe"),
    "memory.settings": ("MemorySettings",),
    "tokens.normalization": ("Normalization",),
    "memory.codec": ("PixelCodec",),
    "selectors.base": ("SampleSelector",),
    "memory.records": ("TokenBatch", "TokenGroup", "TokenMemoryDataset", "collate_tokens"),
    "scorers.base": ("TokenScorer",),
    "models.presets": ("create_model",),
    "models.adapters": ("get_adapter",),
    "scorers": ("get_scorer", "list_scorers"),
    "selectors": ("get_selector", "list_selectors"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
