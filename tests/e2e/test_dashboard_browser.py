"""The dashboard in a real browser: `mlflow-numerai dashboard` on a loopback port, headless
Chromium loads every page and finds the model names, upload states and metrics in the DOM.

Screenshots go to tests/artifacts/ (gitignored). With DASHBOARD_SCREENSHOT=<path> the
"Models & uploads" screenshot is also copied there (how docs/dashboard.png is made:
`DASHBOARD_SCREENSHOT=docs/dashboard.png .venv/bin/pytest -m e2e tests/e2e/test_dashboard_browser.py`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dashboard exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if requests.get(f"{url}/_stcore/health", timeout=2).text.strip() == "ok":
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"dashboard at {url} not healthy after {timeout} s")


@pytest.fixture(scope="module")
def server(dashboard_store):
    """The real `mlflow-numerai dashboard` command on a free loopback port."""
    uri, logged = dashboard_store
    port = _free_port()
    env = {**os.environ, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow_numerai.cli", "dashboard", "--tracking-uri", uri, "--port", str(port),
         "--address", "127.0.0.1", "--headless"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, logged
    finally:
        # the command and its streamlit child share our new session's process group
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1500,1900", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _f4(x: float) -> str:
    return f"{x:.4f}"


def _expected(logged) -> dict[str, list[str]]:
    """Per page (url path): strings the rendered DOM must contain."""
    w = logged.forecast
    rmse = np.sqrt(((w["realgdp_actual"] - w["realgdp_forecast"]) ** 2).mean())
    laplace = logged.metrics[logged.bnn["laplace"]]
    best_keras = max(max(h["val_corr_mean"]) for h in logged.keras_history.values())
    top = max((m["numerai_corr_mean"], rid) for rid, m in logged.metrics.items() if "numerai_corr_mean" in m)
    return {
        "": ["Models & uploads", "numerai-baseline", "numerai-bnn", "numerai-keras", "Success", "Failed", "Error",
             "Running", "Not validated", "invalid_output:range", "@champion", "0.0123", "Promotion audit trail"],
        "ensembles": ["Ensembles", "laplace/128-64-64", "normal/128-64-64", "uniform/128-64-64", "baseline (MSE)",
                      _f4(laplace["ensemble_corr_mean"]),
                      "Jensen-Shannon divergence"],
        "uncertainty": ["Uncertainty", "Best burn AUC", "0.625", "0.601", "0.468", "ROC curves"],
        "training": ["Training", "keras-a", "keras-b", _f4(best_keras), "Loader throughput"],
        "forecasts": ["Forecasts", "realgdp test RMSE", _f4(rmse), "Order search", "p = 2, q = 0"],
        "compare": ["Compare", "Per-era corr", "Cumulative corr", _f4(top[0])],
        "diagnostics": _diagnostics_needles(logged),
    }


def _diagnostics_needles(logged) -> list[str]:
    """The Diagnostics page of the first model (numerai-baseline): its tiles and charts."""
    m = logged.metrics[logged.baseline]
    return ["Diagnostics", "CWMM", "TB200", "Churn", "Payout est.", _f4(m["mmc_mean"]), _f4(m["bmc_mean"]),
            _f4(m["churn_mean"]), "Cumulative scores", "Download the per-era table"]


def _wait_for_text(driver, needles: list[str], timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element(By.TAG_NAME, "body").text
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        if all(n in body for n in needles) and not running:
            return body
        time.sleep(0.5)
    missing = [n for n in needles if n not in body]
    raise AssertionError(f"page never showed {missing}; it shows:\n{body[:3000]}")


def test_every_page_renders_models_states_and_metrics(server, browser):
    url, logged = server
    ARTIFACTS.mkdir(exist_ok=True)
    for path, needles in _expected(logged).items():
        started = time.monotonic()
        browser.get(f"{url}/{path}")
        body = _wait_for_text(browser, needles)
        print(f"page /{path}: {time.monotonic() - started:.1f} s")
        assert "Traceback" not in body and "Error running app" not in body
        time.sleep(1.0)  # let Vega finish drawing the charts before the screenshot
        shot = ARTIFACTS / f"dashboard_{path or 'models'}.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        shutil.copy(ARTIFACTS / "dashboard_models.png", os.environ["DASHBOARD_SCREENSHOT"])


def test_diagnostics_page_in_the_browser(server, browser):
    """Numerai's tiles, the cumulative chart and the per-era table drawn by a real browser."""
    from selenium.webdriver.common.by import By

    url, logged = server
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(f"{url}/diagnostics")
    _wait_for_text(browser, _diagnostics_needles(logged), timeout=180)
    time.sleep(2.0)  # let Vega finish drawing
    charts = browser.find_elements(
        By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'
    )
    assert len(charts) >= 2, "the cumulative and per-era charts are not drawn"
    shot = ARTIFACTS / "dashboard_diagnostics.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_an_unreachable_store_shows_an_error_in_the_browser(browser, tmp_path):
    """Straight `streamlit run streamlit_app/app.py` (the documented entry) on a dead server URI."""
    port, dead = _free_port(), _free_port()
    env = {**os.environ, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "streamlit_app" / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--", "--tracking-uri", f"http://127.0.0.1:{dead}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        browser.get(f"http://127.0.0.1:{port}/compare")
        body = _wait_for_text(browser, ["Tracking store unreachable", f"http://127.0.0.1:{dead}"])
        assert "Traceback" not in body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
