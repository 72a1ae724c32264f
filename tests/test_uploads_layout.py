"""Layout (issue 12 item 5): imports run one way, uploads -> registry/upload_states -> ... and the
sandbox imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import mlflow_numerai

PACKAGE = Path(mlflow_numerai.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports (top level or inside functions), as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the file's package
                base = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level])
                names.add(f"{base}.{node.module}")
            else:
                names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_sandbox_imports_nothing_above_it():
    above = ("mlflow_numerai.registry", "mlflow_numerai.uploads", "mlflow_numerai.upload_states",
             "mlflow_numerai.tracking")
    files = sorted((PACKAGE / "sandbox").glob("*.py"))
    assert files, "no sandbox modules found"
    bad = {f.name: sorted(m for m in _imported_modules(f) if m.startswith(above)) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}
    # packaging sits below the sandbox (issue 13); of it the sandbox uses only the output contract
    packaging = {m for f in files for m in _imported_modules(f) if m.startswith("mlflow_numerai.packaging")}
    assert {m for m in packaging if not m.startswith("mlflow_numerai.packaging.contract")} <= {
        "mlflow_numerai.packaging", "mlflow_numerai.packaging.contract"}, packaging


def test_registry_and_states_do_not_import_the_upload_flow():
    for name in ("registry.py", "upload_states.py"):
        imported = _imported_modules(PACKAGE / name)
        assert not [m for m in imported if m.startswith(("mlflow_numerai.uploads", "mlflow_numerai.sandbox"))], name


def test_the_upload_flow_lives_in_uploads():
    assert not (PACKAGE / "sandbox" / "validate.py").exists()
    assert not (PACKAGE / "sandbox" / "states.py").exists()
    from mlflow_numerai.cli import COMMANDS
    from mlflow_numerai.uploads.validate import ValidationReport, validate

    assert callable(validate) and ValidationReport.__name__ == "ValidationReport"
    assert COMMANDS["validate"][0] == "mlflow_numerai.uploads.cli:validate"
