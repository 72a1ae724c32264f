"""VARMAX family and entry point: time split, transforms, order search, forecast closure."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from mlflow_numerai.families import varmax as fam

ENDOG = ("gdp", "cons")
EXOG = ("rate", "spend")


def make_series(periods: int = 90, seed: int = 0) -> pd.DataFrame:
    """Quarterly positive levels whose growth rates follow a VAR(1) driven by two exog series."""
    rng = np.random.default_rng(seed)
    exog = rng.normal(size=(periods, 2))
    growth = np.zeros((periods, 2))
    a = np.array([[0.5, 0.1], [0.2, 0.3]])
    for t in range(1, periods):
        growth[t] = 0.005 + a @ growth[t - 1] + 0.002 * exog[t] @ np.array([[1.0, 0.5], [0.0, 1.0]]) \
            + rng.normal(scale=0.004, size=2)
    levels = 100 * np.exp(np.cumsum(growth, axis=0))
    index = pd.period_range("1990Q1", periods=periods, freq="Q", name="period")
    return pd.DataFrame(np.column_stack([levels, exog]), index=index, columns=[*ENDOG, *EXOG])


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return make_series()


def config(**kw) -> fam.VarmaxConfig:
    base = dict(endog=ENDOG, exog=EXOG, transform="log-diff", test_periods=8, max_p=1, max_q=1,
                maxiter=30, max_horizon=10)
    base.update(kw)
    return fam.VarmaxConfig(**base)


def quiet_fit(endog, exog, order=(1, 0)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results, _ = fam.fit_varmax(endog, exog, order, maxiter=30)
    return results


# --------------------------------------------------------------------------- data and config


def test_split_is_by_time_not_shuffled(series):
    train, test = fam.split_by_time(series, 8)
    assert len(test) == 8 and len(train) == len(series) - 8
    assert train.index.max() < test.index.min()
    assert test.index.equals(series.index[-8:])
    with pytest.raises(ValueError, match="test_periods"):
        fam.split_by_time(series, len(series))


def test_candidate_orders_exclude_zero_zero():
    assert fam.candidate_orders(2, 1) == [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert (0, 0) not in fam.candidate_orders(3, 3)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"endog": ("gdp",)}, "at least 2"),
        ({"transform": "sqrt"}, "transform must be one of"),
        ({"criterion": "r2"}, "criterion must be one of"),
        ({"max_p": 0, "max_q": 0}, r"\(0, 0\)"),
        ({"exog": ("gdp",)}, "both endog and exog"),
        ({"alpha": 1.5}, "alpha"),
        ({"test_periods": 0}, "test_periods"),
    ],
)
def test_bad_config_names_the_parameter(kw, message):
    with pytest.raises(ValueError, match=message):
        config(**kw)


def test_seed_preset_is_the_articles_configuration():
    preset = fam.PRESETS["macrodata-seed"]
    macro = fam.load_macrodata()
    assert preset.endog == ("realgdp", "realcons")
    assert set(preset.exog) == set(macro.columns) - {"realgdp", "realcons"} and len(preset.exog) == 10
    assert isinstance(macro.index, pd.PeriodIndex) and str(macro.index[0]) == "1959Q1"
    fam.check_columns(macro, preset)


def test_check_columns_names_missing_nan_and_non_positive(series):
    with pytest.raises(ValueError, match=r"columns \['nope'\] not in the data"):
        fam.check_columns(series, config(exog=("nope",)))
    with pytest.raises(ValueError, match="column 'rate' has NaN"):
        fam.check_columns(series.assign(rate=np.where(np.arange(len(series)) == 5, np.nan, 1.0)), config())
    with pytest.raises(ValueError, match="needs column 'gdp' > 0"):
        fam.check_columns(series.assign(gdp=-series["gdp"]), config())


def test_load_series_from_csv_and_parquet(tmp_path, series):
    frame = series.copy()
    frame.insert(0, "date", frame.index.to_timestamp())
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    for name in ("s.csv", "s.parquet"):
        loaded = fam.load_series(tmp_path / name, date_column="date")
        assert isinstance(loaded.index, pd.PeriodIndex) and loaded.index.freqstr.startswith("Q")
        np.testing.assert_allclose(loaded[list(ENDOG)].to_numpy(), series[list(ENDOG)].to_numpy())
    with pytest.raises(ValueError, match="date column 'when' not in"):
        fam.load_series(tmp_path / "s.csv", date_column="when")
    frame.drop(index=frame.index[10]).to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(ValueError, match="gaps|infer the frequency"):
        fam.load_series(tmp_path / "gap.csv", date_column="date")
    with pytest.raises(FileNotFoundError):
        fam.load_series(tmp_path / "missing.csv", date_column="date")


# --------------------------------------------------------------------------- forecasts


def test_levels_predict_equals_statsmodels_get_forecast(series):
    cfg = config(transform="levels")
    endog, exog = fam.model_data(series, cfg)
    results = quiet_fit(endog, exog)
    predict = fam.make_predict(results, endog_names=ENDOG, exog_names=EXOG, transform="levels",
                               last_level=series[list(ENDOG)].iloc[-1].to_numpy(), max_horizon=10)
    future = pd.DataFrame(np.random.default_rng(1).normal(size=(5, 2)), columns=list(EXOG))
    out = predict(future.assign(extra="ignored")[["extra", "spend", "rate"]])  # order-free, extras ignored
    reference = results.get_forecast(steps=5, exog=future[list(EXOG)])
    bounds = reference.conf_int(alpha=0.05)
    assert list(out.index) == [str(p) for p in reference.predicted_mean.index]
    assert list(out["step"]) == [1, 2, 3, 4, 5]
    for j, name in enumerate(ENDOG):
        np.testing.assert_allclose(out[f"{name}_forecast"], reference.predicted_mean[name], rtol=1e-8, atol=0)
        np.testing.assert_allclose(out[f"{name}_lower"], bounds.iloc[:, j], rtol=1e-8, atol=0)
        np.testing.assert_allclose(out[f"{name}_upper"], bounds.iloc[:, len(ENDOG) + j], rtol=1e-8, atol=0)
    wider = predict.with_params(future, alpha=0.01)
    assert (wider["gdp_upper"] - wider["gdp_lower"] > out["gdp_upper"] - out["gdp_lower"]).all()


def test_diff_intervals_are_exact_cumulative_variances(series):
    """The variance of a sum of h forecast errors of a VAR(1) is sum_k C_{h-k} S C_{h-k}'
    with C_m = I + A + ... + A^m; the Kalman-based recursion must give exactly that."""
    cfg = config(exog=(), transform="diff")
    endog, _ = fam.model_data(series, cfg)
    results = quiet_fit(endog, None)
    forecast = results.get_forecast(6)
    var = fam.cumulative_forecast_variance(
        forecast.prediction_results, results.filter_results.design[..., 0], results.filter_results.transition[..., 0]
    )
    a = results.coefficient_matrices_var[0]
    sigma = results.filter_results.state_cov[..., 0][:2, :2]
    powers = [np.linalg.matrix_power(a, j) for j in range(6)]
    for h in range(1, 7):
        expected = sum(sum(powers[: h - k + 1]) @ sigma @ sum(powers[: h - k + 1]).T for k in range(1, h + 1))
        np.testing.assert_allclose(var[h - 1], expected, rtol=1e-10)

    last = series[list(ENDOG)].iloc[-1].to_numpy()
    out = fam.forecast_original_units(results, 6, None, transform="diff", last_level=last, endog_names=ENDOG)
    mean = forecast.predicted_mean.to_numpy()
    np.testing.assert_allclose(out[["gdp_forecast", "cons_forecast"]].to_numpy(), last + np.cumsum(mean, axis=0))
    # step 1 is a single forecast: the same interval as statsmodels', shifted by the last level
    first = forecast.conf_int().iloc[0].to_numpy()
    np.testing.assert_allclose(out[["gdp_lower", "cons_lower"]].iloc[0], last + first[:2])
    np.testing.assert_allclose(out[["gdp_upper", "cons_upper"]].iloc[0], last + first[2:])


def test_log_diff_forecasts_come_back_in_original_units(series):
    cfg = config()
    endog, exog = fam.model_data(series, cfg)
    results = quiet_fit(endog, exog)
    last = series[list(ENDOG)].iloc[-1].to_numpy()
    future = series[list(EXOG)].iloc[-4:]
    out = fam.forecast_original_units(results, 4, future, transform="log-diff", last_level=last, endog_names=ENDOG)
    mean = results.get_forecast(4, exog=future).predicted_mean.to_numpy()
    np.testing.assert_allclose(out[["gdp_forecast", "cons_forecast"]], np.exp(np.log(last) + np.cumsum(mean, axis=0)))
    assert (out["gdp_lower"] < out["gdp_forecast"]).all() and (out["gdp_forecast"] < out["gdp_upper"]).all()
    assert out["gdp_forecast"].between(0.8 * last[0], 1.2 * last[0]).all()  # levels, not growth rates


def test_forecast_metrics_against_naive():
    actual = pd.DataFrame({"x": [10.0, 12.0]})
    forecast = pd.DataFrame({"x_forecast": [11.0, 12.0]})
    table = fam.forecast_metrics(actual, forecast, pd.Series({"x": 10.0}))
    assert table.loc["x", "rmse"] == pytest.approx(np.sqrt(0.5))
    assert table.loc["x", "mape"] == pytest.approx(5.0)
    assert table.loc["x", "naive_rmse"] == pytest.approx(np.sqrt(2.0))
    assert table.loc["x", "naive_mape"] == pytest.approx(100 * (0 + 2 / 12) / 2)


# --------------------------------------------------------------------------- predict closure


@pytest.fixture(scope="module")
def fitted(series):
    cfg = config(transform="log-diff")
    endog, exog = fam.model_data(series, cfg)
    results = quiet_fit(endog, exog)
    predict = fam.make_predict(results, endog_names=ENDOG, exog_names=EXOG, transform="log-diff",
                               last_level=series[list(ENDOG)].iloc[-1].to_numpy(), max_horizon=6)
    return results, predict


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.drop(columns=["rate"]), r"missing exogenous column\(s\) \['rate'\]"),
        (lambda f: f.assign(spend="high"), "column 'spend' must be numeric"),
        (lambda f: f.assign(rate=[1.0, np.nan, 1.0]), r"column 'rate' has a missing or infinite value \(row 1\)"),
        (lambda f: f.iloc[:0], "zero rows"),
        (lambda f: pd.concat([f] * 3), "9 periods, more than the maximum horizon 6"),
        (lambda f: f["rate"], "must be a pandas DataFrame"),
        # what a JSON body parsed without an input schema can hold (the forecast model has none)
        (lambda f: f.assign(rate=True), r"column 'rate' must be numeric, got True \(row 0"),
        (lambda f: f.assign(rate=pd.Series([1.0, "x", 2.0], dtype=object)), r"got 'x' \(row 1"),
        (lambda f: f.assign(rate=pd.Series([1.0, None, "x"], dtype=object)),
         r"column 'rate' has a missing or infinite value \(row 1\)"),
        (lambda f: f.assign(rate=pd.Series([1.0, 2.0, 10**400], dtype=object)),
         r"column 'rate' has a number too large for a float \(row 2\)"),
        (lambda f: pd.concat([f, f[["rate"]]], axis=1), "column 'rate' appears more than once"),
    ],
)
def test_predict_rejects_malformed_requests(fitted, series, mutate, message):
    _, predict = fitted
    request = series[list(EXOG)].iloc[-3:].reset_index(drop=True)
    with pytest.raises(fam.ForecastInputError, match=message):
        predict(mutate(request))
    with pytest.raises(ValueError, match="alpha must be in"):
        predict.with_params(request, alpha=2.0)


def test_predict_takes_integer_and_float32_columns(fitted, series):
    """The one-array path of the request parser takes any int/float columns as float64."""
    _, predict = fitted
    request = series[list(EXOG)].iloc[-3:].reset_index(drop=True).round()
    expected = predict(request)
    pd.testing.assert_frame_equal(predict(request.astype("int64")), expected)
    pd.testing.assert_frame_equal(predict(request.astype({"rate": "int32", "spend": "float32"})), expected)
    pd.testing.assert_frame_equal(predict(request[["spend", "rate"]]), expected)


def test_predict_without_exog_takes_steps(series):
    cfg = config(exog=(), transform="log")
    endog, _ = fam.model_data(series, cfg)
    results = quiet_fit(endog, None)
    predict = fam.make_predict(results, endog_names=ENDOG, exog_names=(), transform="log",
                               last_level=series[list(ENDOG)].iloc[-1].to_numpy(), max_horizon=6)
    by_count = predict(pd.DataFrame({"steps": [4]}))
    by_rows = predict(pd.DataFrame(index=range(4)))
    pd.testing.assert_frame_equal(by_count, by_rows)
    np.testing.assert_allclose(by_count["gdp_forecast"], np.exp(results.get_forecast(4).predicted_mean["gdp"]))
    with pytest.raises(fam.ForecastInputError, match="more than the maximum horizon 6"):
        predict(pd.DataFrame({"steps": [7]}))
    with pytest.raises(fam.ForecastInputError, match="one whole number"):
        predict(pd.DataFrame({"steps": [2.5]}))


# --------------------------------------------------------------------------- order search


def test_parallel_search_equals_sequential(series):
    cfg = config(exog=(), transform="diff", max_p=1, max_q=1)
    train, test = fam.split_by_time(series, cfg.test_periods)
    sequential = fam.search_orders(train, test, cfg, workers=1, progress=False)
    seen = []
    parallel = fam.search_orders(train, test, cfg, workers=2, progress=False, on_result=seen.append)
    columns = ["p", "q", "aic", "bic", "hqic", "test_rmse", "converged", "warnings", "error"]
    pd.testing.assert_frame_equal(fam.search_table(sequential)[columns], fam.search_table(parallel)[columns])
    assert sorted((r.p, r.q) for r in seen) == [(0, 1), (1, 0), (1, 1)]
    assert all(r.error is None and np.isfinite(r.aic) for r in parallel)
    assert any("EstimationWarning" in w for w in parallel[2].warnings)  # VARMA(1,1) warns
    assert fam.select_order(parallel, "aic") == min((r.aic, r.p, r.q) for r in parallel)[1:]
    forkserver = fam.search_orders(train, test, cfg, workers=2, progress=False, start_method="forkserver")
    pd.testing.assert_frame_equal(fam.search_table(sequential)[columns], fam.search_table(forkserver)[columns])


def test_select_order_breaks_ties_and_refuses_all_failed():
    a = fam.CandidateResult(p=2, q=0, aic=1.0)
    b = fam.CandidateResult(p=0, q=1, aic=1.0)
    c = fam.CandidateResult(p=1, q=0, aic=0.5, error="LinAlgError: boom")
    assert fam.select_order([a, b, c], "aic") == (0, 1)
    with pytest.raises(RuntimeError, match=r"\(1,0\): LinAlgError: boom"):
        fam.select_order([c], "aic")
    with pytest.raises(ValueError, match="criterion"):
        fam.select_order([a], "mse")


def test_train_varmax_scores_on_test_and_refits_on_everything(series):
    cfg = config(max_p=1, max_q=0)
    outcome = fam.train_varmax(series, cfg, workers=1, progress=False)
    assert outcome.order == (1, 0)
    table = outcome.test_forecast
    assert list(table["period"]) == [str(p) for p in series.index[-8:]]
    np.testing.assert_array_equal(table["gdp_actual"], series["gdp"].iloc[-8:])
    assert set(outcome.metrics.index) == set(ENDOG)
    # the served model forecasts after the *last* observation, not after the training part
    out = outcome.predict(outcome.input_example)
    assert out.index[0] == str(series.index[-1] + 1)
    assert outcome.results.nobs == len(series) - 1  # log-diff loses one period


# --------------------------------------------------------------------------- pyfunc + entry point


@pytest.mark.e2e
def test_train_varmax_command_logs_runs_artifacts_and_model(tracking_uri, tmp_path, series, monkeypatch):
    import mlflow
    from click.testing import CliRunner

    from mlflow_numerai.entrypoints.varmax import varmax

    frame = series.copy()
    frame.insert(0, "quarter", frame.index.astype(str))
    frame.to_csv(tmp_path / "macro.csv", index=False)
    # as under `mlflow run`: the run exists with the entry point's raw parameters logged
    with mlflow.start_run() as project_run:
        mlflow.log_params({"endog": "", "exog": "", "transform": "", "workers": "1", "max_p": "1"})
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run.info.run_id)
    result = CliRunner().invoke(varmax, [
        "--preset", "none", "--data", str(tmp_path / "macro.csv"), "--date-column", "quarter",
        "--endog", "gdp,cons", "--exog", "rate,spend", "--transform", "log-diff", "--test-periods", "8",
        "--max-p", "1", "--max-q", "1", "--maxiter", "30", "--workers", "1", "--no-validate", "--no-progress",
        "--registered-model-name", "varmax-test",
    ])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parent = next(r for r in runs if r.info.run_id == project_run.info.run_id)
    assert parent.data.params["config.endog"] == "gdp,cons" and parent.data.params["endog"] == ""
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["VARMAX(0,1)", "VARMAX(1,0)", "VARMAX(1,1)"]
    assert all({"aic", "bic", "hqic", "test_rmse", "fit_seconds", "converged"} <= set(r.data.metrics) for r in children)
    assert parent.data.tags["numerai.family"] == "varmax"
    assert all("numerai.family" not in r.data.tags for r in children)  # the dashboard lists model runs only
    assert {"test_rmse_gdp", "test_mape_cons", "naive_rmse_gdp", "naive_mape_cons"} <= set(parent.data.metrics)
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "varmax")}
    assert {"varmax/order_search.csv", "varmax/test_forecast.csv", "varmax/forecast_vs_actual.png"} <= files
    local = mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="varmax", dst_path=str(tmp_path)
    )
    search = pd.read_csv(f"{local}/order_search.csv")
    assert list(search[["p", "q"]].itertuples(index=False, name=None)) == [(0, 1), (1, 0), (1, 1)]
    forecast = pd.read_csv(f"{local}/test_forecast.csv")
    assert list(forecast["period"]) == [str(p) for p in series.index[-8:]]
    assert {"gdp_actual", "gdp_forecast", "gdp_lower", "gdp_upper"} <= set(forecast.columns)
    (version,) = client.search_model_versions("name = 'varmax-test'")
    uri = f"models:/varmax-test/{version.version}"
    info = mlflow.models.get_model_info(uri)
    assert info.metadata["numerai_profile"] == "forecast"
    assert info.metadata["output_contract"]["first_period"] == str(series.index[-1] + 1)
    assert not client.get_registered_model("varmax-test").aliases  # --no-validate: never promoted

    # the logged pyfunc forecasts after the last period, with inference param alpha
    model = mlflow.pyfunc.load_model(uri)
    request = series[list(EXOG)].iloc[-3:].reset_index(drop=True)
    out = model.predict(request)
    assert list(out.index) == [str(series.index[-1] + k) for k in (1, 2, 3)]
    wider = model.predict(request, params={"alpha": 0.01})
    assert (wider["gdp_upper"] > out["gdp_upper"]).all()
    pd.testing.assert_frame_equal(wider[["gdp_forecast"]], out[["gdp_forecast"]])


def test_pyfunc_turns_predict_value_errors_into_invalid_parameter(fitted, series):
    """Fixed bug: a predict's ValueError reached the scoring server as a generic 400 without the
    reason; the wrapper now raises MlflowException(INVALID_PARAMETER_VALUE) with the message."""
    from mlflow.exceptions import MlflowException

    from mlflow_numerai.pyfunc_model import NumeraiPredictModel

    _, predict = fitted
    wrapper = NumeraiPredictModel()
    wrapper.use(predict)
    request = series[list(EXOG)].iloc[-3:].reset_index(drop=True)
    pd.testing.assert_frame_equal(wrapper.predict(None, request), predict(request))
    with pytest.raises(MlflowException, match="more than the maximum horizon 6") as caught:
        wrapper.predict(None, pd.concat([request] * 3))
    assert caught.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="alpha must be in") as caught:
        wrapper.predict(None, request, params={"alpha": 3.0})
    assert caught.value.get_http_status_code() == 400


def test_train_varmax_command_refuses_bad_options(tracking_uri):
    from click.testing import CliRunner

    from mlflow_numerai.entrypoints.varmax import varmax

    result = CliRunner().invoke(varmax, ["--endog", "realgdp,nope", "--no-validate"])
    assert result.exit_code == 2 and "['nope'] not in the data" in result.output
    result = CliRunner().invoke(varmax, ["--preset", "seed"])
    assert result.exit_code == 2 and "unknown preset 'seed'" in result.output
