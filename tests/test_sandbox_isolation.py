"""Which isolation and enforcement the sandbox used, pinned: bubblewrap or the named fallback,
cgroup or rlimit memory caps, and the network closed to the model's subprocesses, UDP and DNS."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_numerai.cli.validate import validate as validate_cli
from mlflow_numerai.conventions import BWRAP_ENV
from mlflow_numerai.sandbox import cgroups
from mlflow_numerai.sandbox.isolation import bwrap_status, namespace_available
from mlflow_numerai.sandbox.limits import SandboxError, SandboxLimits
from mlflow_numerai.sandbox.runner import run_pickle

HAS_BWRAP = bwrap_status()[0] is not None


@pytest.fixture(scope="module")
def live_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    ids = pd.Index([f"n{i:04d}" for i in range(100)], name="id")
    frame = pd.DataFrame({"era": "0001", "feature_a": rng.integers(0, 5, 100).astype("int8")}, index=ids)
    path = tmp_path_factory.mktemp("live") / "live.parquet"
    frame.to_parquet(path)
    return path


def _good():
    def predict(live):
        ranks = live["feature_a"].rank(method="first")
        return (ranks / (len(ranks) + 1)).to_frame("prediction")

    return predict


def expected_memory_enforcement() -> str:
    """Derived from /proc and /sys here, independently of the runner's own probing."""
    own = dict(line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines())
    v2 = Path("/sys/fs/cgroup") / own.get("", "/").lstrip("/")
    controllers = (v2 / "cgroup.controllers").read_text().split() if (v2 / "cgroup.controllers").exists() else []
    if "" in own and "memory" in controllers and os.access(v2, os.W_OK):
        return "cgroup-v2"
    v1 = Path("/sys/fs/cgroup/memory") / own.get("memory", "/").lstrip("/")
    if "memory" in own and v1.is_dir() and os.access(v1, os.W_OK):
        return "cgroup-v1"
    return "rlimit+sampler"


def test_memory_enforcement_is_the_one_this_machine_allows(live_path, tmp_path):
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(cloudpickle.dumps(_good()))
    outcome = run_pickle(pkl, live_path, output_dir=tmp_path / "out")
    assert outcome.status == "ok", outcome.message
    assert outcome.memory_enforcement == expected_memory_enforcement()
    assert not any("memory cap" in w for w in outcome.warnings)


