"""Code layout: imports run one way (tfdeeplab's core ← converters ← benchmarks ← the application
layer), no file over 400 lines, no function over 60.

Parsed from the source (every `import`, also those inside functions), so no module is run.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("tfdeeplab", "converters", "benchmarks")
# The application layer: the only tfdeeplab modules that may use converters and benchmarks.
APPLICATION = {
    "tfdeeplab.cli",
    "tfdeeplab.commands",
    "tfdeeplab.demo",
    "tfdeeplab.demo_report",
    "tfdeeplab.raster_predict",
}


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
}


def imported_modules(name):
    """The project modules `name` imports: `from a.b import c` gives a.b.c if that is a
    module, else a.b."""
    path = MODULES[name]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
            targets = [t if t in MODULES else node.module for t in targets]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return found - {name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def test_the_walk_sees_the_project():
    assert {"tfdeeplab.cli", "converters.tflite", "benchmarks.latency"} <= set(MODULES)
    assert "benchmarks.worker" in GRAPH["benchmarks.latency"]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("tfdeeplab")))
def test_core_modules_import_neither_converters_nor_benchmarks(name):
    if name in APPLICATION:
        pytest.skip("the application layer may")
    outside = sorted(m for m in GRAPH[name] if m.split(".")[0] in ("converters", "benchmarks"))
    assert not outside, f"{name} imports {outside}; only {sorted(APPLICATION)} may"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("converters")))
def test_converters_do_not_import_benchmarks_or_the_application(name):
    bad = sorted(m for m in GRAPH[name] if m.startswith("benchmarks") or m in APPLICATION)
    assert not bad, f"{name} imports {bad}"


def find_cycles(graph):
    """Every import loop, as the list of modules around it (depth-first search)."""
    cycles, state = [], {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_the_cycle_finder_finds_a_loop():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    """A package's __init__ importing its own submodules is how packages are built; a module
    importing its package's __init__ back, or any other loop, is a cycle."""
    assert not find_cycles(GRAPH), "import cycles: " + "; ".join(
        " -> ".join(cycle) for cycle in find_cycles(GRAPH)
    )


MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60  # not counting the docstring


def function_lengths(path):
    """(name, lines without the docstring) of every function and method in `path`."""
    lengths = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                lines -= first.end_lineno - first.lineno + 1
            lengths.append((node.name, lines))
    return lengths


@pytest.mark.parametrize("name", sorted(MODULES))
def test_files_and_functions_stay_readable(name):
    path = MODULES[name]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_FILE_LINES, f"{path}: {lines} lines (at most {MAX_FILE_LINES})"
    long = [(f, n) for f, n in function_lengths(path) if n > MAX_FUNCTION_LINES]
    assert not long, f"{path}: functions over {MAX_FUNCTION_LINES} lines: {long}"
