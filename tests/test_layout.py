"""The layout docs/architecture.md describes holds: packages import one way (no cycle, none hidden
by an import inside a function), modules and functions stay small, `models/` stands alone, click
stays in the command line and Flask at the HTTP edge.

These read the source with `ast`; nothing is imported or run."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "models")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name (a package by its own name)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement names (`from a.b import c` names a.b.c when c is
    a module, a.b otherwise)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's own package
            pkg = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [n for n in names if n in MODULES]


def _imports(function_level: bool) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at module level, or only inside functions)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and (id(node) in inside) == function_level:
                graph[name].update(m for m in _imported(name, node) if m != name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the import graph, as the list of modules around it, or None. A package's
    `__init__` importing its own submodules (re-exports) is not an edge back to itself."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if m.startswith(n + "."):  # a submodule importing its package's __init__
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if state.get(n) is None and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if state.get(m) is None and (found := visit(m)):
            return found
    return None


def test_modules_import_one_way():
    graph = _imports(function_level=False)
    for name in graph:  # an __init__ re-exporting its submodules is not a cycle
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


# docs/architecture.md's layers: a package imports only from packages on a later line (models/
# last: it imports nothing of service/)
LAYERS = [
    ("service.cli",),
    ("service.api", "service.simulation"),
    ("service.runtime",),
    ("service.learning",),
    ("service.offline", "service.decision"),
    ("service.policy",),
    ("service.store",),
    ("service.clock", "service.times", "service.specfile", "service.metrics"),
    ("service.errors",),
    ("models",),
]


def _layer(module: str) -> tuple[int, str]:
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    raise AssertionError(f"{module} is in no layer of docs/architecture.md: add it to LAYERS and the doc")


def test_packages_import_only_from_later_layers():
    wrong = []
    for module, imported in _imports(function_level=False).items():
        if module == "service":  # the top package itself holds nothing
            continue
        rank, package = _layer(module)
        for target in imported:
            target_rank, target_package = _layer(target)
            if target_package != package and target_rank <= rank:
                wrong.append(f"{module} imports {target}")
    assert not wrong, f"imports against the layers of docs/architecture.md: {wrong}"


def test_no_project_import_is_hidden_inside_a_function():
    hidden = {m: sorted(i) for m, i in _imports(function_level=True).items() if i}
    assert not hidden, f"imports inside functions (move them to the module's top): {hidden}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines (at most {MAX_MODULE_LINES})"


def test_no_function_is_long():
    long = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _third_party(name: str) -> set[str]:
    tops = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            tops.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def test_models_stand_alone():
    """`models/` is usable from a notebook: it imports nothing from `service/` and no web framework."""
    for name in MODULES:
        if name.startswith("models"):
            assert not _third_party(name) & {"service", "flask", "werkzeug", "click"}, name


def test_click_only_in_the_command_line_and_flask_only_at_the_http_edge():
    for name in MODULES:
        tops = _third_party(name)
        if "click" in tops:
            assert name.startswith("service.cli"), f"{name} imports click: commands belong in service/cli/"
        if tops & {"flask", "werkzeug"}:
            assert name.startswith("service.api"), f"{name} imports Flask: HTTP belongs in service/api/"
