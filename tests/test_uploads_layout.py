"""Layout (issue 12 item 5, issue 13): imports run one way, cli -> plugins -> uploads -> registry ->
sandbox -> ...; the registry and the upload flow are free of click and of in-function imports of
the package; the commands live in `mlflow_numerai.cli`."""

from __future__ import annotations

import ast
from pathlib import Path

import mlflow_numerai

PACKAGE = Path(mlflow_numerai.__file__).parent
TOP = ("mlflow_numerai.cli", "mlflow_numerai.entrypoints", "mlflow_numerai.dashboard", "mlflow_numerai.plugins")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Every module a file imports, as dotted names, with whether the import is inside a function."""
    found: list[tuple[str, bool]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.col_offset > 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the file's package
                base = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level])
                found.append((f"{base}.{node.module}", node.col_offset > 0))
            else:
                found.append((node.module, node.col_offset > 0))
            found += [(f"{node.module}.{alias.name}", node.col_offset > 0) for alias in node.names]
    return found


def _imported_modules(path: Path) -> set[str]:
    return {name for name, _ in _imports(path)}


def _bad_imports(files: list[Path], above: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {f.name: sorted(m for m in _imported_modules(f) if m.startswith(above)) for f in files}
    return {k: v for k, v in bad.items() if v}


def test_the_sandbox_imports_nothing_above_it():
    above = ("mlflow_numerai.registry", "mlflow_numerai.uploads", *TOP)
    files = sorted((PACKAGE / "sandbox").glob("*.py"))
    assert files, "no sandbox modules found"
    assert _bad_imports(files, above) == {}
    # packaging sits below the sandbox (issue 13); of it the sandbox uses only the output contract
    packaging = {m for f in files for m in _imported_modules(f) if m.startswith("mlflow_numerai.packaging")}
    assert {m for m in packaging if not m.startswith("mlflow_numerai.packaging.contract")} <= {
        "mlflow_numerai.packaging"}, packaging


def test_the_registry_imports_nothing_above_it():
    files = sorted((PACKAGE / "registry").glob("*.py"))
    assert {f.name for f in files} >= {"states.py", "versions.py", "promotion.py"}
    assert _bad_imports(files, ("mlflow_numerai.uploads", "mlflow_numerai.sandbox", *TOP, "click")) == {}
    # the upload states are the bottom of the registry: nothing of the package
    assert not [m for m in _imported_modules(PACKAGE / "registry" / "states.py") if m.startswith("mlflow_numerai")]


def test_the_upload_flow_imports_nothing_above_it():
    files = sorted((PACKAGE / "uploads").glob("*.py"))
    assert _bad_imports(files, (*TOP, "click")) == {}


def test_no_in_function_imports_of_the_package():
    files = [*sorted((PACKAGE / "registry").glob("*.py")), *sorted((PACKAGE / "uploads").glob("*.py")),
             PACKAGE / "plugins" / "deployments.py", PACKAGE / "plugins" / "run_context.py",
             PACKAGE / "tracking.py", PACKAGE / "cli" / "promote.py", PACKAGE / "cli" / "validate.py"]
    inner = {f.name: [m for m, nested in _imports(f) if nested and m.startswith("mlflow_numerai")] for f in files}
    assert {k: v for k, v in inner.items() if v} == {}


def test_the_upload_flow_lives_in_uploads_and_its_commands_in_cli():
    assert not (PACKAGE / "sandbox" / "validate.py").exists()
    assert not (PACKAGE / "sandbox" / "states.py").exists()
    assert not (PACKAGE / "registry.py").exists()
    from mlflow_numerai.cli import COMMANDS
    from mlflow_numerai.uploads.validate import ValidationReport, validate

    assert callable(validate) and ValidationReport.__name__ == "ValidationReport"
    assert COMMANDS["validate"][0] == "mlflow_numerai.cli.validate:validate"
    assert COMMANDS["promote"][0] == "mlflow_numerai.cli.promote:promote_command"
