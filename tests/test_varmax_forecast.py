"""Closed-form VARMAX forecasts (families/varmax/forecast.py) against statsmodels' get_forecast.

Every order of the seed's search grid (p <= 2, q <= 2), every transform, with and without
exogenous series: the served closure's forecast, lower and upper equal the statsmodels path
(`statsmodels_forecast_original_units`, kept as the reference) to 1e-8 relative; and the pickled
closure loads and forecasts in a process where statsmodels, scipy and this package cannot be
imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from mlflow_numerai.families import varmax as fam
from mlflow_numerai.packaging import dumps_predict, pickled_modules, requirements_of

pytestmark = pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.EstimationWarning")

ENDOG = ("gdp", "cons")
EXOG = ("rate", "spend")
HORIZON = 10
RTOL = 1e-8
SEED_GRID = fam.candidate_orders(fam.PRESETS["macrodata-seed"].max_p, fam.PRESETS["macrodata-seed"].max_q)


def make_series(periods: int = 70, seed: int = 3) -> pd.DataFrame:
    """Positive quarterly levels whose growth follows a VAR(1) with two exogenous drivers."""
    rng = np.random.default_rng(seed)
    exog = rng.normal(size=(periods, 2))
    growth = np.zeros((periods, 2))
    a = np.array([[0.4, 0.1], [0.2, 0.3]])
    for t in range(1, periods):
        growth[t] = 0.005 + a @ growth[t - 1] + 0.003 * exog[t] + rng.normal(scale=0.004, size=2)
    levels = 100 * np.exp(np.cumsum(growth, axis=0))
    index = pd.period_range("1995Q1", periods=periods, freq="Q", name="period")
    return pd.DataFrame(np.column_stack([levels, exog]), index=index, columns=[*ENDOG, *EXOG])


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return make_series()


def fitted(series, order, transform, exog_names, trend="c"):
    """(results, served predict closure, last level, future exog frame or None)."""
    cfg = fam.VarmaxConfig(endog=ENDOG, exog=exog_names, transform=transform, trend=trend, max_horizon=HORIZON)
    endog, exog = fam.model_data(series, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a few iterations: the identity under test holds for any parameters, converged or not
        results, _ = fam.fit_varmax(endog, exog, order, trend=trend, maxiter=3)
    last = series[list(ENDOG)].iloc[-1].to_numpy()
    predict = fam.make_predict(results, endog_names=ENDOG, exog_names=exog_names, transform=transform,
                               last_level=last, max_horizon=HORIZON)
    future = None
    if exog_names:
        future = pd.DataFrame(np.random.default_rng(7).normal(size=(HORIZON, len(exog_names))),
                              columns=list(exog_names))
    return results, predict, last, future


def reference(results, last, future, transform, alpha, steps=HORIZON) -> pd.DataFrame:
    return fam.statsmodels_forecast_original_units(
        results, steps, None if future is None else future.iloc[:steps], transform=transform,
        last_level=last, endog_names=ENDOG, alpha=alpha,
    )


def request(future, steps=HORIZON) -> pd.DataFrame:
    return pd.DataFrame({"steps": [steps]}) if future is None else future.iloc[:steps]


def assert_equal_to_reference(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(out.index) == list(expected.index)
    assert list(out.columns) == ["step", *expected.columns]
    np.testing.assert_array_equal(out["step"], np.arange(1, len(expected) + 1))
    for column in expected.columns:
        np.testing.assert_allclose(out[column], expected[column], rtol=RTOL, atol=0, err_msg=column)


@pytest.mark.parametrize("with_exog", [True, False], ids=["exog", "no-exog"])
@pytest.mark.parametrize("transform", fam.TRANSFORMS)
@pytest.mark.parametrize("order", SEED_GRID, ids=[f"p{p}q{q}" for p, q in SEED_GRID])
def test_closed_form_equals_statsmodels_get_forecast(series, order, transform, with_exog):
    results, predict, last, future = fitted(series, order, transform, EXOG if with_exog else ())
    assert_equal_to_reference(predict(request(future)), reference(results, last, future, transform, 0.05))
    assert_equal_to_reference(predict.with_params(request(future, 3), alpha=0.2),
                              reference(results, last, future, transform, 0.2, steps=3))
    expected = reference(results, last, future, transform, 0.05)
    # the same numbers where training uses them (test-set forecasts of the order search)
    pd.testing.assert_frame_equal(
        fam.forecast_original_units(results, HORIZON, future, transform=transform, last_level=last,
                                    endog_names=ENDOG),
        expected, check_exact=False, rtol=RTOL, atol=0,
    )


@pytest.mark.parametrize("trend", ["n", "t", "ct"])
@pytest.mark.parametrize("transform", ["levels", "log-diff"])
def test_closed_form_equals_statsmodels_for_every_trend(series, trend, transform):
    results, predict, last, future = fitted(series, (1, 0), transform, EXOG, trend=trend)
    assert_equal_to_reference(predict(request(future)), reference(results, last, future, transform, 0.05))


@pytest.mark.parametrize("trend", ["t", "ct"])
def test_closed_form_time_trend_without_exog(series, trend):
    results, predict, last, future = fitted(series, (1, 1), "diff", (), trend=trend)
    assert_equal_to_reference(predict(request(future)), reference(results, last, future, "diff", 0.05))


def test_seed_data_with_ten_exog_series():
    frame = fam.load_macrodata()
    cfg = fam.PRESETS["macrodata-seed"]
    endog, exog = fam.model_data(frame, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results, _ = fam.fit_varmax(endog, exog, (1, 0), maxiter=5)
    last = frame[list(cfg.endog)].iloc[-1].to_numpy()
    predict = fam.make_predict(results, endog_names=cfg.endog, exog_names=cfg.exog, transform=cfg.transform,
                               last_level=last, max_horizon=8)
    future = frame[list(cfg.exog)].iloc[-8:].reset_index(drop=True)
    out = predict(future)
    expected = fam.statsmodels_forecast_original_units(results, 8, future, transform=cfg.transform,
                                                       last_level=last, endog_names=cfg.endog)
    assert list(out.index)[:2] == ["2009Q4", "2010Q1"]
    assert_equal_to_reference(out, expected)


def test_overflowing_exog_is_refused_not_forecast(series):
    """Fixed: finite but huge exogenous values (1e300) gave an infinite/NaN "forecast" (served as
    200 with Infinity and NaN); now a ForecastInputError (a 400 behind the server) names why."""
    _, predict, _, future = fitted(series, (1, 0), "log-diff", EXOG)
    huge = future.iloc[:3].copy()
    huge.loc[1, "rate"] = 1e300
    with pytest.raises(fam.ForecastInputError, match="exogenous values are too large"):
        predict(huge)
    assert np.isfinite(predict(future.iloc[:3]).drop(columns="step").to_numpy()).all()


BLOCKED_LOAD = textwrap.dedent("""
    import importlib.abc, pickle, sys
    BLOCKED = ("statsmodels", "scipy", "mlflow_numerai", "mlflow", "sklearn")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    import cloudpickle, pandas as pd
    with open(sys.argv[1], "rb") as f:
        predict = cloudpickle.load(f)
    request = pd.read_pickle(sys.argv[2])
    predict(request).to_pickle(sys.argv[3])
    predict.with_params(request, alpha=0.3).to_pickle(sys.argv[4])
    try:
        predict(request.iloc[:0])
    except ValueError as exc:
        print("refused:", exc)
    print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
