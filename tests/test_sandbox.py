"""The sandboxed validator: every hostile pickle of the acceptance list gets the right state and
reason, from the API and from the CLI, and no process of a sandbox survives any outcome."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading

import cloudpickle
import numpy as np
import pandas as pd
import psutil
import pytest
from click.testing import CliRunner

from mlflow_numerai.cli.validate import validate as validate_cli
from mlflow_numerai.registry.states import (
    ERROR,
    FAILED,
    PENDING,
    RUNNING,
    SUCCESS,
    VALIDATING,
    TransitionError,
    UploadStateMachine,
)
from mlflow_numerai.sandbox import checks
from mlflow_numerai.sandbox.isolation import THREAD_ENV, TOKEN_ENV, bwrap_status
from mlflow_numerai.sandbox.limits import SandboxLimits, parse_memory
from mlflow_numerai.sandbox.runner import run_pickle
from mlflow_numerai.uploads.validate import ValidationArgumentError, validate

HAS_BWRAP = bwrap_status()[0] is not None


def _namespaces() -> bool:
    from mlflow_numerai.sandbox.isolation import namespace_available

    return namespace_available()


SECRET_VARS = {"MLFLOW_TRACKING_TOKEN": "tok-123", "NUMERAI_SECRET_KEY": "sk-456", "MY_API_KEY": "k-789"}


# ----------------------------------------------------------------------------- hostile pickles
# Each builder returns the bytes of a predict.pkl. Functions are defined inside the builders so
# cloudpickle stores them by value (the child cannot import this test module).
def _good_fn():
    def predict(live):
        import pandas as pd

        ranks = live["feature_a"].rank(method="first").to_numpy()
        return pd.DataFrame({"prediction": ranks / (len(ranks) + 1)}, index=live.index)

    return predict


def good():
    return cloudpickle.dumps(_good_fn())


def _with_output(make):
    base = _good_fn()

    def predict(live):
        return make(base(live), live)

    return cloudpickle.dumps(predict)


def not_a_pickle():
    return b"this is plain text, not a pickle\n"


def truncated():
    data = good()
    return data[: len(data) // 2]


def non_callable():
    return cloudpickle.dumps({"weights": [1, 2, 3]})


def zero_params():
    def predict():
        return None

    return cloudpickle.dumps(predict)


def three_params():
    def predict(live, benchmarks, extra):
        return None

    return cloudpickle.dumps(predict)


def raises():
    def predict(live):
        raise ValueError("model exploded on purpose")

    return cloudpickle.dumps(predict)


def returns_series():
    return _with_output(lambda out, live: out["prediction"])


def column_pred():
    return _with_output(lambda out, live: out.rename(columns={"prediction": "pred"}))


def returns_nan():
    def make(out, live):
        out.iloc[3, 0] = float("nan")
        return out

    return _with_output(make)


def returns_1_5():
    def make(out, live):
        out.iloc[0, 0] = 1.5
        return out

    return _with_output(make)


def drops_ids():
    return _with_output(lambda out, live: out.iloc[10:])


def duplicates_ids():
    import pandas as pd

    return _with_output(lambda out, live: pd.concat([out, out.iloc[:5]]))


def constant():
    return _with_output(lambda out, live: out.assign(prediction=0.5))


def missing_module():
    def predict(live):
        import numerai_module_that_is_not_installed  # noqa: F401

        return None

    return cloudpickle.dumps(predict)


def mlflow_numerai_by_reference():
    # A module-level function of the package is pickled by reference: loading needs the package.
    from mlflow_numerai.sandbox.checks import summary_stats

    return cloudpickle.dumps(summary_stats)


def allocates_6gib():
    def predict(live):
        import numpy as np

        hog = np.ones(6 * 1024**3, dtype=np.uint8)  # touches every page
        return hog

    return cloudpickle.dumps(predict)


def fork_allocates_6gib():
    def predict(live):
        import subprocess
        import sys

        code = "import numpy as np; a = np.ones(6 * 1024**3, dtype=np.uint8); import time; time.sleep(60)"
        subprocess.run([sys.executable, "-c", code])
        import time

        time.sleep(60)

    return cloudpickle.dumps(predict)


def sleeps():
    def predict(live):
        import time

        time.sleep(120)

    return cloudpickle.dumps(predict)


def child_ignores_sigterm():
    def predict(live):
        import subprocess
        import sys

        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
        subprocess.Popen([sys.executable, "-c", code])
        # and one that leaves the process group, to check stragglers are found anyway
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        import time

        time.sleep(300)

    return cloudpickle.dumps(predict)


def tcp_connect(port):
    def predict(live):
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"exfiltrate")
        return None

    return cloudpickle.dumps(predict)


def reads_env():
    base = _good_fn()
    names = list(SECRET_VARS)

    def predict(live):
        import os

        leaked = [n for n in names if n in os.environ] + [n for n in os.environ if n.startswith(("MLFLOW", "NUMERAI"))]
        if leaked:
            raise RuntimeError(f"leaked environment: {leaked}")
        print("HOME", os.environ.get("HOME"), "CWD", os.getcwd(), flush=True)
        return base(live)

    return cloudpickle.dumps(predict)


def busy_threads():
    base = _good_fn()
    thread_vars = list(THREAD_ENV)

    def predict(live):
        import hashlib
        import os
        import threading
        import time

        buf = os.urandom(1 << 20)
        stop = time.monotonic() + 3.0

        def spin():
            while time.monotonic() < stop:
                hashlib.sha256(buf).digest()  # releases the GIL: truly parallel without limits

        threads = [threading.Thread(target=spin) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("affinity", len(os.sched_getaffinity(0)), "omp", os.environ.get("OMP_NUM_THREADS"), flush=True)
        import json

        print("threads", json.dumps({k: os.environ.get(k) for k in thread_vars}), flush=True)
        return base(live)

    return cloudpickle.dumps(predict)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def live_path(tmp_path_factory):
    """A tiny live frame: 100 ids, era, data_type, two int8 features."""
    rng = np.random.default_rng(0)
    ids = pd.Index([f"n{i:04d}" for i in range(100)], name="id")
    frame = pd.DataFrame(
        {"era": "0001", "data_type": "live",
         "feature_a": rng.integers(0, 5, 100).astype("int8"), "feature_b": rng.integers(0, 5, 100).astype("int8")},
        index=ids,
    )
    path = tmp_path_factory.mktemp("live") / "live.parquet"
    frame.to_parquet(path)
    return path


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """Route the sandbox's temporary directories (the child's HOME and cwd among them) into
    tmp_path, to check they are removed and to tell this test's processes from others'."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def sandbox_processes(root=None) -> list[psutil.Process]:
    """Processes that carry a sandbox token (so: started by a sandbox) and whose private HOME is
    under `root` (default: this session's temporary root; other sessions may run sandboxes too)."""
    root = str(root or tempfile.tempdir or _BASETEMP[0])
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if TOKEN_ENV in env and env.get("HOME", "").startswith(root):
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


