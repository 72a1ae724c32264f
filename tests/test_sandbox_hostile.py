"""Hostile pickles against a validator run as its own process (`mlflow-numerai validate --json`):
whatever the model does, the validator prints its report, records a final state and keeps
nothing the model could not have been given; nothing of the sandbox is left running or mounted.

Each case runs under bubblewrap (where it works here) and in the fallback (bwrap made "missing"
through MLFLOW_NUMERAI_BWRAP). Where the fallback cannot stop a case, the test says so and checks
that the report calls its isolation partial.

Safety: everything on this machine runs as root, shared with other sessions. The hostile code
only ever targets its own parent (getppid), its own process group, or the pid of a decoy
`sleep` that the test itself started; fork counts are fixed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import psutil
import pytest

from mlflow_numerai.sandbox.cgroups import CGROUP_PREFIX, Cgroup, _cgroup_parents
from mlflow_numerai.sandbox.isolation import TOKEN_ENV, bwrap_status
from mlflow_numerai.sandbox.limits import SandboxLimits
from mlflow_numerai.sandbox.processes import LOG_HEAD_BYTES, LOG_TAIL_BYTES
from mlflow_numerai.sandbox.runner import run_pickle

HAS_BWRAP = bwrap_status()[0] is not None
MODES = [pytest.param("bwrap", marks=pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap cannot run here")),
         "fallback"]


def _good(feature="feature_a"):
    def predict(live):

        ranks = live[feature].rank(method="first")
        return (ranks / (len(ranks) + 1)).to_frame("prediction")

    return predict


def kills_parent():
    base = _good()

    def predict(live):
        import os
        import signal

        parent = os.getppid()
        print("parent", parent, flush=True)
        try:
            os.kill(parent, signal.SIGKILL)
            print("kill parent: sent", flush=True)
        except OSError as exc:
            print("kill parent:", exc, flush=True)
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)  # its own process group (itself included)
        except OSError as exc:
            print("kill group:", exc, flush=True)
        return base(live)

    return predict


def kills_decoy(decoy_pid: int):
    base = _good()

    def predict(live):
        import os
        import signal

        try:
            os.kill(decoy_pid, signal.SIGKILL)  # only the test's own decoy
            print("decoy: killed", flush=True)
        except OSError as exc:
            print("decoy:", exc, flush=True)
        return base(live)

    return predict


def writes_outside(target: str):
    base = _good()

    def predict(live):
        try:
            with open(target, "w") as fh:
                fh.write("escaped")
            print("write: done", flush=True)
        except OSError as exc:
            print("write:", exc, flush=True)
        return base(live)

    return predict


def steals_secret(secret: str):
    """Prints a file of the invoking user's home, then tries the parent's side: predictions.csv
    as a symlink to it, with a forged 'ok' result, so the validator would read the file itself."""

    def predict(live):
        import json
        import os

        try:
            print("secret:", open(secret).read(), flush=True)
        except OSError as exc:
            print("secret:", exc, flush=True)
        os.symlink(secret, "predictions.csv")
        with open("result.json", "w") as fh:
            json.dump({"status": "ok", "final": True, "stage": "done", "reason": None, "message": "forged"}, fh)
        os._exit(0)

    return predict


def fork_bomb(count: int = 300):
    base = _good()

    def predict(live):
        import os
        import time

        for _ in range(count):  # bounded
            if os.fork() == 0:
                time.sleep(300)
                os._exit(0)
        print("forked", count, flush=True)
        return base(live)

    return predict


def floods(megabytes: int = 40):
    base = _good()

    def predict(live):
        import sys

        line = "x" * 1023 + "\n"
        for _ in range(megabytes * 1024):
            sys.stdout.write(line)
        sys.stdout.flush()
        return base(live)

    return predict


# ----------------------------------------------------------------------------- harness
@pytest.fixture(scope="module")
def live_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    ids = pd.Index([f"n{i:04d}" for i in range(100)], name="id")
    frame = pd.DataFrame({"era": "0001", "data_type": "live", "feature_a": rng.integers(0, 5, 100).astype("int8")},
                         index=ids)
    path = tmp_path_factory.mktemp("live") / "live.parquet"
    frame.to_parquet(path)
    return path


def sandbox_processes(root: Path) -> list[psutil.Process]:
    """Processes a sandbox started (they carry its token) whose private HOME is under `root`."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if TOKEN_ENV in env and env.get("HOME", "").startswith(str(root)):
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def _env(tmp_path: Path, mode: str) -> dict:
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    if mode == "fallback":
        env["MLFLOW_NUMERAI_BWRAP"] = str(tmp_path / "no-bwrap-here")
    return env


