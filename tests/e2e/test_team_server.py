"""The team server tier: PostgreSQL (Debian's `postgresql`, on 127.0.0.1) behind `mlflow server`
with proxied artifacts; the same commands run against it through MLFLOW_TRACKING_URI=http://...,
and Optuna studies share one PostgreSQL study store.

The fixture starts PostgreSQL when it is not running, makes a throwaway role and databases and
drops them afterwards. Skipped (with the reason) only when PostgreSQL is not installed outside CI;
under CI (CI=true; `.ci/run` installs it) it must run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def _clusters() -> list[tuple[str, str, str]]:
    """(version, cluster, status) of each PostgreSQL cluster (Debian's pg_lsclusters)."""
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    return [(p[0], p[1], p[3]) for p in (line.split() for line in out.splitlines()) if len(p) > 3]


def _psql(sql: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
                   check=True, capture_output=True, text=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """(SQLAlchemy URL of a tracking database, URL of a study database) on 127.0.0.1."""
    if shutil.which("pg_lsclusters") is None or not _clusters():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed: .ci/run must install it (apt-get install -y postgresql)")
        pytest.skip("PostgreSQL is not installed (Debian package `postgresql`; .ci/run installs it)")
    version, cluster, status = _clusters()[0]
    if status != "online":
        subprocess.run(["pg_ctlcluster", version, cluster, "start", "-o", "-c listen_addresses=127.0.0.1"],
                       check=True, timeout=120)
    port = int(subprocess.run(["pg_conftool", version, cluster, "show", "-s", "port"], capture_output=True,
                              text=True).stdout.strip() or 5432)
    name = f"mn_test_{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    _psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    _psql(f"CREATE DATABASE {name} OWNER {name}")
    _psql(f"CREATE DATABASE {name}_study OWNER {name}")
    base = f"postgresql+psycopg://{name}:{password}@127.0.0.1:{port}"
    yield f"{base}/{name}", f"{base}/{name}_study"
    for db in (name, f"{name}_study"):
        _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    _psql(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """`mlflow server` on PostgreSQL with proxied artifacts, on a free 127.0.0.1 port: its URL."""
    import requests

    tracking_db, _ = postgres
    root = tmp_path_factory.mktemp("team")
    port = _free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", tracking_db, "--artifacts-destination",
         str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # migrations on a fresh database take a while on a loaded machine
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(1)
    else:
        server.kill()
        pytest.fail("mlflow server did not answer /health in 600 s")
    yield url
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": url, "MLFLOW_NUMERAI_CACHE": str(tmp_path / "cache"),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    return env


def _cli(*args: str, env: dict, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mlflow-numerai"), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _study(*args: str, env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mlflow-numerai"), "study", *args], env=env, cwd=cwd,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _trial_runs(client, study_name: str) -> list:
    return client.search_runs(["0"], filter_string=f"tags.`numerai.study` = '{study_name}'"
                                                   " and tags.`numerai.study_trial` != ''", max_results=1000)


def test_two_workers_share_one_postgresql_study(team_server, postgres, synthetic_dir, tmp_path):
    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    _, study_db = postgres
    env = _env(team_server, tmp_path)
    args = ["baseline", "--trials", "6", "--storage", study_db, "--study-name", "team-two",
            "--heartbeat", "2", "--data-dir", str(synthetic_dir), "--registered-model-name", "team-study"]
    workers = [_study(*args, env=env, cwd=tmp_path, log=tmp_path / f"w{i}.log") for i in range(2)]
    codes = [w.wait(timeout=1500) for w in workers]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs

    study = optuna.load_study(study_name="team-two", storage=study_db)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    assert all("ran" in log for log in logs)
    client = MlflowClient(team_server)
    runs = _trial_runs(client, "team-two")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 6
    assert sorted(int(r.data.tags["numerai.study_trial"]) for r in finished) == sorted(t.number for t in complete)
    (version,) = client.search_model_versions("name = 'team-study'")
    assert version.run_id == study.best_trial.user_attrs["mlflow_run_id"]
    assert version.tags["numerai.study"] == "team-two"


def test_a_killed_workers_trial_is_retried(team_server, postgres, synthetic_dir, tmp_path):
    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    _, study_db = postgres
    env = _env(team_server, tmp_path)
    args = ["baseline", "--trials", "6", "--storage", study_db, "--study-name", "team-kill",
            "--heartbeat", "2", "--data-dir", str(synthetic_dir), "--registered-model-name", "none"]
    keeper = _study(*args, env=env, cwd=tmp_path, log=tmp_path / "keeper.log")
    study = None
    for _ in range(600):  # the keeper creates the study, so it is the one that finishes it
        try:
            study = optuna.load_study(study_name="team-kill", storage=study_db)
            if "mlflow_run_id" in study.user_attrs:
                break
        except KeyError:
            pass
        time.sleep(1)
    victim = _study(*args, env=env, cwd=tmp_path, log=tmp_path / "victim.log")
    killed_trial = None
    for _ in range(1200):  # wait for a trial of the victim (pid recorded on the trial) to train
        running = study.get_trials(states=(TrialState.RUNNING,))
        mine = [t for t in running if t.user_attrs.get("worker_pid") == victim.pid and "mlflow_run_id" in t.user_attrs]
        if mine:
            killed_trial = mine[0]
            break
        if victim.poll() is not None:
            break
        time.sleep(0.5)
    assert killed_trial is not None, (tmp_path / "victim.log").read_text()
    os.kill(victim.pid, signal.SIGKILL)  # only the process this test started
    victim.wait(timeout=60)
    assert keeper.wait(timeout=1500) == 0, (tmp_path / "keeper.log").read_text()

    trials = {t.number: t for t in study.get_trials()}
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert trials[killed_trial.number].state == TrialState.FAIL
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == killed_trial.number]
    assert len(retried) == 1 and retried[0].params == killed_trial.params
    client = MlflowClient(team_server)
    runs = _trial_runs(client, "team-kill")
    assert sum(r.info.status == "FINISHED" for r in runs) == 6
    killed_run = [r for r in runs if r.data.tags["numerai.study_trial"] == str(killed_trial.number)]
    assert [r.info.status for r in killed_run] == ["KILLED"]



def test_pipeline_commands_and_races_against_the_team_server(team_server, tmp_path, monkeypatch):
    """data -> 4 trainings at once -> validate -> 2 racing promotions -> dashboard queries -> deployment."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.deployments import get_deploy_client

    from mlflow_numerai import dashboard

    env = _env(team_server, tmp_path)
    data_dir = tmp_path / "data"
    proc = _cli("data", "synth", "--out", str(data_dir), "--eras-train", "30", "--eras-validation", "12",
                "--rows-per-era", "100", "--features", "20", "--no-progress", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    trainings = [subprocess.Popen([str(BIN / "mlflow-numerai"), "train", "baseline", "--data-dir", str(data_dir),
                                   "--feature-set", "all", "--alpha", str(a), "--registered-model-name", "team-base"],
                                  env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for a in (0.01, 0.1, 1.0, 10.0)]
    outs = [(t.wait(timeout=1200), *t.communicate()) for t in trainings]
    assert [rc for rc, _, _ in outs] == [0, 0, 0, 0], [err[-1500:] for _, _, err in outs]
    client = MlflowClient(team_server)
    versions = client.search_model_versions("name = 'team-base'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]

    for version in ("1", "2"):
        proc = _cli("validate", f"models:/team-base/{version}", "--data-dir", str(data_dir), env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    racers = [subprocess.Popen([str(BIN / "mlflow-numerai"), "promote", "team-base", "--version", v, "--json"],
                               env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for v in ("1", "2")]
    results = [(r.wait(timeout=600), *r.communicate()) for r in racers]
    assert [rc for rc, _, _ in results] == [0, 0], results
    champion = client.get_model_version_by_alias("team-base", "champion")
    assert champion.version in ("1", "2")
    # One @champion, and a true history: the registered model records the last promotion, whose
    # previous version is the other racer's (or none when it went first and was overwritten).
    model_tags = client.get_registered_model("team-base").tags
    assert model_tags["numerai.promotion.champion.version"] == champion.version
    other = ({"1", "2"} - {champion.version}).pop()
    assert model_tags.get("numerai.promotion.champion.previous_version") == other
    promoted = [json.loads(out) for _, out, _ in results]
    assert sorted(p["version"] for p in promoted) == ["1", "2"]

    runs = dashboard.runs_table(team_server)
    assert (runs["family"] == "baseline").sum() >= 4
    states = dashboard.model_versions(team_server)
    mine = states[states["name"] == "team-base"]
    assert set(mine.loc[mine["version"].isin([1, 2]), "upload_state"]) == {"Success"}
    assert not dashboard.promotion_audit(team_server, states).empty

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server)
    mlflow.set_tracking_uri(team_server)
    record = get_deploy_client("numerai").create_deployment(
        "team-slot", "models:/team-base@champion", config={"live": str(data_dir / "live.parquet")})
    assert record["state"] == "Success"
    assert record["model_version"] == champion.version
