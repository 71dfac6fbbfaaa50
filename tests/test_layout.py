"""The package layout: no import cycles (counting imports inside functions), and the library
core does not import the run harness."""
import ast
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
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c.startswith("avalanche_cts")}
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


def test_library_core_does_not_import_the_harness():
    graph = _graph()
    core = [m for m in graph if not m.startswith("avalanche_cts.harness") and m != "avalanche_cts"]
    leaks = {m: sorted(d for d in graph[m] if d.startswith("avalanche_cts.harness"))
             for m in core}
    assert not {m: d for m, d in leaks.items() if d}
