"""The MLflow Project: `mlflow run projects -e ...` from another directory, and the pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest

from mlflow_numerai.entrypoints import pipeline as pipeline_module

REPO = Path(__file__).resolve().parents[2]
PROJECTS = REPO / "projects"
BIN = Path(sys.executable).parent


def project_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with the venv active and no MLFLOW_TRACKING_URI set."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_NUMERAI_CACHE"] = str(tmp_path / "cache")
    return env


def mlflow_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "mlflow"), "run", str(PROJECTS), "--env-manager", "local", *args],
        cwd=cwd, env=project_env(cwd), capture_output=True, text=True, timeout=480,
    )


@pytest.mark.e2e
def test_baseline_entry_point_from_another_directory(tmp_path, synthetic_dir):
    import mlflow

    from mlflow_numerai.packaging import download_predict_pkl

    # a bad value stops in click's validation, naming the option, before any training
    proc = mlflow_run(tmp_path, "-e", "baseline", "-P", f"data_dir={synthetic_dir}", "-P", "alpha=-1")
    assert proc.returncode != 0
    assert "Invalid value for '--alpha'" in proc.stdout + proc.stderr

    proc = mlflow_run(tmp_path, "-e", "baseline", "-P", f"data_dir={synthetic_dir}",
                      "-P", "registered_model_name=e2e-baseline")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the store is where `mlflow run` was started, not inside the project directory
    assert (tmp_path / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'e2e-baseline'")
    run = client.get_run(version.run_id)
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path)
    assert run.data.tags["numerai.family"] == "baseline"
    assert run.data.tags["mlflow.project.entryPoint"] == "baseline"
    assert run.data.metrics["numerai_corr_mean"] > 0
    assert any(a.path == "numerai_eval" for a in client.list_artifacts(run.info.run_id))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    pkl = download_predict_pkl("models:/e2e-baseline/1", tmp_path / "upload")
    live = pd.read_parquet(synthetic_dir / "live.parquet")
    assert pd.read_pickle(pkl)(live)["prediction"].between(0, 1).all()


@pytest.mark.e2e
def test_pipeline_runs_steps_as_nested_project_runs(tmp_path, monkeypatch):
    import mlflow
    from click.testing import CliRunner

    for key, value in project_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        pipeline_module.pipeline,
        ["--steps", "data", "--param", "data.eras_train=20", "--param", "data.eras_validation=8",
         "--param", "data.rows_per_era=60", "--param", "data.features=20"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "mlflow ui --backend-store-uri" in result.output
    data_dir = pipeline_module.default_data_dir()
    assert (data_dir / "features.json").exists() and data_dir.is_relative_to(tmp_path / "cache")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("numerai.pipeline") == "main"]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert child.data.tags["mlflow.project.entryPoint"] == "data"
    assert child.data.params["eras_train"] == "20"
    summary = json.loads(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/pipeline/summary.json"))
    assert [(s["name"], s["status"], s["run_id"]) for s in summary] == [("data", "FINISHED", child.info.run_id)]


@pytest.mark.e2e
def test_pipeline_reports_a_failed_step_and_stops_when_later_steps_need_it(tmp_path, monkeypatch):
    import mlflow
    from click.testing import CliRunner

    for key, value in project_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(pipeline_module.pipeline,
                                ["--steps", "data,baseline", "--param", "data.rows_per_era=5"])
    assert result.exit_code == 1
    assert "failed step(s): data (run " in result.output
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("numerai.pipeline") == "main"]
    assert parent.info.status == "FAILED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [(r.data.tags["mlflow.project.entryPoint"], r.info.status) for r in children] == [("data", "FAILED")]


# --------------------------------------------------------------------------- pure parts


def test_steps_are_parsed_in_pipeline_order_and_unknown_ones_named():
    names = pipeline_module.step_names()
    assert names[:2] == ["data", "baseline"]
    assert [s.name for s in pipeline_module.parse_steps("baseline,data")] == ["data", "baseline"]
    assert [s.name for s in pipeline_module.parse_steps("all")] == names
    with pytest.raises(click.BadParameter, match=r"unknown step\(s\) \['nope'\]"):
        pipeline_module.parse_steps("data,nope")
    with pytest.raises(click.BadParameter):
        pipeline_module.parse_steps(" , ")


def test_every_step_names_an_entry_point_of_the_mlproject(tmp_path):
    import yaml

    entry_points = yaml.safe_load((PROJECTS / "MLproject").read_text())["entry_points"]
    ctx = pipeline_module.Context(tmp_path, synthetic=True)
    for step in pipeline_module.STEPS:
        assert step.entry_point in entry_points, step.name
        declared = set(entry_points[step.entry_point].get("parameters", {}))
        assert set(step.parameters(ctx)) <= declared, step.name
    assert "main" in entry_points


def test_overrides_are_checked():
    assert pipeline_module.parse_overrides(("baseline.alpha=0.5", "data.seed=3")) == {
        "baseline": {"alpha": "0.5"}, "data": {"seed": "3"}}
    for bad in ("alpha=0.5", "baseline.alpha", "nostep.alpha=1"):
        with pytest.raises(click.BadParameter, match="unknown step|is not STEP"):
            pipeline_module.parse_overrides((bad,))


def test_pipeline_refuses_bad_options_before_running_anything(tmp_path, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_NUMERAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    runner = CliRunner()
    result = runner.invoke(pipeline_module.pipeline, ["--steps", "bogus"])
    assert result.exit_code == 2 and "Invalid value for '--steps'" in result.output
    result = runner.invoke(pipeline_module.pipeline, ["--data-dir", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "Invalid value for '--data-dir'" in result.output
    result = runner.invoke(pipeline_module.pipeline, ["--steps", "baseline"])  # no data made yet
    assert result.exit_code == 2 and "include the 'data' step" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_registered_states_read_upload_state_and_aliases(tracking_uri, tmp_path):
    import mlflow

    client = mlflow.MlflowClient()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path))
    client.set_model_version_tag("m", "1", "numerai.upload_state", "Failed")
    client.set_model_version_tag("m", "1", "numerai.upload_reason", "invalid_output:range")
    client.set_registered_model_alias("m", "champion", "2")
    assert pipeline_module.registered_states(["m/1", "m/2"]) == [
        ("m", "1", "Failed (invalid_output:range)", ""),
        ("m", "2", "not validated", "champion"),
    ]
