"""The package's layout rules, checked on its source: no import cycle between modules, no import
of another module's private helpers, no module over 500 lines (docs/ARCHITECTURE.md)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tfmot_zip"


def _modules() -> dict:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(modules: dict) -> tuple[dict, list]:
    graph, private = {m: set() for m in modules}, []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfmot_zip"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    graph[module].add(full if full in modules else node.module)
                    if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != module:
                        private.append(f"{module} imports {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                graph[module] |= {a.name for a in node.names if a.name in modules}
    return graph, private


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_and_no_private_imports_across_modules():
    modules = _modules()
    assert "tfmot_zip.zipping.api" in modules and "tfmot_zip.core.merge" in modules
    graph, private = _imports(modules)
    assert _cycles(graph) == []
    assert private == []


def test_no_module_over_500_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 500}
    assert long == {}


def test_core_imports_no_keras_and_nothing_outside_core():
    graph, _ = _imports(_modules())
    for module, targets in graph.items():
        if module.startswith("tfmot_zip.core"):
            assert all(t.startswith("tfmot_zip.core") for t in targets), (module, targets)
