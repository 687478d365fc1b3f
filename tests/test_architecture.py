"""The package's import graph: acyclic, persistence independent of the estimators.

Every module of ``sklearn_ltr`` is parsed (not imported) and every import statement
in it counts, at module level or inside a function: a function-level import hides a
cycle from Python until the function runs, not from the design. An import cycle
makes the result depend on which module happens to be imported first, and lets a
module see another half-initialised.
"""

import ast
import itertools
import textwrap
from pathlib import Path

import pytest

import sklearn_ltr

PACKAGE_DIR = Path(sklearn_ltr.__file__).parent
# Modules that define or use the estimators: the persistence code must reach none of
# them, so that saving and loading never depend on the code being saved.
ESTIMATOR_MODULES = {"rnn", "baselines", "preprocessing", "model_selection", "plotting",
                     "analysis", "datasets", "__main__"}


def _module_name(path, root):
    """Dotted name of the module in ``path`` (a package is named by its folder)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(node, name, is_package, modules):
    """The modules of ``modules`` that an Import or ImportFrom ``node`` imports.

    ``from . import x`` imports module ``x`` when the package has one, and otherwise
    the name ``x`` of the package itself; ``from .m import x`` imports ``m`` (and
    ``m.x`` if that is a module).
    """
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if node.level:
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            found.add(f"{base}.{alias.name}")
        elif base in modules:
            found.add(base)
    return found


def import_graph(package_dir):
    """``{module: {imported module: line of the first such import}}`` among the
    modules of the package in ``package_dir``."""
    paths = {_module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    graph = {}
    for name, path in paths.items():
        edges = graph[name] = {}
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported_modules(node, name, is_package, paths):
                    if target != name:  # `from . import x` inside the package root
                        # ast.walk is breadth-first, not in line order.
                        edges[target] = min(edges.get(target, node.lineno), node.lineno)
    return graph


def find_cycle(graph):
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state = {}  # module -> "open" while on the DFS path, "done" once explored
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = "open"
        while stack:
            target = next(stack[-1], None)
            if target is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(target) == "open":
                return path[path.index(target):] + [target]
            elif target not in state:
                state[target] = "open"
                path.append(target)
                stack.append(iter(sorted(graph[target])))
    return None


def import_cycles(graph):
    """Each group of modules that import each other (strongly connected component),
    as ``(sorted modules of the group, one cycle through them)`` with the cycle a
    list of modules (first == last); empty when the graph is acyclic."""
    reach = {module: reachable(graph, module) for module in graph}
    cycles, seen = [], set()
    for module in sorted(graph):
        if module in seen or module not in reach[module]:
            continue
        component = {m for m in reach[module] if module in reach[m]}
        seen |= component
        cycle = find_cycle({m: {t: line for t, line in graph[m].items()
                                if t in component} for m in component})
        cycles.append((sorted(component), cycle))
    return cycles


def describe(cycle, graph, package_dir):
    """The cycle with the file and line of each import in it."""
    steps = [f"{a} imports {b} ({_path_of(a, package_dir)}:{graph[a][b]})"
             for a, b in itertools.pairwise(cycle)]
    return "; ".join(steps)


def _path_of(module, package_dir):
    relative = Path(*module.split(".")[1:])
    if (package_dir / relative / "__init__.py").exists():
        return relative / "__init__.py"
    return relative.with_suffix(".py")


def reachable(graph, start):
    """Every module ``start`` imports, directly or through other modules."""
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


# --------------------------------------------------------------------------- #
# the package
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE_DIR)


def test_graph_covers_the_package(graph):
    assert {"sklearn_ltr", "sklearn_ltr.rnn", "sklearn_ltr._persistence",
            "sklearn_ltr.base"} <= set(graph)
    assert "sklearn_ltr.rnn" in graph["sklearn_ltr"]
    assert "sklearn_ltr.base" in graph["sklearn_ltr.rnn"]


def test_no_import_cycle(graph):
    cycles = import_cycles(graph)
    assert not cycles, (
        f"The modules of sklearn_ltr import each other in {len(cycles)} cycle(s): "
        + " | ".join(f"{describe(cycle, graph, PACKAGE_DIR)} (the whole group: "
                     f"{', '.join(group)})" for group, cycle in cycles)
        + ". Move what both need into a module that imports neither, or register it "
          "(as the estimators register with sklearn_ltr._registry).")


def test_persistence_imports_no_estimator_module(graph):
    forbidden = {f"sklearn_ltr.{m}" for m in ESTIMATOR_MODULES} | {"sklearn_ltr"}
    missing = forbidden - set(graph)
    assert not missing, (
        f"ESTIMATOR_MODULES names {sorted(missing)}, which the package no longer has; "
        f"update the list to the modules that define or use estimators.")
    reached = reachable(graph, "sklearn_ltr._persistence") & forbidden
    assert not reached, (
        f"sklearn_ltr._persistence imports {sorted(reached)}, directly or through "
        f"{sorted(graph['sklearn_ltr._persistence'])}; it must find the classes "
        f"it saves and loads through sklearn_ltr._registry only.")


def test_no_dynamic_imports():
    # The graph above is built from import statements; an import by name at run time
    # would be invisible to it.
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = getattr(func, "attr", None) or getattr(func, "id", None)
                assert called not in ("import_module", "__import__"), (
                    f"{path.name}:{node.lineno} imports a module by name at run time; "
                    f"use an import statement so that tests/test_architecture.py sees "
                    f"it.")


# --------------------------------------------------------------------------- #
# the checker itself, on small packages written for the purpose
# --------------------------------------------------------------------------- #
def _write_package(root, files):
    package = root / "pkg"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text))
    return package


def test_checker_resolves_every_import_form(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "from .a import f\nfrom . import b\n__version__ = '1'\n",
        "a.py": "import pkg.c\nfrom pkg import d\n",
        "b.py": "def g():\n    from .a import f\nfrom .a import f\n",
        "c.py": "from . import __version__\n",
        "d.py": "from .e import thing\nimport os\nfrom numpy import array\n",
        "e.py": "",
    })
    assert import_graph(package) == {
        "pkg": {"pkg.a": 1, "pkg.b": 2},
        "pkg.a": {"pkg.c": 1, "pkg.d": 2},
        "pkg.b": {"pkg.a": 2},  # the first line, though ast.walk meets line 3 first
        "pkg.c": {"pkg": 1},
        "pkg.d": {"pkg.e": 1},
        "pkg.e": {},
    }


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "base.py": "def save():\n    from . import persist\n",
        "persist.py": "from .models import Model\n",
        "models.py": "from .base import save\n",
    })
    graph = import_graph(package)
    cycle = find_cycle(graph)
    assert cycle == ["pkg.base", "pkg.persist", "pkg.models", "pkg.base"]
    assert import_cycles(graph) == [(sorted(cycle[:-1]), cycle)]
    assert describe(cycle, graph, package) == (
        "pkg.base imports pkg.persist (base.py:2); pkg.persist imports pkg.models "
        "(persist.py:1); pkg.models imports pkg.base (models.py:1)")
    assert reachable(graph, "pkg.persist") == {"pkg.models", "pkg.base", "pkg.persist"}


def test_checker_finds_a_cycle_through_the_package_root(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "from .io import load\n__version__ = '1'\n",
        "io.py": "def save():\n    from . import __version__\n",
    })
    assert find_cycle(import_graph(package)) == ["pkg", "pkg.io", "pkg"]


def test_checker_reports_every_cycle(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "from . import a\nfrom . import c\n",
        "c.py": "from . import d\n",
        "d.py": "from . import c\n",
    })
    assert import_cycles(import_graph(package)) == [
        (["pkg.a", "pkg.b"], ["pkg.a", "pkg.b", "pkg.a"]),
        (["pkg.c", "pkg.d"], ["pkg.c", "pkg.d", "pkg.c"])]


def test_checker_accepts_an_acyclic_package(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "from .io import load\nfrom ._version import __version__\n",
        "_version.py": "__version__ = '1'\n",
        "io.py": "from ._version import __version__\n",
    })
    graph = import_graph(package)
    assert find_cycle(graph) is None and import_cycles(graph) == []
    assert reachable(graph, "pkg.io") == {"pkg._version"}


# --------------------------------------------------------------------------- #
# sizes and branches
# --------------------------------------------------------------------------- #
MAX_FUNCTION_LINES = 80  # docstring excluded
MAX_CLASS_LINES = 350


def _body_lines(node):
    """Lines of a function or class, its docstring excluded."""
    n = node.end_lineno - node.lineno + 1
    first = node.body[0] if node.body else None
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        n -= first.end_lineno - first.lineno + 1
    return n


def oversized(source, *, max_function=MAX_FUNCTION_LINES, max_class=MAX_CLASS_LINES):
    """``(name, line, n_lines)`` of every function or class over its limit."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            limit = max_function
        elif isinstance(node, ast.ClassDef):
            limit = max_class
        else:
            continue
        n = _body_lines(node)
        if n > limit:
            found.append((node.name, node.lineno, n))
    return found


