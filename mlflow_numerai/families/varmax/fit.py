"""One VARMAX fit and the forecasts read out of its results, in original units.

`fit_varmax` fits one order by maximum likelihood (BLAS held to one thread); `forecast_state`
turns the fitted statsmodels results into the numpy arrays the closed-form forecaster
(:mod:`.forecast`) runs on; `forecast_original_units` forecasts with it, or, with
`method="statsmodels"`, through statsmodels' own `get_forecast` (the reference the closed form is
tested and benchmarked against, never used to serve). statsmodels and scipy are imported where
they are used.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from mlflow_numerai.families.varmax.forecast import forecast_frame

FORECAST_METHODS = ("closed-form", "statsmodels")


def single_blas_thread() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread in the block when threadpoolctl is installed.

    VARMAX's Kalman filter multiplies tiny matrices; with several BLAS threads on a loaded
    machine the threads spin-wait and a fit takes minutes instead of seconds (measured here:
    >288 s vs 12 s). Results are unchanged: such small products are never split across threads.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # e.g. a bare runner with only pandas/numpy/statsmodels: run as is
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def fit_varmax(
    endog: pd.DataFrame,
    exog: pd.DataFrame | None,
    order: tuple[int, int],
    *,
    trend: str = "c",
    maxiter: int = 50,
) -> tuple[Any, list[str]]:
    """Fit VARMAX(p, q) by maximum likelihood; returns (results, warning messages raised)."""
    from statsmodels.tsa.statespace.varmax import VARMAX

    with warnings.catch_warnings(record=True) as caught, single_blas_thread():
        warnings.simplefilter("always")
        model = VARMAX(endog, exog=exog, order=tuple(order), trend=trend)
        results = model.fit(disp=False, maxiter=maxiter)
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    return results, messages


def cumulative_forecast_variance(
    prediction_results: Any, design: np.ndarray, transition: np.ndarray
) -> np.ndarray:
    """Covariance of the sums of the first h forecast errors, h = 1..H, shape (H, k, k), from
    statsmodels prediction results (the reference path; the served one is `varmax_forecast`).

    For forecast errors e_i = y_i - E[y_i] of a time-invariant state space model (design Z,
    transition T), Cov(e_i, e_j) = Z P_i (T^(j-i))' Z' for i < j, with P_i the predicted state
    covariance, and Var(e_i) = the forecast error covariance F_i (measurement noise included).
    The sum's covariance V_h is accumulated with R_h = (R_{h-1} + P_{h-1}) T', linear in H.
    """
    state_cov = np.asarray(prediction_results.predicted_state_cov)  # (m, m, H)
    error_cov = np.asarray(prediction_results.forecasts_error_cov)  # (k, k, H)
    horizon = error_cov.shape[-1]
    k, m = design.shape
    out = np.empty((horizon, k, k))
    total = np.zeros((k, k))
    running = np.zeros((m, m))
    for h in range(horizon):
        if h > 0:
            running = (running + state_cov[..., h - 1]) @ transition.T
        cross = design @ running @ design.T
        total = total + error_cov[..., h] + cross + cross.T
        out[h] = total
    return out


def forecast_state(results: Any) -> dict[str, Any]:
    """The fitted state space of a VARMAX results object as numpy arrays, for
    :mod:`.varmax_forecast`: time-invariant matrices, exog and trend coefficients of the state
    intercept, the filtered state at the end of the sample and the predicted covariance after it."""
    model = results.model
    fr = results.filter_results
    if model.k_exog and not model.mle_regression:
        raise ValueError("closed-form forecasts need mle_regression=True (exog in the state intercept)")
    params = np.asarray(results.params, dtype="float64")
    k = model.k_endog
    selection = _time_invariant(fr.selection)
    state = {
        "transition": _time_invariant(fr.transition).astype("float64"),
        "design": _time_invariant(fr.design).astype("float64"),
        "obs_intercept": np.asarray(fr.obs_intercept, dtype="float64")[:, 0],  # (k, 1): constant
        "obs_cov": _time_invariant(fr.obs_cov).astype("float64"),
        "selected_state_cov": selection @ _time_invariant(fr.state_cov) @ selection.T,
        "filtered_state": np.asarray(fr.filtered_state[:, -1], dtype="float64"),
        # P_1 of the forecasts (not derived from filtered_state_cov: see varmax_forecast)
        "predicted_state_cov": np.asarray(fr.predicted_state_cov[:, :, -1], dtype="float64"),
        "exog_coef": np.zeros((k, 0)),
        "trend_coef": np.zeros((k, 0)),
        "trend_powers": tuple(int(v) for v in np.asarray(model.polynomial_trend).nonzero()[0]),
        # the trend term of forecast step 1 is that of period nobs (periods count from trend_offset)
        "trend_start": int(model.trend_offset + model.nobs),
    }
    if model.k_exog:
        state["exog_coef"] = params[model._params_regression].reshape(k, model.k_exog)
    if model.k_trend:
        state["trend_coef"] = params[model._params_trend].reshape(k, model.k_trend)
    return state


def forecast_labels(results: Any, horizon: int) -> list[str]:
    """The `horizon` periods after the fitted sample as strings ("2009Q4"), as statsmodels
    indexes its forecasts (step numbers when the model had no dates)."""
    model = results.model
    index = model._get_prediction_index(model.nobs, model.nobs + horizon - 1)[3]
    return list(_period_labels(index))


def forecast_original_units(
    results: Any,
    steps: int,
    exog: pd.DataFrame | np.ndarray | None,
    *,
    transform: str,
    last_level: np.ndarray,
    endog_names: Iterable[str],
    alpha: float = 0.05,
    method: str = "closed-form",
) -> pd.DataFrame:
    """Forecast `steps` periods after the fitted sample, in original units.

    Columns `<var>_forecast`, `<var>_lower`, `<var>_upper` per endogenous variable, indexed by
    the forecast periods (see the package docstring for how bounds are mapped back). `method`:
    "closed-form" (:mod:`.forecast`, what the served model runs) or "statsmodels" (its
    `get_forecast`, ~9 ms a call: the reference, see :func:`statsmodels_forecast_original_units`).
    """
    if method == "statsmodels":
        with single_blas_thread():
            return _statsmodels_forecast(results, steps, exog, transform, last_level, list(endog_names), alpha)
    if method != "closed-form":
        raise ValueError(f"method must be one of {list(FORECAST_METHODS)}, got {method!r}")
    return forecast_frame(
        forecast_state(results),
        steps,
        None if exog is None else np.asarray(exog, dtype="float64"),
        transform=transform,
        last_level=np.asarray(last_level, dtype="float64"),
        names=list(endog_names),
        labels=forecast_labels(results, steps),
        alpha=alpha,
    )


def statsmodels_forecast_original_units(results: Any, steps: int, exog: Any, **options: Any) -> pd.DataFrame:
    """:func:`forecast_original_units` through statsmodels' `get_forecast` (same options): the
    reference the closed form is tested and benchmarked against; not used to serve."""
    return forecast_original_units(results, steps, exog, method="statsmodels", **options)


def _statsmodels_forecast(results, steps, exog, transform, last_level, names, alpha) -> pd.DataFrame:
    from scipy.stats import norm

    forecast = results.get_forecast(steps=steps, exog=exog)
    mean = np.asarray(forecast.predicted_mean, dtype="float64").reshape(steps, len(names))
    index = forecast.predicted_mean.index
    if transform in ("levels", "log"):
        bounds = np.asarray(forecast.conf_int(alpha=alpha), dtype="float64")
        lower, upper = bounds[:, : len(names)], bounds[:, len(names):]
    else:
        z = norm.ppf(1 - alpha / 2)
        var = cumulative_forecast_variance(
            forecast.prediction_results,
            _time_invariant(results.filter_results.design),
            _time_invariant(results.filter_results.transition),
        )
        sd = np.sqrt(np.clip(np.diagonal(var, axis1=1, axis2=2), 0, None))
        start = np.log(last_level) if transform == "log-diff" else np.asarray(last_level, dtype="float64")
        mean = start + np.cumsum(mean, axis=0)
        lower, upper = mean - z * sd, mean + z * sd
    if transform in ("log", "log-diff"):
        mean, lower, upper = np.exp(mean), np.exp(lower), np.exp(upper)
    columns = {}
    for j, name in enumerate(names):
        columns[f"{name}_forecast"] = mean[:, j]
        columns[f"{name}_lower"] = lower[:, j]
        columns[f"{name}_upper"] = upper[:, j]
    out = pd.DataFrame(columns, index=_period_labels(index))
    out.index.name = "period"
    return out


def _time_invariant(matrix: np.ndarray) -> np.ndarray:
    """A state space system matrix without its trailing time axis (VARMAX's are constant)."""
    matrix = np.asarray(matrix)
    return matrix[..., 0] if matrix.ndim == 3 else matrix


def _period_labels(index: pd.Index) -> pd.Index:
    """Forecast periods as strings ("2009Q4"), or step numbers when the model had no dates."""
    if isinstance(index, (pd.PeriodIndex, pd.DatetimeIndex)):
        return pd.Index(index.astype(str), name="period")
    return pd.Index([str(v) for v in index], name="period")
