"""VARMAX benchmarks: order search parallel vs sequential, and the served forecast model.

1. Order search on the seed's configuration (US macro data, 2 endog, 10 exog, log-diff): the
   same candidate orders fitted sequentially and in a process pool, in the same run; the two
   result tables are checked equal.
2. Serving: trains the champion (small search), starts `mlflow models serve ... --env-manager
   local` on a loopback port, sends N forecast requests at concurrency C, and prints p50/p99
   latency, requests/s and errors next to the in-process forecast time (closure and pyfunc).

    .venv/bin/python benchmarks/bench_varmax.py                      # both parts
    .venv/bin/python benchmarks/bench_varmax.py --skip-serving --max-p 3 --max-q 2
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
NAME = "numerai-varmax"


def bench_search(max_p: int, max_q: int, workers: int) -> None:
    from mlflow_numerai.families import varmax as fam

    config = fam.with_overrides(fam.PRESETS["macrodata-seed"], max_p=max_p, max_q=max_q)
    frame = fam.load_macrodata()
    train, test = fam.split_by_time(frame, config.test_periods)
    n = len(fam.candidate_orders(max_p, max_q))
    print(f"order search: {n} candidates (p<={max_p}, q<={max_q}), {len(train)} training periods, "
          f"seed preset ({len(config.exog)} exog, {config.transform}, maxiter {config.maxiter})")
    columns = ["p", "q", "aic", "bic", "hqic", "test_rmse", "converged", "error"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        sequential = fam.search_orders(train, test, config, workers=1, progress=False)
        t_seq = time.perf_counter() - started
        reference = fam.search_table(sequential)[columns]
        print("| search | wall s | speed-up | results identical to sequential |")
        print("| --- | --- | --- | --- |")
        print(f"| sequential (1 process) | {t_seq:.1f} | 1.00x | |")
        for method in ("fork", "forkserver", "spawn"):
            started = time.perf_counter()
            parallel = fam.search_orders(train, test, config, workers=workers, progress=False, start_method=method)
            t_par = time.perf_counter() - started
            same = fam.search_table(parallel)[columns].equals(reference)
            print(f"| parallel, {workers} processes, {method} | {t_par:.1f} | {t_seq / t_par:.2f}x | {same} |")
    control = cpu_control(workers)
    print(f"| control: pure-Python CPU loop, {workers} forked processes vs 1 | | {control:.2f}x | |")
    print(f"sum of per-fit seconds (sequential): {sum(r.fit_seconds for r in sequential):.1f} s; "
          f"default start method here: {fam.pool_context().get_start_method()}")
    print(f"winner by aic: {fam.select_order(parallel, 'aic')}")


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def cpu_control(workers: int, tasks: int = 4, n: int = 4_000_000) -> float:
    """Speed-up of `workers` processes over one on a pure CPU loop: the parallelism this machine
    gives right now (1.0 means none is available, whatever the code does)."""
    import multiprocessing

    started = time.perf_counter()
    for _ in range(tasks):
        _burn(n)
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_burn, [n] * tasks)
    return sequential / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_serving(n_requests: int, concurrency: int, steps: int) -> None:
    import mlflow
    import requests
    from click.testing import CliRunner

    from mlflow_numerai.entrypoints.varmax import varmax
    from mlflow_numerai.families.varmax import PRESETS, load_macrodata

    with tempfile.TemporaryDirectory(prefix="bench-varmax-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_NUMERAI_CACHE"] = f"{tmp}/cache"
        mlflow.set_tracking_uri(uri)
        result = CliRunner().invoke(varmax, ["--max-p", "1", "--max-q", "0", "--workers", "1", "--no-progress"])
        if result.exit_code != 0:
            raise SystemExit(f"training failed:\n{result.output}")
        request = load_macrodata()[list(PRESETS["macrodata-seed"].exog)].iloc[-steps:].reset_index(drop=True)
        payload = {"dataframe_split": {"columns": list(request.columns), "data": request.to_numpy().tolist()}}

        # in-process: the pyfunc (what the server calls) and the bare closure inside it
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
        closure = model.unwrap_python_model()._predict
        in_pyfunc = timed(lambda: model.predict(request), 200)
        in_closure = timed(lambda: closure(request), 200)

        port = free_port()
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        log = open(Path(tmp) / "serve.log", "w")
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            session = requests.Session()
            for _ in range(20):  # warm-up
                session.post(f"{url}/invocations", json=payload, timeout=60)
            latencies, errors, wall = load_test(url, payload, n_requests, concurrency)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()

    ms = np.array(latencies) * 1000
    print(f"serving: {n_requests} requests of {steps} forecast steps, concurrency {concurrency}, one uvicorn worker")
    print("| what | p50 ms | p99 ms | requests/s | errors |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| served (`/invocations`, dataframe_split) | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} "
          f"| {n_requests / wall:.1f} | {errors} |")
    print(f"| in-process pyfunc `model.predict` (median of 200) | {in_pyfunc * 1000:.1f} | | | |")
    print(f"| in-process closure `predict(frame)` (median of 200) | {in_closure * 1000:.1f} | | | |")


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"scoring server exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit("scoring server not ready")


def load_test(url: str, payload: dict, n: int, concurrency: int) -> tuple[list[float], int, float]:
    """(latencies of the successful requests, number of errors, wall seconds)."""
    import threading

    import requests

    local = threading.local()

    def one(_):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        try:
            response = session.post(f"{url}/invocations", json=payload, timeout=60)
            ok = response.status_code == 200 and len(response.json()["predictions"]) > 0
        except requests.RequestException:
            ok = False
        return time.perf_counter() - started, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    return [t for t, ok in results if ok], sum(not ok for _, ok in results), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-p", type=int, default=2)
    parser.add_argument("--max-q", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-serving", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    if not args.skip_search:
        bench_search(args.max_p, args.max_q, args.workers)
    if not args.skip_serving:
        bench_serving(args.requests, args.concurrency, args.steps)


if __name__ == "__main__":
    main()
