"""MLflow run context provider (entry point group `mlflow.run_context_provider`, name `numerai`).

Every run started with `mlflow.start_run()` in an environment where this package is installed
gets the tags:

* `mlflow_numerai.version` — this package's version;
* `mlflow_numerai.python` — the Python major.minor (a `predict.pkl` only loads under the same);
* `numerai.data_version` / `numerai.feature_set` — when known, from the environment variables
  `MLFLOW_NUMERAI_DATA_VERSION` / `MLFLOW_NUMERAI_FEATURE_SET` that the entry points set once
  they have resolved their data (see `set_run_context`).
"""

from __future__ import annotations

import os
import sys

from mlflow.tracking.context.abstract_context import RunContextProvider

from mlflow_numerai import __version__
from mlflow_numerai.conventions import (
    DATA_VERSION_ENV,
    DATA_VERSION_TAG,
    FEATURE_SET_ENV,
    FEATURE_SET_TAG,
    PACKAGE_VERSION_TAG,
    PYTHON_TAG,
)


def python_version() -> str:
    """The running Python's major.minor, e.g. "3.11"."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def set_run_context(data_version: str | None = None, feature_set: str | None = None) -> None:
    """Record the data version and feature set for the runs this process starts next (and for
    child processes, which inherit the environment). None leaves a value as it is."""
    if data_version is not None:
        os.environ[DATA_VERSION_ENV] = str(data_version)
    if feature_set is not None:
        os.environ[FEATURE_SET_ENV] = str(feature_set)


def context_tags() -> dict[str, str]:
    """The tags this provider sets on a new run, computed now."""
    tags = {PACKAGE_VERSION_TAG: __version__, PYTHON_TAG: python_version()}
    for env, tag in ((DATA_VERSION_ENV, DATA_VERSION_TAG), (FEATURE_SET_ENV, FEATURE_SET_TAG)):
        value = os.environ.get(env, "").strip()
        if value:
            tags[tag] = value
    return tags


class NumeraiRunContextProvider(RunContextProvider):
    """Tags runs with the mlflow_numerai version, the Python version and, when known, the data
    version and feature set."""

    def in_context(self) -> bool:
        return True

    def tags(self) -> dict[str, str]:
        return context_tags()
