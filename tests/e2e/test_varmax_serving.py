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

pytestmark = pytest.mark.e2e

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


@pytest.fixture()
def served(tracking_uri, tmp_path):
    """(base URL, in-process pyfunc model, example request) with the champion being served."""
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
