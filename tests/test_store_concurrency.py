"""Concurrent first use of a fresh SQLite tracking store (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

N_PROCESSES = 4

# What a training does with the store: resolve the URI, open the store, an experiment, a run
# with params and metrics, a registered model version.
TRAINING_LIKE = """
import sys, time
from mlflow_numerai.tracking import ensure_tracking_uri, get_or_create_experiment
import mlflow
go = float(sys.argv[1])
time.sleep(max(0.0, go - time.time()))  # all processes reach the store together
ensure_tracking_uri()
mlflow.set_experiment(experiment_id=get_or_create_experiment("concurrency"))
with mlflow.start_run() as run:
    mlflow.log_param("worker", sys.argv[2])
    mlflow.log_metric("m", 1.0)
print("OK", run.info.run_id)
"""


@pytest.mark.timeout(1500)  # a fresh store's migrations take minutes on a loaded 2-core machine
def test_processes_started_together_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    import time

    db = tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    go = time.time() + 8.0  # after every interpreter has imported mlflow
    procs = [
        subprocess.Popen([sys.executable, "-c", TRAINING_LIKE, str(go), str(i)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(N_PROCESSES)
    ]
    # communicate (not wait): a child's full stderr pipe would otherwise block it forever.
    results = [(*p.communicate(timeout=1200), p.returncode) for p in procs]
    results = [(rc, out, err) for out, err, rc in results]
    failed = [err.strip().splitlines()[-1] if err.strip() else f"rc {rc}" for rc, out, err in results if rc != 0]
    assert not failed, f"{len(failed)} of {N_PROCESSES} failed: {failed}"
    runs = MlflowClient(f"sqlite:///{db}").search_runs(
        [MlflowClient(f"sqlite:///{db}").get_experiment_by_name("concurrency").experiment_id])
    assert sorted(r.data.params["worker"] for r in runs) == [str(i) for i in range(N_PROCESSES)]
