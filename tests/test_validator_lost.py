"""No false state (issue 12 item 4): a live upload state records its holder; once the holder is gone
and its limit + grace are past, every reader sees `Error` (`validator_lost`), written once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from mlflow_numerai import registry
from mlflow_numerai.conventions import (
    LOST_GRACE_ENV,
    UPLOAD_HISTORY_TAG,
    UPLOAD_HOLDER_TAG,
    UPLOAD_REASON_TAG,
    UPLOAD_STATE_TAG,
)
from mlflow_numerai.registry import PromotionError, RegistryRecorder, promote, upload_state, versions
from mlflow_numerai.registry.states import ERROR, LOST_REASON, PENDING, RUNNING, SUCCESS, UploadStateMachine


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Artifacts of the SQLite store default to ./mlruns: keep them in the test's directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def live_path(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"era": "0001", "data_type": "live", "feature_a": rng.integers(0, 5, 60).astype("int8")},
                         index=pd.Index([f"i{i}" for i in range(60)], name="id"))
    path = tmp_path / "live.parquet"
    frame.to_parquet(path)
    return path


def _register(name, predict, live_path):
    import mlflow

    from mlflow_numerai.packaging import log_numerai_model

    with mlflow.start_run():  # a 5-row example: the signature is inferred by calling predict on it
        log_numerai_model(predict, input_example=pd.read_parquet(live_path).head(5), registered_model_name=name)


def _slow_predict():
    def predict(live):
        import time

        if len(live) > 5:  # the validation, not the signature inference
            time.sleep(3600)  # killed long before
        r = live["feature_a"].rank(method="first")
        return (r / (len(r) + 1)).to_frame("prediction")

    return predict


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _dead_pid() -> tuple[int, float]:
    """(pid, start time) of a process this test started and that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = psutil.Process(proc.pid).create_time() if psutil.pid_exists(proc.pid) else time.time()
    proc.wait()
    return proc.pid, start


def _lost_version(client, name: str, *, start: float, limit: float = 10.0, state: str = RUNNING) -> dict:
    """A bare version left at `state` by a holder process that is gone."""
    client.create_registered_model(name)
    client.create_model_version(name, source="file:///nowhere")
    recorder = RegistryRecorder(name, "1", client)
    pid, pid_start = _dead_pid()
    holder = {**registry.holder_record(limit, start=start), "pid": pid, "pid_start": pid_start}
    machine = UploadStateMachine(recorder)
    recorder.hold(holder)
    machine.to(PENDING)
    if state != PENDING:
        recorder.hold(holder)
        machine.to(RUNNING)
    return holder


def _lost_entries(history: list[dict]) -> list[dict]:
    return [h for h in history if h["state"] == ERROR and h["reason"] == LOST_REASON]