_BASETEMP: list = []


@pytest.fixture(autouse=True, scope="module")
def no_survivor_after_module(tmp_path_factory):
    _BASETEMP[:] = [tmp_path_factory.getbasetemp()]
    yield
    assert sandbox_processes(_BASETEMP[0]) == [], "a sandbox process survived the test module"


class _Accepted(list):
    """What a test server received, with an event set on each arrival."""

    def __init__(self):
        super().__init__()
        self.event = threading.Event()


@pytest.fixture()
def tcp_server():
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    accepted = _Accepted()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn.recv(100))
                accepted.event.set()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


# ----------------------------------------------------------------------------- acceptance
# (id, builder, expected state, expected reason, extra CLI args)
CASES = [
    ("not_a_pickle", not_a_pickle, FAILED, "unpickle", []),
    ("truncated", truncated, FAILED, "unpickle", []),
    ("non_callable", non_callable, FAILED, "signature", []),
    ("zero_params", zero_params, FAILED, "signature", []),
    ("three_params", three_params, FAILED, "signature", []),
    ("raises", raises, FAILED, "exception", []),
    ("series", returns_series, FAILED, "invalid_output:type", []),
    ("column_pred", column_pred, FAILED, "invalid_output:columns", []),
    ("nan", returns_nan, FAILED, "invalid_output:nan", []),
    ("value_1_5", returns_1_5, FAILED, "invalid_output:range", []),
    ("drops_10_ids", drops_ids, FAILED, "invalid_output:ids_missing", []),
    ("duplicates_ids", duplicates_ids, FAILED, "invalid_output:ids_duplicated", []),
    ("constant", constant, FAILED, "invalid_output:constant", []),
    ("missing_module", missing_module, FAILED, "import", []),
    ("mlflow_numerai_ref", mlflow_numerai_by_reference, FAILED, "import", []),
    ("sleeps", sleeps, FAILED, "timeout", ["--timeout", "3"]),
    ("child_ignores_sigterm", child_ignores_sigterm, FAILED, "timeout", ["--timeout", "4"]),
    ("reads_env", reads_env, SUCCESS, None, []),
    ("python_mismatch", good, FAILED, "python_mismatch",
     ["--python", "3.10" if sys.version_info[:2] != (3, 10) else "3.11"]),
]
MEMORY_CASES = [  # default 4 GiB cap; slow (the kernel must fault 4 GiB in)
    ("allocates_6gib", allocates_6gib, FAILED, "oom", []),
    ("fork_allocates_6gib", fork_allocates_6gib, FAILED, "oom", ["--timeout", "120"]),
]


