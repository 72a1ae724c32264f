"""Tracking defaults shared by the CLI, the entry points and the dashboard."""

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
    return uri
