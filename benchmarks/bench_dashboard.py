"""Dashboard page render time on a store with 200 runs and 50 registered model versions.

Fills a fresh SQLite store the way the project does (family tags, the evaluator's per-era table,
Keras epoch metrics, BNN study artifacts, VARMAX tables; upload states through
`mlflow_numerai.registry`), then renders every page with Streamlit's AppTest:

* cold: caches cleared, every MLflow read happens during the render;
* warm: the same page again within the cache TTL (what a user sees when clicking around).

Target: every warm render under 2 s. Prints the figures and the comparison.

    .venv/bin/python benchmarks/bench_dashboard.py [--runs 200] [--versions 50] [--store DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 2.0


def _csv(client, run_id: str, df: pd.DataFrame, path: str, tmp: Path, index: bool = False) -> None:
    local = tmp / Path(path).name
    df.to_csv(local, index=index)
    client.log_artifact(run_id, str(local), str(Path(path).parent))


def fill(uri: str, n_runs: int, n_versions: int, seed: int = 0) -> None:
    """n_runs family runs and n_versions registered versions with upload histories."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from tqdm import tqdm

    from mlflow_numerai.registry import RegistryRecorder, promote
    from mlflow_numerai.registry.states import UploadStateMachine

    client = MlflowClient(uri, registry_uri=uri)
    rng = np.random.default_rng(seed)
    exp = client.create_experiment("bench-dashboard")
    eras = [f"{i:04d}" for i in range(1, 121)]
    families = ["baseline", "keras_stream", "bnn_study", "varmax"]
    run_ids: list[str] = []
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        study = client.create_run(exp, run_name="bnn_study", tags={"numerai.family": "bnn_study"}).info.run_id
        for i in tqdm(range(n_runs), desc="runs", unit="run"):
            family = families[i % len(families)]
            tags = {"numerai.family": family}
            if family == "bnn_study":
                prior = ("uniform", "normal", "laplace")[i % 3]
                tags.update({"mlflow.parentRunId": study, "bnn.model": f"{prior}/128-64-{i}", "bnn.prior": prior,
                             "bnn.hidden": f"128-64-{i}"})
            run = client.create_run(exp, run_name=f"{family}-{i}", tags=tags).info.run_id
            corr = rng.normal(0.01, 0.02, len(eras))
            metrics = [Metric("numerai_corr_mean", float(corr.mean()), now, 0),
                       Metric("numerai_corr_sharpe", float(corr.mean() / corr.std()), now, 0)]
            if family == "keras_stream":
                for epoch in range(10):
                    for key, value in (("loss", 0.05 - 0.001 * epoch), ("val_loss", 0.051), ("val_corr_mean", 0.01 + 0.001 * epoch),
                                       ("val_corr_sharpe", 0.5), ("rows_per_sec", 1e6)):
                        metrics.append(Metric(key, value, now, epoch))
            if family == "bnn_study":
                members = pd.DataFrame({"corr_mean": rng.normal(0.01, 0.003, 1000), "sharpe": rng.normal(0.5, 0.1, 1000)})
                for key, value in (("ensemble_corr_mean", 0.014), ("ensemble_sharpe", 0.6), ("member_corr_mean_mean", 0.01),
                                   ("member_corr_mean_std", 0.003), ("member_sharpe_mean", 0.5), ("member_sharpe_std", 0.1),
                                   ("burn_auc", float(rng.uniform(0.4, 0.7))), ("n_burn_eras", 30.0)):
                    metrics.append(Metric(key, value, now, 0))
                _csv(client, run, members.rename_axis("sample"), "bnn/members.csv", tmp, index=True)
                per = pd.DataFrame({"era": eras, "ensemble_corr": corr, "uncertainty": rng.uniform(0.1, 0.2, len(eras)),
                                    "burn": corr < 0})
                _csv(client, run, per, "bnn/per_era.csv", tmp)
                fpr = np.linspace(0, 1, 50)
                _csv(client, run, pd.DataFrame({"fpr": fpr, "tpr": fpr ** 0.7}), "bnn/roc.csv", tmp, index=True)
            if family == "varmax":
                periods = [f"P{k}" for k in range(12)]
                fc = pd.DataFrame({"period": periods})
                for var in ("realgdp", "realcons"):
                    a = 1000 + rng.normal(0, 5, 12).cumsum()
                    fc[f"{var}_actual"], fc[f"{var}_forecast"] = a, a + rng.normal(0, 3, 12)
                    fc[f"{var}_lower"], fc[f"{var}_upper"] = fc[f"{var}_forecast"] - 8, fc[f"{var}_forecast"] + 8
                _csv(client, run, fc, "varmax/test_forecast.csv", tmp)
                search = pd.DataFrame([{"p": p, "q": q, "aic": rng.normal(100, 5), "bic": 1.0, "hqic": 1.0, "test_rmse": 1.0,
                                        "fit_seconds": 0.1, "converged": True} for p in range(3) for q in range(3) if p or q])
                _csv(client, run, search, "varmax/order_search.csv", tmp)
            else:
                _csv(client, run, pd.DataFrame({"era": eras, "target": corr}), "numerai_eval/per_era_corr.csv", tmp)
            client.log_batch(run, metrics=metrics, params=[Param("seed", str(i))])
            client.set_terminated(run)
            run_ids.append(run)
        js = pd.DataFrame(rng.uniform(0, 0.1, (6, 6)), index=[f"m{k}" for k in range(6)], columns=[f"m{k}" for k in range(6)])
        _csv(client, study, js, "bnn/js_divergence.csv", tmp, index=True)
        client.set_terminated(study)

    outcomes = [("Success", None), ("Failed", "invalid_output:range"), ("Error", "validator"), ("Failed", "timeout")]
    for k in tqdm(range(n_versions), desc="versions", unit="version"):
        name = f"numerai-model-{k % 10}"
        if k < 10:
            client.create_registered_model(name)
        version = client.create_model_version(name, f"runs:/{run_ids[k]}/model", run_id=run_ids[k]).version
        machine = UploadStateMachine(RegistryRecorder(name, version, client))
        machine.to("Pending")
        machine.to("Running")
        state, reason = outcomes[k % len(outcomes)]
        if state == "Success":
            machine.to("Validating")
        machine.to(state, reason, "" if state == "Success" else "bench")
        if state == "Success" and k < 10:
            promote(name, version, "champion", client=client)


