"""The shape of the package (issue 13), checked on the code itself: modules stay small, no two
modules import each other in a circle, and the package is imported at module level only (an
import inside a function hides a dependency from the layers contract). The layers themselves
are import-linter's contract in pyproject.toml (`lint-imports`, run by .ci/run)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import mlflow_numerai

PACKAGE = Path(mlflow_numerai.__file__).parent
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "image_pins" not in p.parts)


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("mlflow_numerai")
    # A package's __init__ re-exporting its own modules is not a cycle of meaning: leave them out.
    packages = {m for m in graph.modules if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    for package in packages:
        for imported in graph.find_modules_directly_imported_by(package):
            if imported.startswith(package + "."):
                graph.remove_import(importer=package, imported=imported)
    assert _cycles(graph) == []


HEAVY = ("tensorflow", "keras", "torch", "pyro", "statsmodels", "streamlit")


def _nested_package_imports(path: Path) -> list[str]:
    """(module, line) of each import of the package inside a function of `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            names = []
            if isinstance(inner, ast.ImportFrom):  # `from pkg import mod` imports pkg.mod
                names = [f"{inner.module}.{a.name}" for a in inner.names]
            elif isinstance(inner, ast.Import):
                names = [a.name for a in inner.names]
            found += [(n, inner.lineno) for n in names if n.startswith("mlflow_numerai")]
            assert not (isinstance(inner, ast.ImportFrom) and inner.level), f"relative import in {path}"
    return found


def test_the_package_is_imported_inside_a_function_only_to_defer_a_heavy_dependency():
    """Allowed only where the imported module loads TensorFlow, torch, Pyro, statsmodels or
    Streamlit when imported (so `--help` and light commands never pay for them)."""
    graph = grimp.build_graph("mlflow_numerai", include_external_packages=True)
    heavy = [h for h in HEAVY if h in graph.modules]

    def loads_heavy(module: str) -> bool:
        while module not in graph.modules and "." in module:
            module = module.rsplit(".", 1)[0]  # `from pkg import name` of a name, not a module
        return any(graph.chain_exists(importer=module, imported=h) for h in heavy)

    nested = {}
    for path in _modules():
        bad = [f"{m} (line {line})" for m, line in _nested_package_imports(path) if not loads_heavy(m)]
        if bad:
            nested[str(path.relative_to(PACKAGE))] = bad
    assert nested == {}
