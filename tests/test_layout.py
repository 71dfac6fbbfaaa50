"""The package layout: every import (at module level, inside functions, or as a lazily
imported ``"module:attribute"`` registry entry) points to the module's own package or to a
layer below it, and there is no import cycle."""
import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "avalanche_cts"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str):
    """Modules of this package imported anywhere in ``path`` (top level or in functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "avalanche_cts" and [a.name for a in node.names] == ["__version__"]:
                continue  # the one version number, read from the package
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c.startswith("avalanche_cts")}
    found |= set(re.findall(r"[\"'](avalanche_cts(?:\.\w+)+):\w+[\"']", path.read_text()))
    return found


def _graph():
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path, name):
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _ancestors(name: str):
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles():
    graph = _graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep in _ancestors(node):  # a package's __init__ runs first anyway
                continue
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


LAYERS = [
    ("avalanche_cts._lazy", "avalanche_cts._checks", "avalanche_cts._files", "avalanche_cts.registry",
     "avalanche_cts.cache"),
    ("avalanche_cts.tokens",),
    ("avalanche_cts.models",),
    ("avalanche_cts.scorers", "avalanche_cts.selectors"),
    ("avalanche_cts.memory",),
    ("avalanche_cts.strategies", "avalanche_cts.evaluation"),
    ("avalanche_cts.benchmarks",),
    ("avalanche_cts.harness",),
]
"""The layers, bottom up (README, Layout). The package's ``__init__`` (the public API, imported
lazily) stands above them all."""


def _place(module: str):
    """(layer index, package) of a module."""
    for i, layer in enumerate(LAYERS):
        for pkg in layer:
            if module == pkg or module.startswith(pkg + "."):
                return i, pkg
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and the README")


def test_imports_point_down_the_layers():
    graph = _graph()
    up = []
    for module, deps in sorted(graph.items()):
        if module == "avalanche_cts":
            continue
        level, pkg = _place(module)
        for dep in sorted(deps):
            if dep == "avalanche_cts":
                up.append(f"{module} -> the package root (import from the module itself)")
                continue
            dep_level, dep_pkg = _place(dep)
            if dep_level > level or (dep_level == level and dep_pkg != pkg):
                up.append(f"{module} -> {dep}")
    assert not up, "imports that do not point down the layers:\n" + "\n".join(up)


def test_the_layer_test_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a planted import of the harness from the memory layer."""
    planted = PKG / "memory" / "_planted_upward.py"
    planted.write_text("from ..harness import config\n")
    try:
        try:
            test_imports_point_down_the_layers()
        except AssertionError as e:
            assert "avalanche_cts.memory._planted_upward -> avalanche_cts.harness" in str(e)
        else:
            raise AssertionError("an upward import went unnoticed")
    finally:
        planted.unlink()