def render_times(uri: str, pages: list[str], repeats: int = 3) -> pd.DataFrame:
    """Cold (caches cleared) and warm render seconds of every page."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from mlflow_numerai.dashboard.app.common import PAGES_DIR

    os.environ["MLFLOW_TRACKING_URI"] = uri
    app = str(REPO / "streamlit_app" / "app.py")
    AppTest.from_file(app, default_timeout=300).run()  # imports and the store connection, not counted
    rows = []
    for page in pages:
        at = AppTest.from_file(app, default_timeout=300).run()
        st.cache_data.clear()
        at.switch_page(str(PAGES_DIR / f"{page}.py"))
        started = time.perf_counter()
        at.run()
        cold = time.perf_counter() - started
        if at.exception:
            raise RuntimeError(f"page {page} raised: {at.exception[0].value}")
        warm = []
        for _ in range(repeats):
            started = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - started)
        rows.append({"page": page, "cold_s": cold, "warm_s": statistics.median(warm)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--store", default=None, help="directory for mlflow.db (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    sys.path.insert(0, str(REPO))
    store = Path(args.store or tempfile.mkdtemp(prefix="bench_dashboard_"))
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    started = time.perf_counter()
    fill(uri, args.runs, args.versions)
    print(f"filled {uri}: {args.runs} runs, {args.versions} model versions in {time.perf_counter() - started:.1f} s")

    from mlflow_numerai.dashboard.app.common import PAGES

    times = render_times(uri, [file[:-3] for file, *_ in PAGES])
    times["speedup"] = times["cold_s"] / times["warm_s"]
    times["warm_under_2s"] = times["warm_s"] < TARGET_S
    print(times.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    worst = times["warm_s"].max()
    print(f"slowest warm render {worst:.3f} s vs target {TARGET_S:.1f} s: {'PASS' if worst < TARGET_S else 'FAIL'}; "
          f"slowest cold render {times['cold_s'].max():.3f} s; caching speeds renders up "
          f"{times['speedup'].min():.1f}x to {times['speedup'].max():.1f}x")


if __name__ == "__main__":
    main()
