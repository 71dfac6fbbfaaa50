"""avalanche-cts: core tokensets for the Avalanche continual-learning framework.

A core tokenset keeps, for the most important samples (chosen by a sample selector), only
their most relevant patch tokens (ranked by a token scorer), each with its position.

The library core: :class:`CoreTokensetBuffer` (storage policy), :class:`CoreTokensetReplayPlugin`
(replay), ``scorers``, ``selectors``, ``models`` (adapters), ``benchmarks`` (streams),
``strategies`` (rehearsal-free baselines), ``tokens`` and ``memory``. The run harness (runner,
grids, command line, demo, pretraining, checkpoints) lives in :mod:`avalanche_cts.harness`.
Names are imported on first use, so ``import avalanche_cts`` is cheap.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

from ._lazy import lazy_attributes

__version__ = "0.2.0"

_EXPORTS = {
    "CoreTokensetBuffer": "buffer",
    "TokenMemoryDataset": "buffer",
    "CoreTokensetReplayPlugin": "plugin",
    "Normalization": "normalization",
    "PixelCodec": "memory",
    "TokenBatch": "memory",
    "TokenGroup": "memory",
    "collate_tokens": "memory",
    "create_model": "models",
    "get_adapter": "models",
    "TokenScorer": "scorers",
    "get_scorer": "scorers",
    "list_scorers": "scorers",
    "SampleSelector": "selectors",
    "get_selector": "selectors",
    "list_selectors": "selectors",
    "DEFAULT_RECIPE": "recipe",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)


# Modules that moved into the harness keep their old import paths.
_MOVED = {
    f"{__name__}.{old}": f"{__name__}.harness.{new}"
    for old, new in (("experiment", "runner"), ("pretrain", "pretrain"),
                     ("checkpoint", "checkpoint"), ("grid", "grid"), ("report", "report"),
                     ("demo", "demo"), ("cli", "cli"), ("training_path", "training_path"),
                     ("distributed", "distributed"))
}
_MOVED[f"{__name__}.strategies.methods"] = f"{__name__}.harness.methods"


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as a view of its new module (with a DeprecationWarning)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        target = _MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {target}", DeprecationWarning, stacklevel=3)
        real = importlib.import_module(target)
        view = types.ModuleType(spec.name, real.__doc__)
        view.__getattr__ = lambda name: getattr(real, name)
        view.__all__ = list(getattr(real, "__all__", ()))
        return view

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())
