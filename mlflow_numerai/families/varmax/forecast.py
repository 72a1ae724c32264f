"""Closed-form forecasts of a fitted VARMAX from its state space matrices: numpy and pandas only.

A served forecast must not touch statsmodels (building its extended model for the future exog
costs ~9 ms a request). For a time-invariant linear Gaussian state space model

    y_t     = d + Z a_t + e_t,            e_t ~ N(0, H)
    a_{t+1} = c_t + T a_t + R u_t,        u_t ~ N(0, Q)

the h-step forecasts from the filtered state a at the end of the sample are the Kalman
prediction recursions with every observation missing:

    a_1 = c_1 + T a,  a_{h+1} = c_{h+1} + T a_h,  P_{h+1} = T P_h T' + R Q R'
    E[y_h] = d + Z a_h,  Var[y_h] = F_h = Z P_h Z' + H

P_1 is the filter's own predicted state covariance after the last observation (= T P T' + RQR'
with P the filtered one, up to the filter's steady-state shortcut: once the covariances converge
statsmodels stops updating them, and its filtered and predicted ones then agree only to ~1e-6;
`get_forecast` starts from the predicted one, so do we).

where VARMAX's state intercept c_h holds, in its first k_endog rows, the exogenous coefficients
times the h-th future exog row plus the trend coefficients times the trend terms of that period.
These are the numbers statsmodels' `get_forecast` computes (tested to 1e-8 relative).

This module is self-contained (no import of the package, no statsmodels, no scipy) so that the
forecast closure pickles by value into `predict.pkl` and loads where only numpy and pandas exist.
The transforms and the cumulated-error variance of `diff` / `log-diff` are documented in the
package docstring (`families/varmax/__init__.py`).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

STATE_KEYS = (
    "transition", "design", "obs_intercept", "obs_cov", "selected_state_cov", "filtered_state",
    "predicted_state_cov", "exog_coef", "trend_coef", "trend_powers", "trend_start",
)


def forecast_means(state: dict[str, Any], steps: int, exog: np.ndarray | None) -> np.ndarray:
    """E[y_h], h = 1..steps, shape (steps, k): the model's own (transformed) series."""
    transition, design = state["transition"], state["design"]
    k, m = design.shape
    intercepts = np.zeros((steps, m))
    if state["exog_coef"].shape[1]:
        intercepts[:, :k] += exog @ state["exog_coef"].T
    if state["trend_coef"].shape[1]:
        time = np.arange(state["trend_start"], state["trend_start"] + steps, dtype="float64")
        trend = np.column_stack([time**power for power in state["trend_powers"]])
        intercepts[:, :k] += trend @ state["trend_coef"].T
    a = state["filtered_state"]
    obs_intercept = state["obs_intercept"]
    means = np.empty((steps, k))
    for h in range(steps):
        a = intercepts[h] + transition @ a
        means[h] = obs_intercept + design @ a
    return means


def forecast_covariances(state: dict[str, Any], steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(F_h, P_h)], h = 1..steps: forecast error and predicted state covariances. They do not
    depend on the request (exog enters the means only), so a served model computes them once."""
    transition, design = state["transition"], state["design"]
    p = state["predicted_state_cov"]
    transposed = transition.T
    covs = []
    for h in range(steps):
        if h:
            p = transition @ p @ transposed + state["selected_state_cov"]
        covs.append((design @ p @ design.T + state["obs_cov"], p))
    return covs


def forecast_moments(state: dict[str, Any], steps: int, exog: np.ndarray | None) -> tuple[np.ndarray, list]:
    """(means (steps, k), [(F_h, P_h) per step]) of the model's own (transformed) series."""
    return forecast_means(state, steps, exog), forecast_covariances(state, steps)


def cumulative_variances(state: dict[str, Any], covs: list) -> np.ndarray:
    """Covariances (steps, k, k) of the sums of the first h forecast errors, h = 1..steps.

    Cov(e_i, e_j) = Z T^(j-i) P_i Z' for i < j: accumulated with R_h = (R_{h-1} + P_{h-1}) T'.
    """
    transition, design = state["transition"], state["design"]
    k, m = design.shape
    out = np.empty((len(covs), k, k))
    total = np.zeros((k, k))
    running = np.zeros((m, m))
    for h, (error_cov, _) in enumerate(covs):
        if h > 0:
            running = (running + covs[h - 1][1]) @ transition.T
        cross = design @ running @ design.T
        total = total + error_cov + cross + cross.T
        out[h] = total
    return out


def error_sd(state: dict[str, Any], steps: int, transform: str) -> np.ndarray:
    """Standard deviations (steps, k) of the forecast errors on the model's scale: of each step
    for `levels`/`log`, of the cumulated errors for `diff`/`log-diff`. Request-independent."""
    covs = forecast_covariances(state, steps)
    if transform in ("levels", "log"):
        var = np.array([np.diagonal(f) for f, _ in covs])
    else:
        var = np.diagonal(cumulative_variances(state, covs), axis1=1, axis2=2)
    return np.sqrt(np.clip(var, 0, None))


def forecast_values(
    state: dict[str, Any],
    steps: int,
    exog: np.ndarray | None,
    *,
    transform: str,
    last_level: np.ndarray,
    alpha: float,
    sd: np.ndarray | None = None,
) -> np.ndarray:
    """(steps, 3k) array: forecast, lower, upper of each variable in turn, original units.

    `sd`: :func:`error_sd` of at least `steps` steps, computed once by a served model.
    """
    mean = forecast_means(state, steps, exog)
    sd = error_sd(state, steps, transform) if sd is None else sd[:steps]
    z = NormalDist().inv_cdf(1 - alpha / 2)
    if transform not in ("levels", "log"):
        start = np.log(last_level) if transform == "log-diff" else last_level
        mean = start + np.cumsum(mean, axis=0)
    lower, upper = mean - z * sd, mean + z * sd
    if transform in ("log", "log-diff"):
        mean, lower, upper = np.exp(mean), np.exp(lower), np.exp(upper)
    return np.stack([mean, lower, upper], axis=2).reshape(steps, 3 * mean.shape[1])


def forecast_frame(
    state: dict[str, Any],
    steps: int,
    exog: np.ndarray | None,
    *,
    transform: str,
    last_level: np.ndarray,
    names: list[str],
    labels: pd.Index | list[str],
    alpha: float,
) -> pd.DataFrame:
    """`<var>_forecast/_lower/_upper` in original units for `steps` periods, indexed by `period`
    (`labels` holds the period labels of steps 1, 2, ...)."""
    if steps > len(labels):
        raise ValueError(f"at most {len(labels)} forecast periods, got {steps}")
    values = forecast_values(state, steps, exog, transform=transform, last_level=last_level, alpha=alpha)
    return pd.DataFrame(values, columns=pd.Index(output_columns(names)), index=pd.Index(labels[:steps], name="period"))


def output_columns(names: list[str]) -> list[str]:
    """`<var>_forecast`, `<var>_lower`, `<var>_upper` per endogenous variable."""
    return [f"{name}_{part}" for name in names for part in ("forecast", "lower", "upper")]