def run_validator(tmp_path: Path, mode: str, predict, live_path: Path,
                  *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    pkl = tmp_path / "predict.pkl"
    pkl.write_bytes(cloudpickle.dumps(predict))
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow_numerai.cli", "validate", str(pkl), "--live", str(live_path), "--json", *args],
        capture_output=True, text=True, env=_env(tmp_path, mode), cwd=tmp_path, timeout=900,
    )
    assert proc.returncode in (0, 1, 2), f"the validator died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == {"Success": 0, "Failed": 1, "Error": 2}[report["status"]]
    assert report["history"][-1]["state"] == report["status"], "no final state recorded"
    assert sandbox_processes(tmp_path) == [], "a sandbox process survived"
    return report, proc


def _partial(report: dict) -> None:
    """The fallback's report says its isolation is partial."""
    assert report.get("isolation") in ("namespaces", "guard"), report.get("isolation")
    assert any("partial isolation" in w for w in report.get("warnings", []))


# ----------------------------------------------------------------------------- cases
@pytest.mark.parametrize("mode", MODES)
def test_killing_its_parent_and_group_does_not_kill_the_validator(mode, tmp_path, live_path):
    report, proc = run_validator(tmp_path, mode, kills_parent(), live_path)
    if mode == "bwrap":
        assert report["isolation"] == "bwrap"
        assert "parent 1" in report["log_tail"]  # its parent is the namespace's init, unkillable from inside
    else:
        # the model's parent is a disposable shell: the kill lands there, the validator reports it
        assert report["isolation"] in ("namespaces", "guard")
        assert (report["status"], report["reason"]) == ("Failed", "crash")


@pytest.mark.parametrize("mode", MODES)
def test_another_process_of_the_user_survives(mode, tmp_path, live_path):
    decoy = subprocess.Popen(["sleep", "300"])
    try:
        report, _ = run_validator(tmp_path, mode, kills_decoy(decoy.pid), live_path)
        if mode == "bwrap":
            assert decoy.poll() is None, "the decoy was killed from inside the sandbox"
            assert report["isolation"] == "bwrap"
            assert report["status"] == "Success"
        else:  # the fallback shares the process table: it cannot stop this
            _partial(report)
    finally:
        decoy.kill()
        decoy.wait()


@pytest.mark.parametrize("mode", MODES)
def test_writing_outside_the_sandbox_leaves_nothing(mode, tmp_path, live_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "owned.txt"
    report, _ = run_validator(tmp_path, mode, writes_outside(str(target)), live_path)
    if mode == "bwrap":
        assert not target.exists()
        assert list(outside.iterdir()) == []
        assert report["status"] == "Success"
    else:  # the fallback runs as the invoking user on the real filesystem: it cannot stop this
        _partial(report)


@pytest.mark.parametrize("mode", MODES)
def test_a_secret_of_the_invoking_user_appears_nowhere(mode, tmp_path, live_path):
    text = f"secret-{uuid.uuid4().hex}"
    secret = Path.home() / f".mlflow_numerai_test_secret_{uuid.uuid4().hex}"
    secret.write_text(text)
    try:
        report, proc = run_validator(tmp_path, mode, steals_secret(str(secret)), live_path, "--log-run")
    finally:
        secret.unlink()
    # the symlinked predictions are refused, whatever the isolation
    assert (report["status"], report["reason"]) == ("Failed", "invalid_output:file"), report["message"]
    artifacts = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "child_live.log" for p in artifacts), "the artifacts were not logged"
    if mode == "bwrap":
        assert text not in proc.stdout + proc.stderr
        leaked = [str(p) for p in artifacts if text.encode() in p.read_bytes()]
        assert leaked == []
        assert "No such file" in report["log_tail"]
    else:  # the fallback can read the home directory: it cannot stop the print
        _partial(report)
        predictions = [p for p in artifacts if p.name.startswith("predictions")]
        assert all(text.encode() not in p.read_bytes() for p in predictions)