def test_a_failed_cgroup_falls_back_visibly(live_path, tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(30, "Read-only file system (simulated)")

    monkeypatch.setattr(cgroups.Cgroup, "_create_v1", classmethod(refuse))
    monkeypatch.setattr(cgroups.Cgroup, "_create_v2", classmethod(refuse))
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(cloudpickle.dumps(_good()))
    outcome = run_pickle(pkl, live_path, output_dir=tmp_path / "out")
    assert outcome.status == "ok", outcome.message
    assert outcome.memory_enforcement == "rlimit+sampler"
    assert any("rlimit+sampler" in w and "simulated" in w for w in outcome.warnings), outcome.warnings
    with pytest.raises(SandboxError, match="simulated"):
        run_pickle(pkl, live_path, output_dir=tmp_path / "out2", limits=SandboxLimits(memory_enforcement="cgroup"))


def test_forced_rlimit_is_reported(live_path, tmp_path):
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(cloudpickle.dumps(_good()))
    outcome = run_pickle(pkl, live_path, output_dir=tmp_path / "out", limits=SandboxLimits(memory_enforcement="rlimit"))
    assert (outcome.status, outcome.memory_enforcement) == ("ok", "rlimit+sampler")


# ----------------------------------------------------------------------------- isolation mode
@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap cannot run here")
def test_bwrap_is_used_where_it_runs(live_path, tmp_path):
    base = _good()

    def predict(live):
        import os

        print("view", sorted(os.listdir("/")), "ppid", os.getppid(), "home-visible", os.path.exists("/root/.bashrc"),
              "pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), flush=True)
        return base(live)

    pkl = tmp_path / "view.pkl"
    pkl.write_bytes(cloudpickle.dumps(predict))
    outcome = run_pickle(pkl, live_path, output_dir=tmp_path / "out")
    assert (outcome.status, outcome.isolation, outcome.warnings) == ("ok", "bwrap", []), outcome.message
    line = next(x for x in outcome.log.splitlines() if x.startswith("view "))
    assert "'work'" in line or "'root'" in line  # only the bound prefixes ...
    assert "'home'" not in line and "'var'" not in line and "'opt'" not in line  # ... not the machine's root
    assert "ppid 1 " in line
    assert "home-visible False" in line
    pids = json.loads(line.split("pids ", 1)[1])
    assert max(pids) < 50  # its own PID namespace: a handful of processes, not the machine's


def test_missing_bwrap_falls_back_with_a_warning(live_path, tmp_path, monkeypatch):
    monkeypatch.setenv(BWRAP_ENV, str(tmp_path / "no-bwrap"))
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(cloudpickle.dumps(_good()))
    outcome = run_pickle(pkl, live_path, output_dir=tmp_path / "out")
    assert outcome.status == "ok"
    assert outcome.isolation in ("namespaces", "guard")
    assert any("partial isolation" in w and "no-bwrap" in w and "apt-get install bubblewrap" in w
               for w in outcome.warnings)
    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        run_pickle(pkl, live_path, output_dir=tmp_path / "out2", limits=SandboxLimits(isolation="strict"))


def test_strict_on_the_cli_refuses_without_bwrap(live_path, tmp_path, monkeypatch):
    monkeypatch.setenv(BWRAP_ENV, str(tmp_path / "no-bwrap"))
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(cloudpickle.dumps(_good()))
    result = CliRunner().invoke(validate_cli, [str(pkl), "--live", str(live_path), "--json", "--isolation", "strict"])
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "Error"
    assert "bubblewrap" in report["message"] and "not installed" in report["message"]
    assert "apt-get install bubblewrap" in report["message"]


@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap cannot run here")
def test_strict_on_the_cli_runs_under_bwrap(live_path, tmp_path):
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(cloudpickle.dumps(_good()))
    result = CliRunner().invoke(validate_cli, [str(pkl), "--live", str(live_path), "--json", "--isolation", "strict"])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (result.exit_code, report["status"], report["isolation"]) == (0, "Success", "bwrap"), result.output


# ----------------------------------------------------------------------------- network
class _Servers:
    """A TCP and a UDP server on 127.0.0.1, each recording what arrives."""

    def __init__(self):
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(5)
        self.tcp.settimeout(0.2)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.accepted: list[bytes] = []
        self.arrived = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
                self.accepted.append(conn.recv(100))
                self.arrived.set()
                conn.close()
            except OSError:
                continue

    def datagrams(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.udp.recv(100))
            except BlockingIOError:
                return out

    def close(self):
        self._stop.set()
        self._thread.join()
        self.tcp.close()
        self.udp.close()


@pytest.fixture()
def servers():
    s = _Servers()
    yield s
    s.close()


def tries_the_network(tcp_port: int, udp_port: int):
    base = _good()

    def predict(live):
        import socket
        import subprocess
        import sys

        code = (f"import socket; c = socket.create_connection(('127.0.0.1', {tcp_port}), timeout=5); "
                "c.sendall(b'subprocess'); c.close()")
        rc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True).returncode
        print("subprocess:", "ok" if rc == 0 else "blocked", flush=True)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"udp", ("127.0.0.1", udp_port))
            print("udp: sent", flush=True)
        except OSError as exc:
            print("udp: blocked", exc, flush=True)
        try:
            socket.getaddrinfo("example.com", 443)
            print("dns: ok", flush=True)
        except OSError as exc:
            print("dns: blocked", exc, flush=True)
        return base(live)

    return predict


NETWORK_MODES = [
    pytest.param("auto", "namespace", marks=pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap cannot run here")),
    ("fallback", "namespace"),
    ("fallback", "guard"),
]


@pytest.mark.parametrize(("isolation", "network"), NETWORK_MODES)
def test_subprocess_udp_and_dns_cannot_reach_out(isolation, network, servers, live_path, tmp_path):
    if network == "namespace" and isolation == "fallback" and not namespace_available():
        pytest.skip("no network namespaces here")
    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(cloudpickle.dumps(tries_the_network(servers.tcp.getsockname()[1], servers.udp.getsockname()[1])))
    outcome = run_pickle(pkl, live_path, output_dir=tmp_path / "out",
                         limits=SandboxLimits(isolation=isolation, network=network, timeout_seconds=120))
    assert outcome.status == "ok", outcome.message
    assert outcome.network_isolation == network
    fallback = "namespaces" if network == "namespace" else "guard"
    assert outcome.isolation == {"auto": "bwrap", "fallback": fallback}[isolation]
    assert "dns: blocked" in outcome.log and "dns: ok" not in outcome.log
    assert any("getaddrinfo" in a and "example.com" in a for a in outcome.network_attempts)
    assert servers.datagrams() == []
    if outcome.isolation == "guard":
        # The socket guard lives in the model's interpreter: a subprocess is not under it. The
        # guard-only fallback cannot stop this; it says its isolation is partial.
        assert any("partial isolation (guard)" in w for w in outcome.warnings)
        assert "udp: blocked" in outcome.log
    else:
        assert "subprocess: blocked" in outcome.log
        assert servers.accepted == []
    # control: both servers do receive from here
    servers.arrived.clear()
    with socket.create_connection(servers.tcp.getsockname(), timeout=5) as conn:
        conn.sendall(b"control")
    servers.arrived.wait(60)
    assert servers.accepted[-1] == b"control"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"control", servers.udp.getsockname())
    assert servers.datagrams() == [b"control"]
