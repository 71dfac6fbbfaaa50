"""Experiment configs for ``avalanche-cts run``: a benchmark, run settings and a grid of cells.

A config is a YAML file::

    name: table2_imagenet_r                # default output folder: results/<name>
    out: results/table2_imagenet_r         # optional
    benchmark: {name: imagenet_r, root: /data/imagenet-r, n_experiences: 10}
    run: {model: vit_base_patch16_224.augreg_in21k, pretrained: true, precision: bf16}
    grid:                                  # a list of sub-grids (or one mapping)
      - {method: [core_tokenset], selector: [gradmatch], scorer: [atman], budget: [0.5],
         benchmark.n_experiences: [10, 20], seed: [0, 1, 2, 3, 4]}

Each sub-grid is the Cartesian product of its axes; the cells are all sub-grids in order.
An axis (and a ``--set`` override) names a ``RunConfig`` field (``epochs``, or
``options.buffer.batch_size`` inside a dict field), a benchmark argument
(``benchmark.root``), or, in overrides, a top-level key (``out``). A cell's folder name is
its axes, e.g. ``method=core_tokenset-budget=0.5-seed=0``; a sub-grid with ``_name: inflora``
is named ``inflora`` followed by its axes that take more than one value.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .config import RunConfig

__all__ = ["Cell", "expand_cells", "load_config", "parse_assignment", "select_cells"]

_TOP_KEYS = {"name", "description", "out", "benchmark", "run", "grid"}


@dataclass
class Cell:
    """One run of a grid: its position, folder name, settings and benchmark arguments."""

    index: int
    key: str
    cfg: RunConfig
    benchmark: Dict[str, Any]
    axes: Dict[str, Any]

    def value(self, name: str) -> Any:
        """The effective setting ``name`` (a RunConfig field or ``benchmark.<arg>``)."""
        if name.startswith("benchmark."):
            return self.benchmark.get(name.split(".", 1)[1])
        return _get(vars(self.cfg), name)


def parse_assignment(text: str):
    """``"a.b=value"`` -> ``("a.b", value)`` with the value parsed as YAML (numbers, lists...)."""
    import yaml

    if "=" not in text:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _get(d: Dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _set(d: Dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


def _route(key: str) -> str:
    """Where an axis or override lands in the config: ``run.``, ``benchmark.`` or top level."""
    head = key.split(".", 1)[0]
    if head in ("run", "benchmark") or key in _TOP_KEYS:
        return key
    return f"run.{key}"


def load_config(path, overrides: Sequence[str] = ()) -> Dict:
    """Read a YAML config and apply ``KEY=VALUE`` overrides (:func:`parse_assignment`)."""
    import yaml

    path = Path(path)
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config is a mapping with keys {sorted(_TOP_KEYS)}")
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; valid: {sorted(_TOP_KEYS)}")
    if "benchmark" not in config or "name" not in config["benchmark"]:
        raise ValueError(f"{path}: 'benchmark' needs a 'name' (e.g. imagenet_r, imagenet100)")
    config.setdefault("name", path.stem)
    config.setdefault("run", {})
    for text in overrides:
        key, value = parse_assignment(text)
        _set(config, _route(key), value)
    config.setdefault("out", str(Path("results") / config["name"]))
    return config


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace(" ", "").replace("'", "").replace("/", "_")


def expand_cells(config: Dict) -> List[Cell]:
    """All cells of a config, in grid order."""
    grid = config.get("grid") or [{}]
    grid = [grid] if isinstance(grid, dict) else grid
    valid = {f.name for f in fields(RunConfig)}
    cells, seen = [], set()
    for sub in grid:
        sub = dict(sub)
        label = sub.pop("_name", None)
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in sub.items()}
        for k in axes:
            route = _route(k)
            if route.startswith("run.") and route.split(".")[1] not in valid:
                raise ValueError(f"grid axis {k!r} is not a RunConfig field or benchmark.<arg>")
        for values in itertools.product(*axes.values()):
            point = dict(zip(axes, values))
            merged = {
                "run": copy.deepcopy(config["run"]),
                "benchmark": copy.deepcopy(config["benchmark"]),
            }
            for k, v in point.items():
                _set(merged, _route(k), v)
            named = {k: v for k, v in point.items() if label is None or len(axes[k]) > 1}
            key = (
                "-".join(
                    ([label] if label else [])
                    + [f"{k.split('.')[-1]}={_fmt(v)}" for k, v in named.items()]
                )
                or "run"
            )
            if key in seen:
                raise ValueError(f"two grid cells are both {key!r}")
            seen.add(key)
            cells.append(
                Cell(
                    len(cells), key, RunConfig.from_dict(merged["run"]), merged["benchmark"], point
                )
            )
    return cells


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return float(value) == float(wanted)
    return str(value) == str(wanted)


def select_cells(
    cells: List[Cell], indices: Optional[Sequence[int]] = None, only: Optional[str] = None
) -> List[Cell]:
    """The cells at ``indices`` (``--cell``) whose settings match ``only`` (``--only
    method=coreset,budget=0.01``; keys as in :meth:`Cell.value`)."""
    if indices:
        bad = [i for i in indices if not 0 <= i < len(cells)]
        if bad:
            raise ValueError(f"cell indices {bad} out of range: the config has {len(cells)} cells")
        cells = [cells[i] for i in indices]
    if only:
        wanted = [parse_assignment(part) for part in only.split(",") if part.strip()]
        cells = [c for c in cells if all(_matches(c.value(k), v) for k, v in wanted)]
    return cells
