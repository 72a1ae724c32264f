"""Tracking defaults: where runs and artifacts go."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
from mlflow import MlflowClient

from mlflow_numerai.tracking import default_tracking_uri, ensure_tracking_uri, get_or_create_experiment


def test_default_is_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = ensure_tracking_uri()
    assert uri == default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == uri  # children (mlflow run steps) share it
    assert mlflow.get_tracking_uri() == uri


def test_a_set_uri_is_respected(tmp_path, monkeypatch):
    set_uri = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", set_uri)
    monkeypatch.chdir(tmp_path)
    assert ensure_tracking_uri() == set_uri
    explicit = f"sqlite:///{tmp_path / 'explicit.db'}"
    assert ensure_tracking_uri(explicit) == explicit


def test_cli_run_lands_in_cwd_store(tmp_path):
    """A command run with no URI set writes its run into `mlflow.db` where it was started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    code = ("from mlflow_numerai.tracking import ensure_tracking_uri; import mlflow; ensure_tracking_uri(); "
            "run = mlflow.start_run(); mlflow.log_param('marker', 'cwd-store'); mlflow.end_run(); "
            "print(run.info.run_id)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=500,
                          capture_output=True, text=True)
    run_id = done.stdout.strip().splitlines()[-1]
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)  # that store holds the run
    assert run.data.params == {"marker": "cwd-store"} and run.info.status == "FINISHED"


def test_new_experiment_artifacts_stay_beside_the_default(tracking_uri, tmp_path, monkeypatch):
    """Created from another working directory (as under `mlflow run`), artifacts still go under
    the store's artifact root, not into that directory."""
    root = tmp_path / "root"
    elsewhere = tmp_path / "projects"
    root.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(root)
    client = MlflowClient()
    default_location = client.get_experiment("0").artifact_location
    monkeypatch.chdir(elsewhere)
    exp_id = get_or_create_experiment("numerai-uploads", client)
    location = client.get_experiment(exp_id).artifact_location
    assert location.rsplit("/", 1)[0] == default_location.rsplit("/", 1)[0]
    assert str(elsewhere) not in location
    assert get_or_create_experiment("numerai-uploads", client) == exp_id