""")


@pytest.mark.parametrize("transform, with_exog", [("log-diff", True), ("levels", False)])
def test_pickled_predict_needs_no_statsmodels(series, tmp_path, transform, with_exog):
    results, predict, last, future = fitted(series, (1, 1), transform, EXOG if with_exog else ())
    data = dumps_predict(predict)
    modules = {m.split(".")[0] for m in pickled_modules(data)}
    assert not modules & {"statsmodels", "scipy", "mlflow_numerai"}, modules
    assert set(requirements_of(pickled_modules(data))) <= {"cloudpickle", "numpy", "pandas"}
    (tmp_path / "predict.pkl").write_bytes(data)
    req = request(future, 4)
    req.to_pickle(tmp_path / "request.pkl")
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_LOAD, *(str(tmp_path / n) for n in ("predict.pkl", "request.pkl",
                                                                             "out.pkl", "out30.pkl"))],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: the forecast request has zero rows" in done.stdout
    assert "loaded: []" in done.stdout
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "out.pkl"), predict(req))
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "out30.pkl"), predict.with_params(req, alpha=0.3))
    assert_equal_to_reference(pd.read_pickle(tmp_path / "out.pkl"),
                              reference(results, last, future, transform, 0.05, steps=4))


def test_blocker_would_catch_a_statsmodels_import(tmp_path):
    """The blocked-import check can fail: a closure that imports statsmodels does not load."""
    import cloudpickle

    def predict(frame):
        import statsmodels  # noqa: F401

        return frame

    (tmp_path / "predict.pkl").write_bytes(cloudpickle.dumps(predict))
    pd.DataFrame({"steps": [1]}).to_pickle(tmp_path / "request.pkl")
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_LOAD, *(str(tmp_path / n) for n in ("predict.pkl", "request.pkl",
                                                                             "out.pkl", "out30.pkl"))],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode != 0 and "blocked in this test: statsmodels" in done.stderr


def test_output_labels_are_pandas_defaults_and_stay_out_of_the_pickle(series):
    """Fixed: prebuilt object-dtype labels changed the output's column dtype (a served forecast
    parsed back no longer equalled the in-process one). They are now pandas' default Index objects,
    built on first use and not pickled (a pickled pyarrow-backed Index would require pyarrow)."""
    _, predict, _, future = fitted(series, (1, 0), "log-diff", EXOG)
    out = predict(request(future, 3))
    fresh = pd.DataFrame({c: out[c].to_numpy() for c in out.columns}, index=pd.Index(list(out.index), name="period"))
    pd.testing.assert_frame_equal(out, fresh)  # dtypes of columns and index included
    data = dumps_predict(predict)  # after a call: the built Index objects must not be in it
    assert set(requirements_of(pickled_modules(data))) <= {"cloudpickle", "numpy", "pandas"}
