"""Shared fixtures: a small synthetic data directory and an isolated tracking store."""

from __future__ import annotations

import os

import pytest

# The suite's validations run in this environment unless a test asks for Numerai's image
# (tests/test_images.py): image environments need PyPI and are tested there.
os.environ.setdefault("MLFLOW_NUMERAI_IMAGE", "none")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic Numerai data directory, made once per test session."""
    from mlflow_numerai.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic(
        out, eras_train=60, eras_validation=24, rows_per_era=200, n_features=60, seed=7, progress=False
    )
    return out


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch):
    """A fresh SQLite tracking + registry store for one test."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_NUMERAI_CACHE", str(tmp_path / "cache"))
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def dashboard_store(tmp_path_factory):
    """(tracking URI, what was logged): a store filled the way the project's entry points and
    registry fill it, shared by the dashboard's tests (see tests/dashboard_store.py)."""
    import shutil

    from dashboard_store import empty_store, fill_contract_store

    db = tmp_path_factory.mktemp("dashboard") / "mlflow.db"
    empty_store(f"sqlite:///{db}")
    shutil.copy(db, db.with_name("empty.db"))  # a migrated empty store to copy (migrations are slow)
    return f"sqlite:///{db}", fill_contract_store(f"sqlite:///{db}")
