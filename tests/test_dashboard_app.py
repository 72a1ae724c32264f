"""Every dashboard page rendered with Streamlit's AppTest: the numbers shown are the ones logged."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from mlflow_numerai.dashboard.app.common import PAGES, PAGES_DIR

APP = Path(__file__).resolve().parents[1] / "streamlit_app" / "app.py"
PAGE_NAMES = [file[:-3] for file, *_ in PAGES]


def open_page(uri: str, page: str, monkeypatch) -> AppTest:
    """Run the app on `uri` and switch to `page` (file stem); fails on any uncaught exception."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page != "models":
        at.switch_page(str(PAGES_DIR / f"{page}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def chart_data(at: AppTest) -> list[list[pd.DataFrame]]:
    """The data sets of each chart on the page (Streamlit ships them as Arrow, not in the spec)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return [
        [convert_arrow_bytes_to_pandas_df(d.data.data) for d in c.proto.datasets] for c in at.get("vega_lite_chart")
    ]


def f4(x: float) -> str:
    return f"{x:.4f}"


@pytest.fixture(scope="module")
def store(dashboard_store):
    return dashboard_store


def test_models_page_shows_states_badges_aliases_and_counts(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "models", monkeypatch)
    m = metrics(at)
    assert m["Registered models"] == "3" and m["Versions"] == "5"
    assert (m["Success"], m["Failed"], m["Error"], m["Running"], m["Not validated"]) == ("1",) * 5
    table = at.markdown[0].value.splitlines()
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in table[2:]}
    v1 = rows[("**numerai-baseline**", "1")]
    assert ":green-badge[Success]" in v1 and "`@champion`" in v1 and "0.0123" in v1
    assert f4(logged.metrics[logged.baseline]["numerai_corr_mean"]) in v1
    v2 = rows[("**numerai-baseline**", "2")]
    assert ":red-badge[Failed]" in v2 and "`invalid_output:range`" in v2 and "@champion" not in v2
    assert ":orange-badge[Error]" in rows[("**numerai-bnn**", "1")]
    assert ":blue-badge[Running]" in rows[("**numerai-bnn**", "2")]
    assert ":gray-badge[Not validated]" in rows[("**numerai-keras**", "1")]
    # the timeline plots every transition, coloured by state
    timeline = charts(at)[0]
    assert "state" in json.dumps(timeline["layer"][1]["encoding"]["color"])
    # promotion audit trail
    audit = at.table[-1].value
    assert list(audit["event"]) == ["promoted"] and audit["alias"].iloc[0] == "champion"
    assert "upload_state Success ✓" in audit["detail"].iloc[0]


def test_models_page_version_detail_shows_history_reason_and_log(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "models", monkeypatch)
    at.selectbox(key="models_version").select("numerai-baseline v2").run()
    assert not at.exception
    assert "Failure reason: `invalid_output:range`" in markdown(at)
    history = at.table[0].value
    expected = [h["state"] for h in logged.versions[("numerai-baseline", 2)]["history"]]
    assert list(history["state"]) == expected
    assert "7 values above 1.0" in at.code[0].value
    assert logged.versions[("numerai-baseline", 2)]["validation_run"] in markdown(at)


def test_ensembles_page_table_metrics_histograms_and_js(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "ensembles", monkeypatch)
    table = at.table[0].value
    assert len(table) == 4  # 3 priors + the study's non-Bayesian baseline
    by_prior = table.set_index("prior")
    for prior, run_id in logged.bnn.items():
        for key in ("ensemble_corr_mean", "member_corr_mean_mean", "member_sharpe_std"):
            assert by_prior.loc[prior, key] == pytest.approx(logged.metrics[run_id][key], abs=5e-5)
    # the selected (newest) model's metrics and its histograms with the ensemble marked
    first = logged.bnn["laplace"]  # logged last, so newest
    lm = logged.metrics[first]
    m = metrics(at)
    assert m["Ensemble corr"] == f4(lm["ensemble_corr_mean"])
    assert m["Members corr (mean)"] == f4(lm["member_corr_mean_mean"])
    assert m["Members corr (std)"] == f4(lm["member_corr_mean_std"])
    marks = [float(df["v"].iloc[0]) for sets in chart_data(at) for df in sets if list(df.columns) == ["v"]]
    assert marks == pytest.approx([lm["ensemble_corr_mean"], lm["ensemble_sharpe"]])
    hist = next(df for sets in chart_data(at) for df in sets if "corr_mean" in df)
    pd.testing.assert_frame_equal(hist.reset_index(drop=True), logged.members[first], check_dtype=False)
    assert "beats its average member in 3 of 3 Bayesian models" in " ".join(c.value for c in at.caption)
    # switching model changes the numbers
    label = next(o for o in at.selectbox(key="ens_run").options if o.startswith("uniform/"))
    at.selectbox(key="ens_run").select(label).run()
    assert metrics(at)["Ensemble corr"] == f4(logged.metrics[logged.bnn["uniform"]]["ensemble_corr_mean"])
    # JS heatmap (rect layer) from the study run
    heat = [c for c in charts(at) if "layer" in c and c["layer"][0].get("mark", {}).get("type") == "rect"]
    assert heat, "no JS heatmap"


def test_uncertainty_page_auc_roc_and_burn_eras(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "uncertainty", monkeypatch)
    m = metrics(at)
    assert m["Best burn AUC"] == "0.625" and m["Model"].startswith("laplace/128-64-64")
    table = at.table[0].value
    assert list(table["burn_auc"]) == [0.625, 0.601, 0.468]
    assert len(charts(at)) == 3  # AUC bars, ROC curves, era scatter
    per_era = logged.bnn_per_era[logged.bnn["laplace"]]
    captions = " ".join(c.value for c in at.caption)
    assert f"{int(per_era['burn'].sum())} burn eras of {len(per_era)}" in captions


def test_training_page_curves_and_summary(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "training", monkeypatch)
    summary = at.table[0].value
    assert len(summary) == 2
    best = {rid: max(h["val_corr_mean"]) for rid, h in logged.keras_history.items()}
    assert sorted(summary["best_val_corr_mean"]) == pytest.approx(sorted(best.values()), abs=5e-5)
    assert metrics(at)["Best val corr"] == f4(max(best.values()))
    fastest = max(np.mean(h["rows_per_sec"]) for h in logged.keras_history.values())
    assert metrics(at)["Loader throughput (rows/s)"] == f"{fastest:,.0f}"
    assert len(charts(at)) == 3
    at.multiselect(key="train_runs").set_value([]).run()
    assert "Pick at least one run." in [c.value for c in at.caption]


def test_forecasts_page_rmse_and_order_search(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "forecasts", monkeypatch)
    w = logged.forecast
    for var in ("realgdp", "realcons"):
        rmse = np.sqrt(((w[f"{var}_actual"] - w[f"{var}_forecast"]) ** 2).mean())
        assert metrics(at)[f"{var} test RMSE"] == f4(rmse)
    assert "Best by **aic**: p = 2, q = 0 (aic 97.00)" in markdown(at)
    search = at.table[-1].value
    assert list(search["aic"]) == list(logged.order_search["aic"])
    # candidates are nested runs: only the parent is offered
    assert [o.split(" (")[0] for o in at.selectbox(key="fc_run").options] == ["varmax-macro"]


def test_compare_page_per_era_cumulative_and_metrics(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "compare", monkeypatch)
    picked = at.multiselect(key="cmp_runs")
    base = next(o for o in picked.options if "baseline-ridge" in o)
    keras = next(o for o in picked.options if "keras-a" in o)
    picked.set_value([base, keras]).run()
    assert not at.exception
    m = metrics(at)
    base_corr = logged.per_era[logged.baseline]["target"]
    keras_corr = logged.per_era[logged.keras[0]]["target"]
    assert m[base.split(" · ")[1]] == f4(base_corr.mean())
    assert m[keras.split(" · ")[1]] == f4(keras_corr.mean())
    stats = at.table[0].value
    drawdown = logged.metrics[logged.baseline]["numerai_corr_max_drawdown"]
    assert stats["max_drawdown"].iloc[0] == pytest.approx(drawdown, abs=5e-5)
    logged_metrics = at.table[1].value
    assert logged_metrics.loc["numerai_corr_sharpe"].iloc[0] == pytest.approx(
        logged.metrics[logged.baseline]["numerai_corr_sharpe"], abs=5e-5
    )
    assert len(charts(at)) == 2


def test_compare_default_is_the_best_top_level_runs(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "compare", monkeypatch)
    ranked = sorted(
        ((m["numerai_corr_mean"], rid) for rid, m in logged.metrics.items() if "numerai_corr_mean" in m), reverse=True
    )
    chosen = at.multiselect(key="cmp_runs").value
    assert [c.split("(")[-1][:6] for c in chosen] == [rid[:6] for _, rid in ranked[:3]]


# ---- empty and broken stores ----------------------------------------------------------------


@pytest.mark.parametrize("page", PAGE_NAMES)
def test_every_page_on_an_empty_store_shows_the_command(page, tmp_path, monkeypatch):
    db = tmp_path / "mlflow.db"
    at = open_page(f"sqlite:///{db}", page, monkeypatch)
    assert "nothing logged yet" in at.info[0].value
    assert at.code[0].value == "mlflow-numerai train baseline"
    assert not db.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("page", ["models", "compare"])
def test_unreachable_store_is_an_error_message_not_a_traceback(page, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{_closed_port()}"
    at = open_page(uri, page, monkeypatch)
    assert len(at.error) == 1
    assert "Tracking store unreachable" in at.error[0].value and uri in at.error[0].value


def test_family_pages_without_their_runs_say_which_command_makes_them(store, tmp_path, monkeypatch):
    """A store with only a baseline run: family pages show their own command, models shows the
    registry command."""
    import shutil

    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    shutil.copy(Path(store[0][len("sqlite:///"):]).with_name("empty.db"), db)
    tracking_uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri)
    run = client.create_run("0", tags={"numerai.family": "baseline"}).info.run_id
    client.log_metric(run, "numerai_corr_mean", 0.01)
    expected = {
        "ensembles": "mlflow-numerai train bnn-study",
        "uncertainty": "mlflow-numerai train bnn-study",
        "training": "mlflow-numerai train keras-stream",
        "forecasts": "mlflow-numerai train varmax",
        "models": "mlflow-numerai train baseline && mlflow-numerai validate models:/<name>/1",
    }
    for page, command in expected.items():
        at = open_page(tracking_uri, page, monkeypatch)
        assert at.code[0].value == command, page
    at = open_page(tracking_uri, "compare", monkeypatch)
    assert "None of the chosen runs logged" in " ".join(c.value for c in at.caption)
    assert at.table[0].value.loc["numerai_corr_mean"].iloc[0] == pytest.approx(0.01)


# ---- the project's own entry points at small size ---------------------------------------------


@pytest.fixture(scope="module")
def real_store(dashboard_store, synthetic_dir, tmp_path_factory):
    """`mlflow-numerai train baseline/keras-stream/varmax/bnn-study` at small size, the sandbox's
    validate (one Success, one Failed) and a promotion, into a fresh store."""
    import shutil

    import mlflow
    from dashboard_store import fill_real_store

    tmp = tmp_path_factory.mktemp("dashboard_real")
    db = tmp / "mlflow.db"
    shutil.copy(Path(dashboard_store[0][len("sqlite:///"):]).with_name("empty.db"), db)
    uri = f"sqlite:///{db}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_NUMERAI_CACHE", str(tmp / "cache"))
        real = fill_real_store(uri, synthetic_dir)
    mlflow.set_tracking_uri(previous)
    return uri, real


def _artifact_csv(uri: str, run_id: str, path: str) -> pd.DataFrame:
    import mlflow

    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=uri))


@pytest.mark.e2e
def test_pages_show_what_the_real_entry_points_logged(real_store, monkeypatch):
    """Numbers read straight from MLflow (not through the dashboard's functions) appear on the pages."""
    from mlflow.tracking import MlflowClient

    uri, real = real_store
    client = MlflowClient(uri, registry_uri=uri)
    assert real.versions[("numerai-baseline", 1)] == "Success"
    assert real.versions[real.failed] == "Failed"

    # Models & uploads: real upload states, reason and the promotion
    at = open_page(uri, "models", monkeypatch)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in at.markdown[0].value.splitlines()[2:]}
    good = rows[("**numerai-baseline**", "1")]
    corr = client.get_run(client.get_model_version("numerai-baseline", "1").run_id).data.metrics["numerai_corr_mean"]
    assert ":green-badge[Success]" in good and "`@champion`" in good and f4(corr) in good
    bad = rows[("**numerai-baseline**", str(real.failed[1]))]
    assert ":red-badge[Failed]" in bad and "`python_mismatch`" in bad
    assert at.table[-1].value["alias"].iloc[0] == "champion"

    # Training: the best epoch's validation corr of the Keras run
    keras = real.runs["keras_stream"][0]
    at = open_page(uri, "training", monkeypatch)
    best = max(m.value for m in client.get_metric_history(keras, "val_corr_mean"))
    assert metrics(at)["Best val corr"] == f4(best)

    # Forecasts: RMSE recomputed from the run's own test_forecast.csv; the order search winner
    parent = next(r for r in real.runs["varmax"] if "mlflow.parentRunId" not in client.get_run(r).data.tags)
    fc = _artifact_csv(uri, parent, "varmax/test_forecast.csv")
    search = _artifact_csv(uri, parent, "varmax/order_search.csv")
    at = open_page(uri, "forecasts", monkeypatch)
    for var in ("realgdp", "realcons"):
        rmse = np.sqrt(((fc[f"{var}_actual"] - fc[f"{var}_forecast"]) ** 2).mean())
        assert metrics(at)[f"{var} test RMSE"] == f4(rmse)
    criterion = client.get_run(parent).data.params["config.criterion"]
    win = search.loc[search[criterion].idxmin()]
    assert f"p = {int(win['p'])}, q = {int(win['q'])}" in markdown(at)

    # Compare: the evaluator's per-era table of the baseline, and its logged mean
    base = client.get_model_version("numerai-baseline", "1").run_id
    per_era = _artifact_csv(uri, base, "numerai_eval/per_era_corr.csv")
    at = open_page(uri, "compare", monkeypatch)
    picked = at.multiselect(key="cmp_runs")
    picked.set_value([o for o in picked.options if base[:6] in o]).run()
    shown = next(v for k, v in metrics(at).items() if base[:6] in k)
    assert shown == f4(per_era.iloc[:, 1].mean()) == f4(corr)

    # Ensembles and Uncertainty: the study's models with their logged metrics
    studies = real.runs["bnn_study"]
    bayesian = [r for r in studies if "member_corr_mean_mean" in client.get_run(r).data.metrics]
    assert len(bayesian) == 2  # 2 priors x 1 architecture (plus the study's baseline)
    at = open_page(uri, "ensembles", monkeypatch)
    table = at.table[0].value
    for run_id in bayesian:
        run = client.get_run(run_id)
        row = table.loc[run.data.tags["bnn.model"]]
        assert row["ensemble_corr_mean"] == pytest.approx(run.data.metrics["ensemble_corr_mean"], abs=5e-5)
        assert row["member_corr_mean_mean"] == pytest.approx(run.data.metrics["member_corr_mean_mean"], abs=5e-5)
    assert "Jensen-Shannon" in " ".join(h.value for h in at.subheader)
    assert any(c.get("layer", [{}])[0].get("mark", {}).get("type") == "rect" for c in charts(at))
    at = open_page(uri, "uncertainty", monkeypatch)
    aucs = []
    for run_id in bayesian:  # AUC by its definition: P(uncertainty of a burn era > of another), ties 1/2
        per_era = _artifact_csv(uri, run_id, "bnn/per_era.csv").dropna(subset=["ensemble_corr"])
        burn = per_era["ensemble_corr"] < 0
        assert 0 < burn.sum() < len(per_era), "the fixture's study needs burn and non-burn eras"
        pos, neg = per_era.loc[burn, "uncertainty"].to_numpy(), per_era.loc[~burn, "uncertainty"].to_numpy()
        auc = ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
        assert client.get_run(run_id).data.metrics["burn_auc"] == pytest.approx(auc, abs=1e-9)
        aucs.append(auc)
    assert metrics(at)["Best burn AUC"] == f"{max(aucs):.3f}"
