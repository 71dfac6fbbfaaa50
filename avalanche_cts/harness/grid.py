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

Configs are read strictly: a duplicate key, a section of the wrong type, an empty axis or a
value listed twice is refused naming the file and the key; numbers such as ``1e-3`` are
numbers (plain YAML 1.1 reads them as strings). A ``--set`` on a grid axis (or on a part of
one) is refused, since the grid's values would replace it (pick cells with ``--only``). A
cell's folder name and ``name`` (the default ``out`` is ``results/<name>``) must be one
folder name, so nothing is written outside the output folder. The ``run`` section's
``options`` reach the cells whose method reads them (``options.buffer`` the token memories);
a key that no cell's method reads is refused.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .._files import check_folder_name
from .config import RunConfig
from .options import option_keys

__all__ = ["Cell", "check_config", "expand_cells", "load_config", "parse_assignment",
           "read_yaml", "select_cells"]

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


@functools.lru_cache(maxsize=None)
def _loader():
    """A YAML loader that refuses duplicate keys and reads ``1e-3`` as a number."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (YAML would keep only the last value)",
                    key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."))
    return StrictLoader


def read_yaml(text: str, source: str):
    """Parse YAML ``text`` strictly (:func:`_loader`); ``ValueError`` naming ``source`` and
    the line of a syntax error or duplicate key."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ValueError(f"{source}: not valid YAML{where}: {problem}") from None


def parse_assignment(text: str, option: str = "--set"):
    """``"a.b=value"`` -> ``("a.b", value)`` with the value parsed as YAML (numbers, lists...)."""
    if "=" not in text:
        raise ValueError(f"{option} expects KEY=VALUE, got {text!r}")
    key, value = (part.strip() for part in text.split("=", 1))
    if not key or not value:
        raise ValueError(f"{option} {text!r} has no {'key' if not key else 'value'}: write "
                         f"KEY=VALUE, e.g. epochs=1")
    return key, read_yaml(value, f"{option} {text!r}")


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
    """Read a YAML config and apply ``KEY=VALUE`` overrides (:func:`parse_assignment`); every
    section is checked for its type (:func:`check_config`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path}: {'a folder' if path.is_dir() else 'no such file'}"
                                f"; give a YAML file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file: give a YAML config") from None
    config = read_yaml(text, str(path))
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config is a mapping with keys {sorted(_TOP_KEYS)}, got "
                         f"a {type(config).__name__}")
    config.setdefault("name", path.stem)
    config.setdefault("run", {})
    check_config(config, str(path))
    keys = [parse_assignment(text)[0] for text in overrides]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"--set gives {twice} more than once: give each setting once")
    _check_overrides_not_axes(config, keys, str(path))
    for text in overrides:
        key, value = parse_assignment(text)
        _set(config, _route(key), value)
    if "out" not in config:
        check_folder_name(config["name"], f"{path}: name {config['name']!r} (the default output "
                                          f"folder is results/<name>; or set out)")
    config.setdefault("out", str(Path("results") / config["name"]))
    check_config(config, f"{path} with --set {list(overrides)}" if overrides else str(path))
    return config


def _check_overrides_not_axes(config: Dict, keys: Sequence[str], source: str) -> None:
    """``ValueError`` when an override sets a grid axis (or a part of one, or a mapping that
    holds one): the grid's values would replace it in every cell without a word."""
    grid = config.get("grid") or []
    for sub in [grid] if isinstance(grid, dict) else grid:
        for axis, values in sub.items():
            for key in keys:
                a, k = _route(axis), _route(key)
                if axis != "_name" and (a == k or a.startswith(k + ".") or k.startswith(a + ".")):
                    raise ValueError(
                        f"--set {key}=... sets {axis!r}, an axis of the grid of {source} (values "
                        f"{values}), which would replace it in every cell: pick cells with --only "
                        f"{axis}=VALUE, or edit the grid")