def test_no_function_or_class_is_too_long():
    found = [f"{path.name}:{line} {name} ({n} lines)"
             for path in sorted(PACKAGE_DIR.glob("*.py"))
             for name, line, n in oversized(path.read_text())]
    assert not found, (
        f"functions over {MAX_FUNCTION_LINES} lines or classes over "
        f"{MAX_CLASS_LINES} (docstrings excluded): {found}; split them.")


def test_size_checker_counts_without_the_docstring():
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    source = f'def f():\n    """Doc.\n\n    More.\n    """\n{body}\n'
    assert oversized(source) == []  # the def line and 79 lines of code
    assert oversized(source + "    x = 0\n") == [("f", 1, 81)]


def test_rnn_base_class_has_no_branch_on_its_subclass():
    # The two networks differ by their trial-factor strategy (_trial_prior), never
    # by tests of which class they are.
    source = (PACKAGE_DIR / "rnn.py").read_text()
    base = next(node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ClassDef) and node.name == "_BaseRNN")
    names = {"LowTensorRankRNN", "LowRankRNN", "_trial_varying"}
    offending = sorted({
        (node.lineno, getattr(node, "id", getattr(node, "attr", "")))
        for node in ast.walk(base)
        if isinstance(node, (ast.Name, ast.Attribute))
        and getattr(node, "id", getattr(node, "attr", None)) in names})
    assert not offending, offending
    assert "isinstance(self" not in ast.get_source_segment(source, base)