def _api_kwargs(args: list[str]) -> dict:
    kwargs, limits = {}, {}
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "--timeout":
            limits["timeout_seconds"] = float(value)
        elif flag == "--python":
            kwargs["python"] = value
    if limits:
        kwargs["limits"] = SandboxLimits(**limits)
    return kwargs


def _check(report: dict, state: str, reason: str | None):
    assert (report["status"], report["reason"]) == (state, reason), report.get("message")
    states = [h["state"] for h in report["history"]]
    assert states[0] == PENDING and states[-1] == state
    if reason not in ("python_mismatch",):
        assert RUNNING in states
    for key in ("peak_memory_bytes", "wall_seconds", "cpu_seconds", "network_isolation", "history"):
        assert key in report
    assert report["network_isolation"] in ("namespace", "guard")


def _run(mode, pkl, live_path, args):
    if mode == "api":
        return validate(str(pkl), live=live_path, **_api_kwargs(args)).to_dict()
    result = CliRunner().invoke(validate_cli, [str(pkl), "--live", str(live_path), "--json", *args])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == {SUCCESS: 0, FAILED: 1, ERROR: 2}[report["status"]], result.output
    return report


# The CLI runs the same flow through click; its duplicates are marked e2e to keep the default
# run short on a loaded machine (CI runs them all).
MODES = ["api", pytest.param("cli", marks=pytest.mark.e2e)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_acceptance(case, mode, live_path, private_tmp):
    name, build, state, reason, args = case
    pkl = private_tmp.parent / f"{name}.pkl"
    pkl.write_bytes(build())
    report = _run(mode, pkl, live_path, args)
    _check(report, state, reason)
    assert sandbox_processes() == []
    assert [p.name for p in private_tmp.iterdir() if not p.name.startswith("numerai-sandbox-out")] == []
    if reason == "timeout":  # killed at the limit, and nothing survived (above)
        assert f"limit {float(args[1]):g}s" in report["message"]
    if name == "reads_env":
        line = next(x for x in report["log_tail"].splitlines() if x.startswith("HOME "))
        _, home, _, cwd = line.split()
        assert home == cwd and "numerai-sandbox-" in home  # a private directory ...
        assert not os.path.exists(home)  # ... removed afterwards


@pytest.fixture()
def secret_env(monkeypatch):
    for key, value in SECRET_VARS.items():
        monkeypatch.setenv(key, value)


def test_parent_secrets_do_not_reach_the_model(secret_env, live_path, private_tmp):
    assert os.environ["NUMERAI_SECRET_KEY"] == "sk-456"
    pkl = private_tmp.parent / "env.pkl"
    pkl.write_bytes(reads_env())
    report = validate(str(pkl), live=live_path).to_dict()
    _check(report, SUCCESS, None)
    assert "leaked" not in report["log_tail"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_acceptance_memory(case, mode, live_path, private_tmp):
    name, build, state, reason, args = case
    pkl = private_tmp.parent / f"{name}.pkl"
    pkl.write_bytes(build())
    report = _run(mode, pkl, live_path, args)
    _check(report, state, reason)
    cap = 4 * 1024**3
    assert report["peak_memory_bytes"] > 0.8 * cap  # the peak observed is reported
    from test_sandbox_isolation import expected_memory_enforcement

    assert report["memory_enforcement"] == expected_memory_enforcement()  # which enforcement ran
    assert "GiB" in report["message"]
    assert sandbox_processes() == []


@pytest.mark.parametrize("network", ["namespace", "guard"])
def test_tcp_connection_fails_inside(network, tcp_server, live_path, private_tmp):
    from mlflow_numerai.sandbox.isolation import namespace_available

    if network == "namespace" and not namespace_available():
        pytest.skip("no network namespaces here")
    port, accepted = tcp_server
    pkl = private_tmp.parent / "tcp.pkl"
    pkl.write_bytes(tcp_connect(port))
    report = validate(str(pkl), live=live_path, limits=SandboxLimits(network=network)).to_dict()
    _check(report, FAILED, "network")
    assert report["network_isolation"] == network
    assert any(str(port) in a for a in report["network_attempts"])
    assert accepted == []
    # control: the same server is reachable from here, so the failure came from the sandbox
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"hi")
    accepted.event.wait(60)
    assert accepted == [b"hi"]


def test_tcp_connection_from_the_cli(tcp_server, live_path, private_tmp):
    port, accepted = tcp_server
    pkl = private_tmp.parent / "tcp.pkl"
    pkl.write_bytes(tcp_connect(port))
    report = _run("cli", pkl, live_path, [])
    _check(report, FAILED, "network")
    assert accepted == []
    # the isolation the CLI used, pinned: bubblewrap's own network namespace where it runs here
    assert report["isolation"] == ("bwrap" if HAS_BWRAP else "namespaces" if _namespaces() else "guard")
    assert report["network_isolation"] == ("namespace" if HAS_BWRAP or _namespaces() else "guard")


@pytest.mark.parametrize("mode", MODES)
def test_busy_threads_get_one_cpu(mode, live_path, private_tmp):
    pkl = private_tmp.parent / "busy.pkl"
    pkl.write_bytes(busy_threads())
    report = _run(mode, pkl, live_path, [])
    _check(report, SUCCESS, None)
    # what the child saw: one CPU in its affinity mask and every thread-count variable at 1
    assert "affinity 1 omp 1" in report["log_tail"]
    line = next(x for x in report["log_tail"].splitlines() if x.startswith("threads "))
    seen = json.loads(line.split(" ", 1)[1])
    assert set(seen) == set(THREAD_ENV) and set(seen.values()) == {"1"}


@pytest.mark.parametrize("mode", MODES)
def test_good_model_success_with_diagnostics(mode, synthetic_dir, private_tmp):
    pkl = private_tmp.parent / "good.pkl"
    feature = sorted(c for c in pd.read_parquet(synthetic_dir / "live.parquet").columns if c.startswith("feature"))[0]

    def predict(live):

        ranks = live[feature].rank(method="first")
        return (ranks / (len(ranks) + 1)).to_frame("prediction")

    pkl.write_bytes(cloudpickle.dumps(predict))
    args = ["--validation", str(synthetic_dir / "validation.parquet")]
    if mode == "api":
        report = validate(str(pkl), live=synthetic_dir / "live.parquet",
                          validation=synthetic_dir / "validation.parquet").to_dict()
    else:
        report = _run("cli", pkl, synthetic_dir / "live.parquet", args)
    _check(report, SUCCESS, None)
    assert [h["state"] for h in report["history"]] == [PENDING, RUNNING, VALIDATING, SUCCESS]
    diag = report["diagnostics"]
    valid = pd.read_parquet(synthetic_dir / "validation.parquet")
    assert diag["n_eras"] == valid["era"].nunique() == len(diag["per_era"])
    assert all(-1 <= v <= 1 for v in diag["per_era"].values() if v is not None)
    assert report["predictions"]["rows"] == len(pd.read_parquet(synthetic_dir / "live.parquet"))


def test_two_parameter_predict_gets_the_benchmarks(live_path, private_tmp, tmp_path):
    bench = pd.DataFrame({"v5_lgbm": np.linspace(0.1, 0.9, 100)},
                         index=pd.read_parquet(live_path).index)
    bench_path = tmp_path / "bench.parquet"
    bench.to_parquet(bench_path)

    def predict(live, benchmarks):
        return benchmarks[["v5_lgbm"]].rename(columns={"v5_lgbm": "prediction"}).loc[live.index]

    pkl = private_tmp.parent / "two.pkl"
    pkl.write_bytes(cloudpickle.dumps(predict))
    report = validate(str(pkl), live=live_path, benchmarks=bench_path)
    assert (report.status, report.reason) == (SUCCESS, None), report.message
    assert report.predictions["mean"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- runner details
def test_tree_memory_cap_without_cgroups(live_path, private_tmp):
    """The rlimit+sampler fallback: two children of 300 MiB each pass RLIMIT_AS but the tree breaks 512 MiB."""

    def predict(live):
        import subprocess
        import sys

        code = "import numpy as np, time; a = np.ones(300 * 1024**2, dtype=np.uint8); time.sleep(60)"
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
        for p in procs:
            p.wait()

    pkl = private_tmp.parent / "tree.pkl"
    pkl.write_bytes(cloudpickle.dumps(predict))
    limits = SandboxLimits(memory_bytes=512 * 1024**2, timeout_seconds=60, memory_enforcement="rlimit")
    outcome = run_pickle(pkl, live_path, limits=limits, output_dir=private_tmp.parent / "out")
    assert (outcome.status, outcome.reason) == ("failed", "oom"), outcome.message
    assert outcome.memory_enforcement == "rlimit+sampler"
    assert outcome.peak_rss_bytes > 512 * 1024**2
    assert sandbox_processes() == []


def test_rlimit_single_process_allocation_is_oom(live_path, private_tmp):
    pkl = private_tmp.parent / "big.pkl"
    pkl.write_bytes(allocates_6gib())
    limits = SandboxLimits(memory_bytes=1024**3, timeout_seconds=60, memory_enforcement="rlimit")
    outcome = run_pickle(pkl, live_path, limits=limits, output_dir=private_tmp.parent / "out")
    assert (outcome.status, outcome.reason) == ("failed", "oom")


def test_leftover_daemon_is_killed_after_success(live_path, private_tmp):
    base = _good_fn()

    def predict(live):
        import subprocess
        import sys

        subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(300)"])
        return base(live)

    pkl = private_tmp.parent / "daemon.pkl"
    pkl.write_bytes(cloudpickle.dumps(predict))
    outcome = run_pickle(pkl, live_path, output_dir=private_tmp.parent / "out")
    assert outcome.status == "ok"
    assert outcome.stragglers_killed >= 1
    assert sandbox_processes() == []


def test_parse_memory():
    assert parse_memory("4GiB") == 4 * 1024**3
    assert parse_memory("512MiB") == 512 * 1024**2
    assert parse_memory("1.5G") == int(1.5 * 1024**3)
    assert parse_memory(1000) == 1000
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError, match="memory"):
            parse_memory(bad)


def test_limits_validate_their_parameters():
    with pytest.raises(ValueError, match="cpus"):
        SandboxLimits(cpus=0)
    with pytest.raises(ValueError, match="timeout"):
        SandboxLimits(timeout_seconds=-1)
    with pytest.raises(ValueError, match="network"):
        SandboxLimits(network="off")


def test_bad_arguments_exit_2(live_path, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(validate_cli, [str(tmp_path / "nope.pkl"), "--live", str(live_path)])
    assert missing.exit_code == 2 and "nope.pkl" in missing.output
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(good())
    no_live = runner.invoke(validate_cli, [str(pkl), "--live", str(tmp_path / "absent.parquet"), "--json"])
    assert no_live.exit_code == 2
    assert json.loads(no_live.stdout)["reason"] == "bad_arguments"
    bad_mem = runner.invoke(validate_cli, [str(pkl), "--live", str(live_path), "--memory", "lots"])
    assert bad_mem.exit_code == 2 and "memory" in bad_mem.output
    with pytest.raises(ValidationArgumentError, match="--python"):
        validate(str(pkl), live=live_path, python="2.7")


# ----------------------------------------------------------------------------- checks, states
def _csv(ids, values, columns=("id", "prediction")):
    return pd.DataFrame({columns[0]: ids, columns[1]: values})


@pytest.mark.parametrize(
    "frame, check",
    [
        (_csv(["a", "b", "c"], [0.1, 0.2, 0.3], ("id", "pred")), "columns"),
        (_csv(["a", "a", "b", "c"], [0.1, 0.1, 0.2, 0.3]), "ids_duplicated"),
        (_csv(["a", "b"], [0.1, 0.2]), "ids_missing"),
        (_csv(["a", "b", "c", "zz"], [0.1, 0.2, 0.3, 0.4]), "ids_unknown"),
        (_csv(["a", "b", "c"], [0.1, 1.2, 0.3]), "range"),
        (_csv(["a", "b", "c"], [0.5, 0.5, 0.5]), "constant"),
        (_csv(["a", "b", "c"], [0.5, None, 0.2]), "nan"),
    ],
)
def test_submission_checks_name_the_check(frame, check):
    failures = checks.check_submission(frame, pd.Index(["a", "b", "c"]))
    assert failures and failures[0].check == check
    assert failures[0].reason == f"invalid_output:{check}"


def test_submission_checks_accept_a_valid_frame():
    assert checks.check_submission(_csv(["c", "a", "b"], [0.1, 0.9, 0.3]), pd.Index(["a", "b", "c"])) == []


def test_forecast_checks():
    contract = {"columns": ["realgdp", "realcons"], "horizon": 3}
    good_frame = pd.DataFrame({"period": [1, 2, 3], "realgdp": [1.0, 2, 3], "realcons": [4.0, 5, 6]})
    assert checks.check_forecast(good_frame, contract) == []
    assert checks.check_forecast(good_frame.iloc[:2], contract)[0].check == "horizon"
    # the request decides the rows when known: a `steps` column, else one row per period
    assert checks.check_forecast(good_frame, contract, request=pd.DataFrame({"steps": [3]})) == []
    assert checks.check_forecast(good_frame, contract, request=pd.DataFrame({"x": [1.0] * 4}))[0].check == "horizon"
    assert checks.check_forecast(good_frame, {"max_horizon": 2})[0].check == "horizon"
    assert checks.check_forecast(good_frame.rename(columns={"realcons": "x"}), contract)[0].check == "columns"
    inf = good_frame.assign(realgdp=[1.0, np.inf, 3])
    assert checks.check_forecast(inf, contract)[0].check == "finite"


def test_forecast_profile_in_the_sandbox(private_tmp, tmp_path):
    example = pd.DataFrame({"steps": [4]})

    def forecast(frame):
        import numpy as np
        import pandas as pd

        steps = int(frame["steps"].iloc[0])
        return pd.DataFrame({"realgdp": np.arange(steps, dtype=float), "infl": np.ones(steps)},
                            index=pd.RangeIndex(steps, name="period"))

    pkl = private_tmp.parent / "fc.pkl"
    pkl.write_bytes(cloudpickle.dumps(forecast))
    example_path = tmp_path / "example.parquet"
    example.to_parquet(example_path)
    ok = validate(str(pkl), live=example_path, profile="forecast")
    assert (ok.status, ok.reason) == (SUCCESS, None), ok.message


def test_state_machine_rules():
    seen = []
    machine = UploadStateMachine(lambda t, h: seen.append((t.state, len(h))))
    with pytest.raises(TransitionError):
        machine.to(RUNNING)
    machine.to(PENDING)
    with pytest.raises(TransitionError, match="reason"):
        machine.to(FAILED)
    machine.to(RUNNING)
    machine.to(VALIDATING)
    machine.to(SUCCESS)
    with pytest.raises(TransitionError):
        machine.to(FAILED, "oom")
    assert seen == [(PENDING, 1), (RUNNING, 2), (VALIDATING, 3), (SUCCESS, 4)]
    times = [t.time for t in machine.history]
    assert times == sorted(times)


def test_one_set_of_check_names():
    """Packaging, the child and the validator name their checks from the one contract module."""
    import inspect
    import re

    from mlflow_numerai.packaging import contract
    from mlflow_numerai.sandbox import runner

    used = set(re.findall(r'CheckFailure\("(\w+)"', inspect.getsource(contract)))
    used |= set(re.findall(r"invalid_output:(\w+)", runner.CHILD_SCRIPT.read_text() + inspect.getsource(runner)))
    assert {"none", "type", "index", "ids_missing", "constant", "horizon", "file", "csv"} <= used
    assert used <= set(contract.CHECKS)
    assert checks.CheckFailure is contract.CheckFailure and checks.check_submission is contract.check_submission


def test_child_script_does_not_import_the_package():
    from mlflow_numerai.sandbox import runner

    source = runner.CHILD_SCRIPT.read_text()
    assert "mlflow_numerai" not in "".join(x for x in source.splitlines() if x.lstrip().startswith(("import", "from")))


def test_survivor_detector_sees_a_running_sandbox(live_path, private_tmp):
    """The 'no process survives' checks above are not vacuous: they see a live sandbox child."""
    pkl = private_tmp.parent / "sleep.pkl"
    pkl.write_bytes(sleeps())
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(o=run_pickle(
        pkl, live_path, limits=SandboxLimits(timeout_seconds=6), output_dir=private_tmp.parent / "out")))
    thread.start()
    seen = []
    while thread.is_alive() and not seen:  # until the detector sees the child, or the run ends
        seen = sandbox_processes()
    thread.join()
    assert seen, "the detector never saw the running child"
    assert outcome["o"].reason == "timeout"
    assert sandbox_processes() == []
