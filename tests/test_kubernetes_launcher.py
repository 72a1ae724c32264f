"""The cluster launcher (projects/kubernetes): the Job MLflow would submit, rendered with MLflow's
own kubernetes backend functions and validated offline against the Kubernetes schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1] / "projects" / "kubernetes"
K8S_VERSION = "1.30.0"


def render_job(entry_point: str, parameters: dict) -> dict:
    """The Job `mlflow run projects/kubernetes -e ENTRY --backend kubernetes` submits (without the
    docker build/push and the cluster call)."""
    from mlflow.projects import _parse_kubernetes_config, _project_spec
    from mlflow.projects import kubernetes as kb
    from mlflow.projects.utils import get_entry_point_command, get_run_env_vars

    project = _project_spec.load_project(str(PROJECT))
    config = json.loads((PROJECT / "kubernetes_config.json").read_text())
    config["kube-job-template-path"] = str(PROJECT / config["kube-job-template-path"])
    kube = _parse_kubernetes_config(config)
    command = get_entry_point_command(project, entry_point, parameters, storage_dir=None)
    return kb._get_kubernetes_job_definition(
        project.name, f"{config['repository-uri']}:abc1234", "sha256:" + "0" * 64, kb._get_run_command(command),
        get_run_env_vars(run_id="0" * 32, experiment_id="0"), copy.deepcopy(kube["kube-job-template"]))


def test_the_project_is_a_docker_env_project():
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(PROJECT))
    assert project.docker_env["image"] == "mlflow-numerai:latest"
    assert {"study", "baseline"} <= set(project._entry_points)
    dockerfile = (PROJECT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and "team" in dockerfile  # the package with the PostgreSQL client


def test_rendered_study_job_is_a_valid_kubernetes_job():
    import kubernetes_validate

    job = render_job("study", {"family": "baseline", "trials": 12, "study_name": "team-study"})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["mlflow-numerai", "study", "baseline"]
    assert "--study-name" in container["command"] and "team-study" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_RUN_ID"]["value"] == "0" * 32
    assert env["MLFLOW_NUMERAI_STUDY_STORAGE"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert container["image"].endswith("@sha256:" + "0" * 64)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)  # raises on any schema error


def test_the_validator_catches_a_broken_job():
    """The check above can fail: a Job with a misspelled field is rejected offline."""
    import kubernetes_validate

    job = render_job("baseline", {"alpha": 0.1})
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    job["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