def test_sigkilled_validator_is_lost_after_limit_and_grace(tracking_uri, live_path, monkeypatch):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    _register("slow", _slow_predict(), live_path)
    script = ("import sys; from mlflow_numerai.sandbox.runner import SandboxLimits; "
              "from mlflow_numerai.uploads.validate import validate; "
              "validate('models:/slow/1', live=sys.argv[1], limits=SandboxLimits(timeout_seconds=20), image='none')")
    proc = subprocess.Popen([sys.executable, "-c", script, str(live_path)], env={**os.environ},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started_here = []
    try:
        # Wait for the events (Running recorded, the sandbox child started), bounded by a count of
        # polls, not by a timed assert.
        for _ in range(3000):
            running = client.get_model_version("slow", "1").tags.get(UPLOAD_STATE_TAG) == RUNNING
            started_here = _descendants(proc.pid)
            if (running and any("child.py" in " ".join(_cmdline(c)) for c in started_here)) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the validator ended before it reached Running"
        assert client.get_model_version("slow", "1").tags.get(UPLOAD_STATE_TAG) == RUNNING
        os.kill(proc.pid, signal.SIGKILL)  # only the validator this test started
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in started_here:  # its sandbox child, which no parent will time out now
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    tags = client.get_model_version("slow", "1").tags
    holder = json.loads(tags[UPLOAD_HOLDER_TAG])
    assert holder["pid"] == proc.pid and holder["limit"] >= 20
    # within limit + grace: a slow validator, not a lost one
    assert upload_state("slow", "1", client)["state"] == RUNNING
    monkeypatch.setattr(versions, "clock", lambda: holder["start"] + holder["limit"] + 29)
    assert upload_state("slow", "1", client)["state"] == RUNNING
    # past limit + 30 s with the holder gone: promote refuses with validator_lost
    monkeypatch.setattr(versions, "clock", lambda: holder["start"] + holder["limit"] + 31)
    with pytest.raises(PromotionError, match=LOST_REASON):
        promote("slow", "1")
    tags = client.get_model_version("slow", "1").tags
    assert (tags[UPLOAD_STATE_TAG], tags[UPLOAD_REASON_TAG]) == (ERROR, LOST_REASON)
    history = json.loads(tags[UPLOAD_HISTORY_TAG])
    assert [h["state"] for h in history] == [PENDING, RUNNING, ERROR] and len(_lost_entries(history)) == 1
    assert f"pid {proc.pid}" in history[-1]["message"]
    # written once: later readers find Error and write nothing
    for _ in range(2):
        assert upload_state("slow", "1", client)["state"] == ERROR
    assert len(_lost_entries(upload_state("slow", "1", client)["history"])) == 1


def test_a_live_holder_is_never_corrected(tracking_uri, monkeypatch):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    client.create_registered_model("alive")
    client.create_model_version("alive", source="file:///nowhere")
    recorder = RegistryRecorder("alive", "1", client)
    machine = UploadStateMachine(recorder)
    recorder.hold(registry.holder_record(5.0))  # this test's own process: alive
    machine.to(PENDING)
    monkeypatch.setattr(versions, "clock", lambda: time.time() + 3600)
    assert upload_state("alive", "1", client)["state"] == PENDING
    assert registry.correct_lost("alive", "1", client) is False


def test_grace_is_configurable_and_a_lost_pending_is_corrected(tracking_uri, monkeypatch):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    holder = _lost_version(client, "pend", start=time.time(), limit=10.0, state=PENDING)
    monkeypatch.setattr(versions, "clock", lambda: holder["start"] + 12)
    assert upload_state("pend", "1", client)["state"] == PENDING  # default grace 30 s
    monkeypatch.setenv(LOST_GRACE_ENV, "1")
    state = upload_state("pend", "1", client)
    assert (state["state"], state["reason"]) == (ERROR, LOST_REASON)
    monkeypatch.setenv(LOST_GRACE_ENV, "soon")
    with pytest.raises(registry.RegistryError, match=LOST_GRACE_ENV):
        registry.lost_grace()


def test_dashboard_and_deployments_see_the_correction(tracking_uri, monkeypatch):
    from mlflow import MlflowClient

    from mlflow_numerai.dashboard import model_versions

    client = MlflowClient(tracking_uri)
    _lost_version(client, "dash", start=time.time() - 3600)
    _lost_version(client, "dep", start=time.time() - 3600)
    table = model_versions(tracking_uri)
    row = table[table["name"] == "dash"].iloc[0]
    assert (row["upload_state"], row["upload_reason"]) == (ERROR, LOST_REASON)
    assert client.get_model_version("dash", "1").tags[UPLOAD_STATE_TAG] == ERROR  # written, not only shown

    from mlflow_numerai.plugins.deployments import NumeraiDeploymentClient

    deployer = NumeraiDeploymentClient("numerai")
    record = {"name": "slot", "model_name": "dep", "model_version": "1"}
    shown = deployer._with_state(record)
    assert (shown["state"], shown["reason"]) == (ERROR, LOST_REASON)


def test_next_validation_corrects_first(tracking_uri, live_path):
    from mlflow import MlflowClient

    from mlflow_numerai.uploads.validate import validate

    client = MlflowClient(tracking_uri)

    def predict(live):
        r = live["feature_a"].rank(method="first")
        return (r / (len(r) + 1)).to_frame("prediction")

    _register("again", predict, live_path)
    recorder = RegistryRecorder("again", "1", client)
    pid, pid_start = _dead_pid()
    recorder.hold({**registry.holder_record(5.0, start=time.time() - 3600), "pid": pid, "pid_start": pid_start})
    machine = UploadStateMachine(recorder)
    machine.to(PENDING)
    machine.to(RUNNING)
    report = validate("models:/again/1", live=live_path, image="none")
    assert report.status == SUCCESS, report.message
    states = [(h["state"], h["reason"]) for h in upload_state("again", "1", client)["history"]]
    assert states[:3] == [(PENDING, None), (RUNNING, None), (ERROR, LOST_REASON)]
    assert states[-1] == (SUCCESS, None)
