"""The `numerai` run context provider: installed through the entry point, tags every new run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mlflow
import pytest

import mlflow_numerai
from mlflow_numerai.plugins import run_context


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for this module (creating one runs MLflow's migrations: slow)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('ctx') / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return uri


@pytest.fixture()
def tracking(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    monkeypatch.delenv(run_context.DATA_VERSION_ENV, raising=False)
    monkeypatch.delenv(run_context.FEATURE_SET_ENV, raising=False)
    return store


def _tags(run_id: str) -> dict[str, str]:
    return mlflow.MlflowClient().get_run(run_id).data.tags


def test_provider_is_registered_through_the_entry_point():
    from mlflow.tracking.context.registry import _run_context_provider_registry

    providers = [type(p) for p in _run_context_provider_registry]
    assert run_context.NumeraiRunContextProvider in providers


def test_start_run_gets_version_and_python_tags(tracking):
    with mlflow.start_run() as run:
        pass
    tags = _tags(run.info.run_id)
    assert tags["mlflow_numerai.version"] == mlflow_numerai.__version__
    assert tags["mlflow_numerai.python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "numerai.data_version" not in tags and "numerai.feature_set" not in tags


def test_data_version_and_feature_set_when_known(tracking):
    run_context.set_run_context(data_version="synthetic-abc123", feature_set="medium")
    with mlflow.start_run() as run:
        pass
    tags = _tags(run.info.run_id)
    assert tags["numerai.data_version"] == "synthetic-abc123"
    assert tags["numerai.feature_set"] == "medium"
    # explicit run tags still win over the context
    with mlflow.start_run(tags={"numerai.feature_set": "small"}) as run:
        pass
    assert _tags(run.info.run_id)["numerai.feature_set"] == "small"


def test_blank_env_values_are_not_tagged(monkeypatch):
    monkeypatch.setenv(run_context.DATA_VERSION_ENV, "  ")
    monkeypatch.delenv(run_context.FEATURE_SET_ENV, raising=False)
    assert "numerai.data_version" not in run_context.context_tags()


@pytest.mark.e2e
def test_fresh_process_picks_up_the_plugin(tracking):
    # a new interpreter: nothing imported by hand, only the installed entry point
    code = textwrap.dedent(
        f"""
        import os, mlflow
        os.environ["MLFLOW_NUMERAI_FEATURE_SET"] = "all"
        mlflow.set_tracking_uri("{tracking}")
        with mlflow.start_run() as run:
            pass
        tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
        print(tags["mlflow_numerai.version"], tags["numerai.feature_set"])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[-2:] == [mlflow_numerai.__version__, "all"]
