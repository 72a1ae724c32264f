"""Tracking defaults shared by the CLI, the entry points, the upload flow and the dashboard.

Owns which tracking/registry store is used (`ensure_tracking_uri`: a given URI, else
`MLFLOW_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db`), opening a SQLite store safely from many
processes at once, and where a new experiment's artifacts go. Imports nothing of the package.
"""

from __future__ import annotations

import os
from pathlib import Path

TRACKING_ENV = "MLFLOW_TRACKING_URI"


def default_tracking_uri(cwd: str | os.PathLike | None = None) -> str:
    """The SQLite store `mlflow.db` in `cwd` (default: the working directory), as an absolute URI."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def ensure_tracking_uri(uri: str | None = None) -> str:
    """Use `uri` if given, else a set MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db`.

    The result is exported to the environment so child processes (MLflow Projects runs, which
    start in another directory) write to the same store. Returns the URI in force.
    """
    import mlflow

    uri = uri or os.environ.get(TRACKING_ENV) or default_tracking_uri()
    os.environ[TRACKING_ENV] = uri
    mlflow.set_tracking_uri(uri)
    open_sqlite_store(uri)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None (in-memory, server, other databases).
    Parsed by SQLAlchemy, as MLflow opens it: `%20` is a space and a `?query` is not the path."""
    if not isinstance(uri, str) or not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(uri).database
    except ArgumentError:
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def open_sqlite_store(uri: str) -> None:
    """Open the tracking and registry stores of a SQLite `uri` under a file lock beside it.

    MLflow creates and migrates a fresh database's schema when a process first opens it; several
    processes doing so at once race (`duplicate column name`, alembic `expected to match one
    row`). Under the lock only the first one migrates; MLflow caches the opened stores, so later
    calls in this process reuse them.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    from filelock import FileLock
    from mlflow.tracking._model_registry.utils import _get_store as registry_store
    from mlflow.tracking._tracking_service.utils import _get_store as tracking_store

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        tracking_store(uri)
        registry_store(uri, uri)


def get_or_create_experiment(name: str, client=None) -> str:
    """The id of experiment `name`, created if missing.

    A new experiment's artifacts go beside the Default experiment's (`<root>/<name>`): MLflow
    would otherwise root them in the working directory of whichever process creates it, which
    under `mlflow run` is the projects directory.
    """
    from mlflow import MlflowClient

    client = client or MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    default = client.get_experiment("0")
    location = None
    if default is not None and default.artifact_location:
        location = default.artifact_location.rstrip("/").rsplit("/", 1)[0] + "/" + name
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