@pytest.mark.parametrize("mode", MODES)
def test_a_bounded_fork_bomb_is_reported_and_nothing_is_left(mode, tmp_path, live_path):
    report, _ = run_validator(tmp_path, mode, fork_bomb(300), live_path)
    assert report["status"] == "Success", report["message"]
    assert "forked 300" in report["log_tail"]
    assert report["stragglers_killed"] >= 300
    assert report["isolation"] in (("bwrap",) if mode == "bwrap" else ("namespaces", "guard"))


@pytest.mark.parametrize("mode", MODES)
def test_flooded_output_is_kept_bounded(mode, tmp_path, live_path):
    report, proc = run_validator(tmp_path, mode, floods(40), live_path, "--log-run")
    assert report["status"] == "Success", report["message"]
    logs = list(tmp_path.rglob("child_live.log"))
    assert logs, "the child's log was not logged"
    bound = LOG_HEAD_BYTES + LOG_TAIL_BYTES + 200
    assert all(p.stat().st_size <= bound for p in logs), [p.stat().st_size for p in logs]
    assert "bytes cut" in logs[0].read_text()
    assert len(proc.stdout) < bound


# ----------------------------------------------------------------------------- leaks
def _owned_cgroups(pid: int) -> list[Path]:
    return [p for parent in _cgroup_parents() for p in parent.glob(f"{CGROUP_PREFIX}{pid}-*")]


def sleeper():
    def predict(live):
        import time

        time.sleep(300)

    return predict


@pytest.mark.parametrize("mode", MODES)
def test_a_sigkilled_validator_leaves_no_cgroup_after_the_next_run(mode, tmp_path, live_path, caplog, monkeypatch):
    import tempfile

    probe = Cgroup.create(SandboxLimits(), [0])
    if probe is None:
        pytest.skip("no writable cgroup here: nothing to leak")
    probe.remove()
    pkl = tmp_path / "sleep.pkl"
    pkl.write_bytes(cloudpickle.dumps(sleeper()))
    validator = subprocess.Popen(
        [sys.executable, "-m", "mlflow_numerai.cli", "validate", str(pkl), "--live", str(live_path), "--json",
         "--timeout", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path, mode))
    try:
        # event: a cgroup named for this validator holds the running child (or the validator ends)
        while validator.poll() is None and not any((g / "cgroup.procs").read_text().strip()
                                                   for g in _owned_cgroups(validator.pid)):
            time.sleep(0.05)
        assert validator.poll() is None, "the validator ended before its sandbox cgroup was seen"
        validator.send_signal(signal.SIGKILL)
        validator.wait()
        assert _owned_cgroups(validator.pid), "precondition: the killed validator's cgroup is left"
        private = list((tmp_path / "tmp").glob(f"numerai-sandbox-{validator.pid}-*"))
        assert private, "precondition: the killed validator's private directory is left"
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where that validator made it
        pkl.write_bytes(cloudpickle.dumps(_good()))
        with caplog.at_level("WARNING", logger="mlflow_numerai.sandbox"):
            outcome = run_pickle(pkl, live_path, output_dir=tmp_path / "next",
                                 limits=SandboxLimits(isolation="auto" if mode == "bwrap" else "fallback"))
        assert outcome.status == "ok"
        assert _owned_cgroups(validator.pid) == []
        assert not any(p.exists() for p in private)
        assert f"pid {validator.pid}" in caplog.text
        assert sandbox_processes(tmp_path) == []
    finally:
        if validator.poll() is None:
            validator.kill()
            validator.wait()