def check_config(config: Dict, source: str) -> None:
    """Refuse unknown keys and sections of the wrong type, naming ``source`` and the key."""
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}; valid: {sorted(_TOP_KEYS)}")
    for key in ("name", "description", "out"):
        if key in config and (not isinstance(config[key], str) or not config[key].strip()):
            raise ValueError(f"{source}: {key!r} must be a non-empty string, got {config[key]!r}")
    bench = config.get("benchmark")
    if not isinstance(bench, dict) or not isinstance(bench.get("name"), str):
        raise ValueError(f"{source}: 'benchmark' must be a mapping with a 'name' and its "
                         f"arguments, e.g. benchmark: {{name: imagenet_r, root: DIR}}; got "
                         f"{bench!r}")
    if not isinstance(config["run"], dict):
        raise ValueError(f"{source}: 'run' must be a mapping of RunConfig fields, e.g. "
                         f"run: {{epochs: 2}}; got {config['run']!r}")
    grid = config.get("grid")
    subs = [grid] if isinstance(grid, dict) else grid
    if grid is not None and (not isinstance(subs, list)
                             or not all(isinstance(g, dict) for g in subs)):
        raise ValueError(f"{source}: 'grid' must be a mapping of axes (KEY: [values]) or a list "
                         f"of them, e.g. grid: {{method: [naive, coreset]}}; got {grid!r}")
    for sub in subs or []:
        for axis, values in sub.items():
            if axis == "_name":
                if not isinstance(values, str) or not values.strip():
                    raise ValueError(f"{source}: grid '_name' must be a non-empty string, got "
                                     f"{values!r}")
                continue
            values = values if isinstance(values, list) else [values]
            if not values:
                raise ValueError(f"{source}: grid axis {axis!r} has no values: give at least "
                                 f"one or remove the axis")
            dup = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if dup is not None:
                raise ValueError(f"{source}: grid axis {axis!r} lists {dup!r} twice: give each "
                                 f"value once")


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
                "run": _shared_run(config["run"], point.get("method")),
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
            check_folder_name(key, f"grid cell {key!r} (from _name {label!r})" if label
                              else f"grid cell {key!r}")
            if key in seen:
                raise ValueError(f"two grid cells are both {key!r}")
            seen.add(key)
            cells.append(
                Cell(
                    len(cells), key, _cell_config(key, merged["run"]), merged["benchmark"], point
                )
            )
    _check_shared_options(config["run"], cells)
    return cells


def _cell_config(key: str, run: Dict[str, Any]) -> RunConfig:
    """The ``RunConfig`` of cell ``key``; a bad setting is named with the cell."""
    try:
        return RunConfig.from_dict(run)
    except ValueError as e:
        raise ValueError(f"grid cell {key!r}: {e}") from None


def _shared_run(run: Dict[str, Any], method: Optional[str]) -> Dict[str, Any]:
    """A copy of the config's ``run`` section for a cell of ``method`` (the section's own
    when no axis sets it): its ``options`` keep the keys that method reads, so that shared
    options (``options.buffer``) apply to the cells whose method has a buffer."""
    run = copy.deepcopy(run)
    method = run.get("method", RunConfig.method) if method is None else method
    valid = option_keys(method) if isinstance(method, str) else None
    if valid is not None and isinstance(run.get("options"), dict):
        run["options"] = {k: v for k, v in run["options"].items() if k in valid}
    return run


def _check_shared_options(run: Dict[str, Any], cells: List[Cell]) -> None:
    """``ValueError`` for a key of the ``run`` section's ``options`` that no cell's method
    reads (a typo such as ``bufer``, or an option of a method the grid does not run)."""
    methods = sorted({c.cfg.method for c in cells})
    valid = [option_keys(m) for m in methods]
    for key in (run.get("options") or {}) if isinstance(run.get("options"), dict) else ():
        if not any(v is None or key in v for v in valid):
            readers = sorted(set().union(*(v for v in valid if v is not None)))
            raise ValueError(f"run.options has {key!r}, which no method of the grid "
                             f"({', '.join(methods)}) reads; valid keys: {readers or 'none'}")


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
        wanted = [parse_assignment(part, "--only") for part in only.split(",") if part.strip()]
        cells = [c for c in cells if all(_matches(c.value(k), v) for k, v in wanted)]
    return cells
