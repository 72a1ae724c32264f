"""The VARMAX forecast model behind MLflow's real scoring server.

Trains the seed's configuration (small search), which registers, validates in the sandbox and
promotes @champion; then `mlflow models serve -m models:/numerai-varmax@champion --env-manager
local` on a free loopback port answers `dataframe_split` and `dataframe_records` requests with the
in-process forecasts, answers every malformed request with a 4xx naming the problem, and still
serves a good request afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# training + a server start took ~560 s of setup at load average ~30 on 2 cores (600 s default)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

BIN = Path(sys.executable).parent
NAME = "numerai-varmax"
MAX_HORIZON = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"scoring server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"scoring server not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, in-process pyfunc model, example request) with the champion being served
    (one training and one server for the module's tests, in their own tracking store)."""
    import mlflow

    tmp_path = tmp_path_factory.mktemp("varmax-serving")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        patch.setenv("MLFLOW_NUMERAI_CACHE", str(tmp_path / "cache"))
        mlflow.set_tracking_uri(tracking_uri)
        try:
            yield from _serve_champion(tracking_uri, tmp_path)
        finally:
            if mlflow.active_run():
                mlflow.end_run()


def _serve_champion(tracking_uri: str, tmp_path: Path):
    import mlflow
    from click.testing import CliRunner

    from mlflow_numerai.entrypoints.varmax import varmax

    result = CliRunner().invoke(varmax, ["--max-p", "1", "--max-q", "0", "--workers", "1", "--maxiter", "20",
                                         "--max-horizon", str(MAX_HORIZON), "--no-progress"])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert champion.tags["numerai.upload_state"] == "Success"

    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tracking_uri}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
        from mlflow_numerai.families.varmax import PRESETS, load_macrodata

        request = load_macrodata()[list(PRESETS["macrodata-seed"].exog)].iloc[-3:].reset_index(drop=True)
        yield url, model, request
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def post(url: str, payload: dict):
    import requests

    return requests.post(f"{url}/invocations", json=payload, timeout=60)


def split_payload(frame: pd.DataFrame, **extra) -> dict:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}, **extra}


def assert_same_forecast(response, expected: pd.DataFrame) -> None:
    assert response.status_code == 200, response.text
    got = pd.DataFrame(response.json()["predictions"])
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_dtype=False, rtol=1e-12, atol=0)


def test_served_forecasts_equal_in_process_and_bad_requests_get_4xx(served):
    import requests

    url, model, request = served
    expected = model.predict(request)
    assert list(expected.index) == ["2009Q4", "2010Q1", "2010Q2"]  # after the last observation
    assert_same_forecast(post(url, split_payload(request)), expected)
    assert_same_forecast(post(url, {"dataframe_records": request.to_dict(orient="records")}), expected)
    assert_same_forecast(post(url, split_payload(request, params={"alpha": 0.2})),
                         model.predict(request, params={"alpha": 0.2}))

    bad_type = request.astype(object)
    bad_type.loc[0, "cpi"] = "high"
    with_nan = request.copy()
    with_nan.loc[1, "infl"] = np.nan
    malformed = {
        "missing exog column": (split_payload(request.drop(columns=["realint"])), "realint"),
        "wrong type": (split_payload(bad_type), "cpi"),
        "NaN": ({"dataframe_records": [
            {k: (None if pd.isna(v) else v) for k, v in row.items()} for row in with_nan.to_dict(orient="records")
        ]}, "column 'infl' has a missing or infinite value"),
        "zero rows": (split_payload(request.iloc[:0]), "zero rows"),
        "too many rows": (split_payload(pd.concat([request] * 3)), f"more than the maximum horizon {MAX_HORIZON}"),
        "bad alpha": (split_payload(request, params={"alpha": 1.5}), "alpha must be in (0, 1)"),
    }
    for what, (payload, message) in malformed.items():
        response = post(url, payload)
        assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
        assert message in response.json()["message"], f"{what}: {response.text[:800]}"

    # still serving, same numbers
    assert_same_forecast(post(url, split_payload(request)), expected)
    assert requests.get(f"{url}/docs", timeout=10).status_code == 200


# --------------------------------------------------------------------------- fuzz

FUZZ_SEED = 16
FUZZ_COUNT = 160
FUZZ_SECONDS = 240.0
JSON = "application/json"


def fuzz_bodies(rng, request: pd.DataFrame, count: int):
    """`count` seeded (label, body bytes, content type): valid requests, mutated cells (wrong
    types, nulls, huge numbers), wrong shapes (too many/zero rows, missing/duplicate/extra
    columns), bad params and bodies that are not JSON or not MLflow's formats."""
    import json

    columns = list(request.columns)
    rows = request.to_numpy().tolist()
    odd_values = ["high", "", None, True, [], {}, [1.0, 2.0], {"v": 1}, 1e308, -1e308, 10**400, 2**63,
                  -(2**64), 1e-320, 0, "1.5", "NaN", "Infinity"]
    bad_params = [{"alpha": a} for a in ("0.1x", None, [], {}, -1, 0, 1, 1.0, 2, 1e308, True, "")]
    bad_params += [{"beta": 0.1}, {"alpha": 0.1, "steps": 3}, "alpha", [0.1], None]

    def dumps(obj) -> bytes:
        return json.dumps(obj).encode()  # Python's json writes NaN/Infinity for float specials

    def split(data, cols=None, **extra):
        return dumps({"dataframe_split": {"columns": cols if cols is not None else columns, "data": data},
                      **extra})

    def mutated_cells():
        data = [list(r) for r in rows]
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))][rng.randrange(len(columns))] = rng.choice(
                odd_values + [float("nan"), float("inf"), -float("inf")])
        return data

    kinds = [
        ("valid", lambda: (split(rows), JSON)),
        ("valid records", lambda: (dumps({"dataframe_records": [dict(zip(columns, r)) for r in rows]}), JSON)),
        ("mutated cells", lambda: (split(mutated_cells()), JSON)),
        ("null column", lambda: (split([[None if j == rng.randrange(len(columns)) else v for j, v in enumerate(r)]
                                        for r in rows]), JSON)),
        ("huge numbers", lambda: (split([[rng.choice([1e308, -1e308, 1e200]) for _ in columns] for _ in rows]),
                                  JSON)),
        ("too many rows", lambda: (split(rows * rng.choice([3, 10, 400])), JSON)),
        ("zero rows", lambda: (split([]), JSON)),
        ("ragged rows", lambda: (split([r[: rng.randrange(len(r))] for r in rows]), JSON)),
        ("missing column", lambda: (split([r[1:] for r in rows], columns[1:]), JSON)),
        ("duplicate column", lambda: (split([r + r[:1] for r in rows], columns + columns[:1]), JSON)),
        ("extra column", lambda: (split([r + ["x"] for r in rows], columns + ["extra"]), JSON)),
        ("bad params", lambda: (split(rows, params=rng.choice(bad_params)), JSON)),
        ("wrong format", lambda: (dumps(rng.choice([
            {"instances": rows}, {"inputs": rows}, {"inputs": {"a": 1}}, {"dataframe_split": rows},
            {"dataframe_split": {"columns": columns}}, {"dataframe_records": rows}, {"dataframe_split": None},
            {"dataframe_records": [{}]}, {"dataframe_split": {"columns": columns, "data": rows},
                                          "dataframe_records": []}, [], {}, None, 3.5, "text",
            {"dataframe_split": {"columns": 5, "data": "x"}}, {"dataframe_split": {"columns": columns,
                                                                                   "data": [rows]}},
        ])), JSON)),
        ("not JSON", lambda: (rng.choice([b"", b"{", b"not json", b"\xff\xfe\x00", b'{"dataframe_split": ',
                                          bytes(rng.randrange(256) for _ in range(64)), b"[" * 500]), JSON)),
        ("other content type", lambda: (rng.choice([b"a,b\n1,2", b"\x00\x01", split(rows)]),
                                        rng.choice(["text/csv", "text/plain", "application/octet-stream"]))),
    ]
    for i in range(count):
        label, make = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        body, content_type = make()
        yield label, body, content_type


def test_fuzzed_bodies_never_get_a_5xx(served):
    """Seeded random bodies against the real scoring server: each is answered 200 or 4xx (never
    5xx, never a dropped connection), every 4xx carries a message, and it keeps serving."""
    import random

    import requests

    url, model, request = served
    expected = model.predict(request)
    session = requests.Session()
    statuses: dict[str, set[int]] = {}
    server_errors = []
    deadline = time.monotonic() + FUZZ_SECONDS
    sent = 0
    for label, body, content_type in fuzz_bodies(random.Random(FUZZ_SEED), request, FUZZ_COUNT):
        if time.monotonic() > deadline:
            break
        try:
            response = session.post(f"{url}/invocations", data=body, headers={"Content-Type": content_type},
                                    timeout=60)
        except requests.RequestException as exc:
            server_errors.append((label, body[:200], f"{type(exc).__name__}: {exc}"))
            session = requests.Session()
            continue
        sent += 1
        statuses.setdefault(label, set()).add(response.status_code)
        if response.status_code >= 500:
            server_errors.append((label, body[:200], response.status_code, response.text[:300]))
        elif response.status_code >= 400:
            assert response.text.strip(), f"{label}: empty {response.status_code} body"
    assert not server_errors, server_errors[:5]
    assert sent >= 60, f"only {sent} fuzz requests in {FUZZ_SECONDS}s"
    assert statuses["valid"] == {200} and statuses["not JSON"] <= set(range(400, 500))
    assert statuses["too many rows"] <= set(range(400, 500)) and statuses["zero rows"] <= set(range(400, 500))
    assert any(400 <= s < 500 for s in statuses["bad params"])
    assert_same_forecast(post(url, split_payload(request)), expected)  # still serving, same numbers


@pytest.mark.xfail(strict=True, reason="MLflow's scoring server does not catch the RecursionError of "
                   "json.loads on a deeply nested body: 500 or a reset connection instead of a 400")
def test_deeply_nested_json_body_gets_a_4xx(served):
    """Found by the fuzz test (kept out of it): `[` x 5000 as the body. Not this package's code
    (the request never reaches the model); strict, so a fixed MLflow turns this into a failure
    that asks for the mark to go. Last in the module: it may leave the shared server broken."""
    import requests

    url, _, _ = served
    try:
        response = requests.post(f"{url}/invocations", data=b"[" * 5000,
                                 headers={"Content-Type": JSON}, timeout=60)
    except requests.ConnectionError as exc:
        pytest.fail(f"connection failed: {exc}")
    assert 400 <= response.status_code < 500, response.status_code
