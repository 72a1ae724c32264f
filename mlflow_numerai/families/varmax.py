"""statsmodels VARMAX: time-ordered split, parallel order search, forecasts in original units.

Maths only (no MLflow). The pipeline is the one of seed document 003 done right:

* the series is split **by time** (the last `test_periods` periods are the test set, never a
  random shuffle);
* every candidate order (p, q) is fitted on the training part and scored with aic/bic/hqic and
  with a real out-of-sample forecast of the test periods (never the in-sample `predict()`);
* the winner is refitted on the whole series and wrapped in a `predict(frame) -> frame` closure
  that forecasts the periods after the last observation.

Forecasts are computed in closed form from the fitted state space matrices
(:mod:`.varmax_forecast`, numpy only: a served request touches no statsmodels code); they equal
statsmodels' `get_forecast` (:func:`statsmodels_forecast_original_units`, kept as the reference).

Transforms and how forecasts come back to the original units (`transform`):

* ``levels``: the model's forecast and interval (mean ± z·sqrt(F_h)), as statsmodels gives them.
* ``log``: the model runs on ``log(y)``; forecast = ``exp(mean)`` (the median in original
  units), bounds = ``exp(lower)``, ``exp(upper)`` (exact quantiles: exp is monotone).
* ``diff``: the model runs on ``y_t - y_{t-1}``; the level forecast is the last observed level
  plus the cumulative sum of the forecast differences. Its interval is ``level ± z·sqrt(V_h)``
  where ``V_h`` is the variance of the *sum* of the first h forecast errors, computed exactly from
  the predicted state covariances including the covariances across horizons
  (`varmax_forecast.cumulative_variances`). Adding the per-step bounds would be wrong (too wide
  when errors cancel, too narrow when they persist).
* ``log-diff``: as ``diff`` on ``log(y)``, then ``exp`` of forecast and bounds (median and exact
  quantiles in original units).

Exogenous series enter the model as given (untransformed): callers send future exogenous rows
in their original units.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlflow_numerai.families.varmax_forecast import forecast_frame

TRANSFORMS = ("levels", "log", "diff", "log-diff")
CRITERIA = ("aic", "bic", "hqic", "test_rmse")
TRENDS = ("n", "c", "t", "ct")
MACRODATA = "macrodata"

# The ten macrodata series that are neither endogenous in the seed nor calendar columns.
_MACRO_EXOG = (
    "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "unemp", "pop", "infl", "realint",
)


class ForecastInputError(ValueError):
    """A forecast request (the frame given to `predict`) is malformed; the message names why."""


@dataclass(frozen=True)
class VarmaxConfig:
    """What to model and how to search: the parameters of one VARMAX training run."""

    endog: tuple[str, ...]
    exog: tuple[str, ...] = ()
    transform: str = "levels"
    test_periods: int = 12
    max_p: int = 2
    max_q: int = 1
    criterion: str = "aic"
    trend: str = "c"
    maxiter: int = 50
    alpha: float = 0.05
    max_horizon: int = 40

    def __post_init__(self) -> None:
        object.__setattr__(self, "endog", tuple(self.endog))
        object.__setattr__(self, "exog", tuple(self.exog))
        validate_config(self)


def validate_config(config: VarmaxConfig) -> None:
    """Raise ValueError naming the first invalid parameter of `config`."""
    if len(config.endog) < 2:
        raise ValueError(f"endog must name at least 2 series for a VARMAX, got {list(config.endog)}")
    if len(set(config.endog)) != len(config.endog) or len(set(config.exog)) != len(config.exog):
        raise ValueError("endog and exog must not repeat a column")
    if overlap := set(config.endog) & set(config.exog):
        raise ValueError(f"columns {sorted(overlap)} are both endog and exog")
    if config.transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {list(TRANSFORMS)}, got {config.transform!r}")
    if config.criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {config.criterion!r}")
    if config.trend not in TRENDS:
        raise ValueError(f"trend must be one of {list(TRENDS)}, got {config.trend!r}")
    for name in ("test_periods", "maxiter", "max_horizon"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("max_p", "max_q"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if config.max_p == 0 and config.max_q == 0:
        raise ValueError("max_p and max_q are both 0: no candidate order besides (0, 0)")
    if not 0 < config.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {config.alpha!r}")


# The seed's configuration: US macro data, endog realgdp + realcons, exog the other ten series.
PRESETS: dict[str, VarmaxConfig] = {
    "macrodata-seed": VarmaxConfig(
        endog=("realgdp", "realcons"),
        exog=_MACRO_EXOG,
        transform="log-diff",
        test_periods=12,
        max_p=2,
        max_q=2,
        criterion="aic",
        trend="c",
        maxiter=50,
    ),
}


# --------------------------------------------------------------------------- data


def load_macrodata() -> pd.DataFrame:
    """statsmodels' US macroeconomic data (1959Q1-2009Q3), indexed by a quarterly PeriodIndex."""
    import statsmodels.api as sm

    raw = sm.datasets.macrodata.load_pandas().data
    index = pd.PeriodIndex.from_fields(
        year=raw["year"].astype(int), quarter=raw["quarter"].astype(int), freq="Q"
    )
    frame = raw.drop(columns=["year", "quarter"]).set_index(index)
    frame.index.name = "period"
    return frame.astype("float64")


def load_series(
    source: str | os.PathLike = MACRODATA, *, date_column: str | None = None, freq: str | None = None
) -> pd.DataFrame:
    """A time-indexed frame: `"macrodata"`, or a CSV/parquet file with a date or period column.

    The index becomes a PeriodIndex named `period` (frequency `freq`, or inferred from the
    dates); rows are sorted by time; duplicated or irregular periods raise ValueError.
    """
    if str(source) == MACRODATA:
        return load_macrodata()
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = pd.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        raw = pd.read_parquet(path)
    else:
        raise ValueError(f"data file {str(path)!r}: expected a .csv or .parquet file")
    if date_column is None:
        raise ValueError(f"data file {str(path)!r}: give date_column (one of {list(raw.columns)})")
    if date_column not in raw.columns:
        raise ValueError(f"date column {date_column!r} not in {str(path)!r}; columns: {list(raw.columns)}")
    index = to_period_index(raw[date_column], freq=freq)
    frame = raw.drop(columns=[date_column]).set_index(index).sort_index()
    if frame.index.has_duplicates:
        dup = frame.index[frame.index.duplicated()][0]
        raise ValueError(f"date column {date_column!r} repeats period {dup}")
    expected = pd.period_range(frame.index[0], frame.index[-1], freq=frame.index.freq)
    if len(expected) != len(frame):
        raise ValueError(
            f"date column {date_column!r} has gaps: {len(frame)} rows span {len(expected)} periods"
        )
    return frame


def to_period_index(values: pd.Series, *, freq: str | None = None) -> pd.PeriodIndex:
    """A PeriodIndex named `period` from dates or period strings ("2009Q3", "2020-01")."""
    if isinstance(values.dtype, pd.PeriodDtype):
        index = pd.PeriodIndex(values)
        return index.asfreq(freq) if freq else index.rename("period")
    try:
        with warnings.catch_warnings():  # "could not infer format": period strings parse one by one
            warnings.simplefilter("ignore", UserWarning)
            dates = pd.to_datetime(values)
    except (ValueError, TypeError):
        try:  # period strings such as 2009Q3 that to_datetime rejects
            return pd.PeriodIndex(values.astype(str), freq=freq, name="period")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {values.name!r} is neither dates nor periods: {exc}") from exc
    if freq is None:
        freq = pd.infer_freq(pd.DatetimeIndex(dates).sort_values())
        if freq is None:
            raise ValueError(f"cannot infer the frequency of column {values.name!r}; pass freq")
    index = pd.PeriodIndex(pd.DatetimeIndex(dates).to_period(_period_freq(freq)), name="period")
    return index


def _period_freq(freq: str) -> str:
    """A datetime frequency alias as a period frequency ("QS-OCT" -> "Q", "MS" -> "M")."""
    base = freq.split("-")[0].upper()
    return {"QS": "Q", "QE": "Q", "MS": "M", "ME": "M", "YS": "Y", "YE": "Y", "AS": "Y", "A": "Y"}.get(
        base, base
    )


def check_columns(frame: pd.DataFrame, config: VarmaxConfig) -> None:
    """Raise ValueError naming any missing, non-numeric, NaN or (for log) non-positive column."""
    missing = [c for c in (*config.endog, *config.exog) if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the data; available: {list(frame.columns)}")
    for column in (*config.endog, *config.exog):
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"column {column!r} must be numeric, got dtype {frame[column].dtype}")
        if frame[column].isna().any():
            first = frame.index[frame[column].isna().to_numpy()][0]
            raise ValueError(f"column {column!r} has NaN (first at {first})")
    if config.transform in ("log", "log-diff"):
        for column in config.endog:
            if (frame[column] <= 0).any():
                raise ValueError(f"transform {config.transform!r} needs column {column!r} > 0")
    needed = config.test_periods + 2 * (config.max_p + config.max_q) + 10
    if len(frame) < needed:
        raise ValueError(f"{len(frame)} periods are too few for test_periods={config.test_periods} and this search")


def split_by_time(frame: pd.DataFrame, test_periods: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame minus its last `test_periods` rows, and those rows (time order kept)."""
    if not 0 < test_periods < len(frame):
        raise ValueError(f"test_periods must be in [1, {len(frame) - 1}], got {test_periods}")
    return frame.iloc[:-test_periods], frame.iloc[-test_periods:]


def transform_endog(endog: pd.DataFrame, transform: str) -> pd.DataFrame:
    """The series the model is fitted on (`diff` transforms lose the first period)."""
    if transform == "levels":
        return endog.astype("float64")
    if transform == "log":
        return np.log(endog.astype("float64"))
    if transform == "diff":
        return endog.astype("float64").diff().iloc[1:]
    if transform == "log-diff":
        return np.log(endog.astype("float64")).diff().iloc[1:]
    raise ValueError(f"transform must be one of {list(TRANSFORMS)}, got {transform!r}")


def model_data(frame: pd.DataFrame, config: VarmaxConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(transformed endog, aligned exog or None) for fitting on `frame`."""
    endog = transform_endog(frame[list(config.endog)], config.transform)
    exog = frame.loc[endog.index, list(config.exog)].astype("float64") if config.exog else None
    return endog, exog


# --------------------------------------------------------------------------- fit and forecast


def candidate_orders(max_p: int, max_q: int) -> list[tuple[int, int]]:
    """Every (p, q) with 0 <= p <= max_p, 0 <= q <= max_q except (0, 0), in (p, q) order."""
    return [(p, q) for p in range(max_p + 1) for q in range(max_q + 1) if (p, q) != (0, 0)]


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
) -> pd.DataFrame:
    """Forecast `steps` periods after the fitted sample, in original units (closed form).

    Columns `<var>_forecast`, `<var>_lower`, `<var>_upper` per endogenous variable, indexed by
    the forecast periods (see the module docstring for how bounds are mapped back).
    """
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


def statsmodels_forecast_original_units(
    results: Any,
    steps: int,
    exog: pd.DataFrame | np.ndarray | None,
    *,
    transform: str,
    last_level: np.ndarray,
    endog_names: Iterable[str],
    alpha: float = 0.05,
) -> pd.DataFrame:
    """:func:`forecast_original_units` through statsmodels' `get_forecast` (~9 ms a call): the
    reference the closed form is tested and benchmarked against; not used to serve."""
    names = list(endog_names)
    with single_blas_thread():
        return _statsmodels_forecast(results, steps, exog, transform, last_level, names, alpha)


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


def forecast_metrics(actual: pd.DataFrame, forecast: pd.DataFrame, last_level: pd.Series) -> pd.DataFrame:
    """Per variable: RMSE and MAPE (%) of the forecast and of the naive last-value forecast."""
    rows = {}
    for name in actual.columns:
        a = actual[name].to_numpy(dtype="float64")
        f = forecast[f"{name}_forecast"].to_numpy(dtype="float64")
        n = np.full_like(a, float(last_level[name]))
        rows[name] = {
            "rmse": rmse(a, f),
            "mape": mape(a, f),
            "naive_rmse": rmse(a, n),
            "naive_mape": mape(a, n),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "variable"
    table["rmse_vs_naive"] = table["rmse"] / table["naive_rmse"]
    return table


def rmse(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(actual) - np.asarray(forecast)) ** 2)))


def mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Mean absolute percentage error in percent (NaN when an actual value is 0)."""
    actual = np.asarray(actual, dtype="float64")
    if np.any(actual == 0):
        return float("nan")
    return float(np.mean(np.abs((actual - np.asarray(forecast)) / actual)) * 100)


# --------------------------------------------------------------------------- order search


@dataclass
class CandidateResult:
    """One fitted candidate order: its criteria, test error, fit time and warnings."""

    p: int
    q: int
    aic: float = math.nan
    bic: float = math.nan
    hqic: float = math.nan
    test_rmse: float = math.nan
    fit_seconds: float = math.nan
    converged: bool = False
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """The order_search.csv row (warnings joined, error kept)."""
        out = asdict(self)
        out["n_warnings"] = len(self.warnings)
        out["warnings"] = " | ".join(self.warnings)
        out["error"] = self.error or ""
        return out


def evaluate_candidate(
    train: pd.DataFrame, test: pd.DataFrame, config: VarmaxConfig, order: tuple[int, int]
) -> CandidateResult:
    """Fit `order` on `train`, forecast the `test` periods, score both; never raises on a bad fit."""
    p, q = order
    started = time.perf_counter()
    try:
        endog, exog = model_data(train, config)
        results, messages = fit_varmax(endog, exog, order, trend=config.trend, maxiter=config.maxiter)
        fit_seconds = time.perf_counter() - started
        future_exog = test[list(config.exog)].astype("float64") if config.exog else None
        forecast = forecast_original_units(
            results,
            len(test),
            future_exog,
            transform=config.transform,
            last_level=train[list(config.endog)].iloc[-1].to_numpy(dtype="float64"),
            endog_names=config.endog,
            alpha=config.alpha,
        )
        errors = [
            rmse(test[name].to_numpy(), forecast[f"{name}_forecast"].to_numpy()) for name in config.endog
        ]
        return CandidateResult(
            p=p,
            q=q,
            aic=float(results.aic),
            bic=float(results.bic),
            hqic=float(results.hqic),
            test_rmse=float(np.mean(errors)),
            fit_seconds=fit_seconds,
            converged=bool(results.mle_retvals.get("converged", False)),
            warnings=messages,
        )
    except Exception as exc:  # a candidate that cannot be fitted loses; the search goes on
        return CandidateResult(
            p=p, q=q, fit_seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"
        )


def _evaluate_task(args: tuple) -> CandidateResult:
    """Process-pool entry point (top level so it pickles)."""
    return evaluate_candidate(*args)


def search_orders(
    train: pd.DataFrame,
    test: pd.DataFrame,
    config: VarmaxConfig,
    *,
    workers: int | None = None,
    on_result: Callable[[CandidateResult], None] | None = None,
    progress: bool = True,
    start_method: str | None = None,
) -> list[CandidateResult]:
    """Fit every candidate order; `workers` > 1 fits them in that many processes.

    `start_method` ("fork", "forkserver", "spawn") defaults to :func:`pool_context`'s choice.

    Results come back in (p, q) order whatever the worker count, and are the same numbers as a
    sequential search (each fit is deterministic and independent). `on_result` is called for each
    candidate as soon as it finishes (in completion order).
    """
    from tqdm.auto import tqdm

    orders = candidate_orders(config.max_p, config.max_q)
    workers = default_workers(len(orders)) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    found: dict[tuple[int, int], CandidateResult] = {}
    # no bar object at all when silent: tqdm starts a monitor thread even for a disabled bar
    bar = tqdm(total=len(orders), desc="VARMAX order search", unit="fit") if progress else _NoBar()
    try:
        if workers == 1:
            for order in orders:
                found[order] = evaluate_candidate(train, test, config, order)
                _report(found[order], on_result, bar)
        else:
            from concurrent.futures import as_completed

            context = pool_context(start_method)
            with ProcessPoolExecutor(max_workers=min(workers, len(orders)), mp_context=context) as pool:
                futures = {pool.submit(_evaluate_task, (train, test, config, o)): o for o in orders}
                for future in as_completed(futures):
                    found[futures[future]] = future.result()
                    _report(found[futures[future]], on_result, bar)
    finally:
        bar.close()
    return [found[order] for order in orders]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def pool_context(start_method: str | None = None) -> Any:
    """The process start method: `start_method` if given; else `fork` when this process runs a
    single thread (children start at once, with statsmodels already imported), else
    `forkserver` (forking a threaded process can deadlock a child on a lock another thread
    held), whose server imports statsmodels once for all children."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if start_method is not None and start_method not in methods:
        raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
    if start_method in ("fork", "spawn"):
        return multiprocessing.get_context(start_method)
    if start_method is None and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, "statsmodels.tsa.statespace.varmax"])
        return context
    return multiprocessing.get_context("spawn")


def _report(result: CandidateResult, on_result: Callable | None, bar: Any) -> None:
    bar.update(1)
    bar.set_postfix_str(f"last ({result.p},{result.q})")
    if on_result is not None:
        on_result(result)


def default_workers(n_tasks: int) -> int:
    """One process per core this process may use, at most one per task."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_tasks))


def search_table(results: list[CandidateResult]) -> pd.DataFrame:
    """The order_search.csv table: one row per candidate, in (p, q) order."""
    columns = ["p", "q", "aic", "bic", "hqic", "test_rmse", "fit_seconds", "converged", "n_warnings", "warnings", "error"]
    return pd.DataFrame([r.row() for r in results], columns=columns)


def select_order(results: list[CandidateResult], criterion: str) -> tuple[int, int]:
    """The order with the smallest finite `criterion`; ties go to the smaller p + q, then p."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    usable = [r for r in results if r.error is None and np.isfinite(getattr(r, criterion))]
    if not usable:
        reasons = "; ".join(f"({r.p},{r.q}): {r.error or 'non-finite ' + criterion}" for r in results)
        raise RuntimeError(f"no candidate order could be fitted: {reasons}")
    best = min(usable, key=lambda r: (getattr(r, criterion), r.p + r.q, r.p))
    return best.p, best.q


# --------------------------------------------------------------------------- predict closure


def make_predict(
    results: Any,
    *,
    endog_names: Iterable[str],
    exog_names: Iterable[str],
    transform: str,
    last_level: np.ndarray,
    max_horizon: int,
    alpha: float = 0.05,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`predict(frame) -> frame`: forecasts of the periods after the fitted sample, original units.

    Input: one row per future period holding the exogenous columns (extra columns are ignored),
    or, for a model without exog, a `steps` column holding the count (else one row per step).
    Output: a numeric `step` column (1..h) and `<var>_forecast`, `<var>_lower`, `<var>_upper` per
    endogenous variable, indexed by `period` (e.g. "2009Q4"). Malformed input raises
    ForecastInputError (a ValueError) naming the problem. `predict.with_params(frame, alpha=...)`
    forecasts with another interval level (MLflow's inference params).
    """
    endog_names = list(endog_names)
    exog_names = list(exog_names)
    last_level = np.asarray(last_level, dtype="float64")
    default_alpha = float(alpha)
    # numpy arrays and strings only: the closure pickles without statsmodels (see varmax_forecast)
    state = forecast_state(results)
    # plain lists: a pandas string Index would pickle pyarrow into predict.pkl's requirements
    labels = forecast_labels(results, max_horizon)

    def forecast(frame: pd.DataFrame, alpha: float = default_alpha) -> pd.DataFrame:
        steps, exog = parse_forecast_request(frame, exog_names, max_horizon)
        out = forecast_frame(
            state,
            steps,
            exog,
            transform=transform,
            last_level=last_level,
            names=endog_names,
            labels=labels,
            alpha=check_alpha(alpha),
        )
        if not np.isfinite(out.to_numpy()).all():  # e.g. exog of 1e300: overflow, not a forecast
            raise ForecastInputError(
                "the forecast is not finite: the exogenous values are too large for this model"
                if exog is not None else "the forecast is not finite"
            )
        out.insert(0, "step", np.arange(1, steps + 1, dtype="int64"))
        return out

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return forecast(frame)

    predict.with_params = forecast
    return predict


def check_alpha(alpha: Any) -> float:
    """`alpha` as a float in (0, 1), or ForecastInputError."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ForecastInputError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not 0 < value < 1:
        raise ForecastInputError(f"alpha must be in (0, 1), got {value}")
    return value


def parse_forecast_request(
    frame: Any, exog_names: list[str], max_horizon: int
) -> tuple[int, np.ndarray | None]:
    """(steps, future exog array or None) from a request frame; ForecastInputError if malformed."""
    if not isinstance(frame, pd.DataFrame):
        raise ForecastInputError(f"the forecast request must be a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise ForecastInputError("the forecast request has zero rows; send one row per future period")
    if exog_names:
        missing = [c for c in exog_names if c not in frame.columns]
        if missing:
            raise ForecastInputError(f"the forecast request is missing exogenous column(s) {missing}")
        steps = len(frame)
        exog = _numeric_block(frame, exog_names)
    else:
        if "steps" in frame.columns:
            values = _numeric_block(frame, ["steps"])[:, 0]
            if np.any(values != values[0]) or values[0] != int(values[0]):
                raise ForecastInputError(f"column 'steps' must hold one whole number, got {values.tolist()}")
            steps = int(values[0])
        else:
            steps = len(frame)
        exog = None
    if steps < 1:
        raise ForecastInputError(f"steps must be at least 1, got {steps}")
    if steps > max_horizon:
        raise ForecastInputError(
            f"the forecast request asks for {steps} periods, more than the maximum horizon {max_horizon}"
        )
    return steps, exog


def _numeric_block(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The columns as float64, or ForecastInputError naming a non-numeric or NaN column."""
    if list(frame.columns) == columns and all(dtype == np.float64 for dtype in frame.dtypes):
        values = frame.to_numpy(dtype="float64")  # the usual request: one float block, no copy
        if np.isfinite(values).all():
            return values
    out = np.empty((len(frame), len(columns)))
    for j, column in enumerate(columns):
        series = frame[column]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            raise ForecastInputError(f"column {column!r} must be numeric, got dtype {series.dtype}")
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        if not np.all(np.isfinite(values)):
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ForecastInputError(f"column {column!r} has a missing or infinite value (row {bad})")
        out[:, j] = values
    return out


# --------------------------------------------------------------------------- the whole run


@dataclass
class VarmaxOutcome:
    """Everything a training run produces, for the entry point to log."""

    config: VarmaxConfig
    candidates: list[CandidateResult]
    order: tuple[int, int]
    test_forecast: pd.DataFrame  # period x (actual, forecast, lower, upper) per variable
    metrics: pd.DataFrame  # variable x (rmse, mape, naive_rmse, naive_mape, rmse_vs_naive)
    results: Any  # winner refitted on the whole series: what `predict` forecasts from
    fit_warnings: list[str]
    predict: Callable[..., pd.DataFrame]
    input_example: pd.DataFrame

    @property
    def order_search(self) -> pd.DataFrame:
        return search_table(self.candidates)


def train_varmax(
    frame: pd.DataFrame,
    config: VarmaxConfig,
    *,
    workers: int | None = None,
    on_candidate: Callable[[CandidateResult], None] | None = None,
    progress: bool = True,
) -> VarmaxOutcome:
    """Split by time, search the order, score the winner on the test set, refit on everything."""
    check_columns(frame, config)
    train, test = split_by_time(frame, config.test_periods)
    candidates = search_orders(train, test, config, workers=workers, on_result=on_candidate, progress=progress)
    order = select_order(candidates, config.criterion)

    endog, exog = model_data(train, config)
    test_results, _ = fit_varmax(endog, exog, order, trend=config.trend, maxiter=config.maxiter)
    last_train = train[list(config.endog)].iloc[-1]
    forecast = forecast_original_units(
        test_results,
        len(test),
        test[list(config.exog)].astype("float64") if config.exog else None,
        transform=config.transform,
        last_level=last_train.to_numpy(dtype="float64"),
        endog_names=config.endog,
        alpha=config.alpha,
    )
    forecast.index = pd.Index(test.index.astype(str), name="period")
    metrics = forecast_metrics(test[list(config.endog)], forecast, last_train)
    test_forecast = test_forecast_table(test[list(config.endog)], forecast)

    endog_full, exog_full = model_data(frame, config)
    results, fit_warnings = fit_varmax(endog_full, exog_full, order, trend=config.trend, maxiter=config.maxiter)
    last_level = frame[list(config.endog)].iloc[-1].to_numpy(dtype="float64")
    predict = make_predict(
        results,
        endog_names=config.endog,
        exog_names=config.exog,
        transform=config.transform,
        last_level=last_level,
        max_horizon=config.max_horizon,
        alpha=config.alpha,
    )
    return VarmaxOutcome(
        config=config,
        candidates=candidates,
        order=order,
        test_forecast=test_forecast,
        metrics=metrics,
        results=results,
        fit_warnings=fit_warnings,
        predict=predict,
        input_example=request_example(frame, config, steps=min(4, config.max_horizon)),
    )


def test_forecast_table(actual: pd.DataFrame, forecast: pd.DataFrame) -> pd.DataFrame:
    """`period` plus, per variable, `<var>_actual`, `_forecast`, `_lower`, `_upper` columns."""
    table = pd.DataFrame({"period": actual.index.astype(str)})
    for name in actual.columns:
        table[f"{name}_actual"] = actual[name].to_numpy(dtype="float64")
        for part in ("forecast", "lower", "upper"):
            table[f"{name}_{part}"] = forecast[f"{name}_{part}"].to_numpy()
    return table


test_forecast_table.__test__ = False  # a table builder, not a pytest test


def request_example(frame: pd.DataFrame, config: VarmaxConfig, *, steps: int = 4) -> pd.DataFrame:
    """A valid forecast request: the last `steps` exog rows (as stand-ins for future ones)."""
    if config.exog:
        return frame[list(config.exog)].iloc[-steps:].astype("float64").reset_index(drop=True)
    return pd.DataFrame({"steps": [int(steps)]})


def with_overrides(config: VarmaxConfig, **overrides: Any) -> VarmaxConfig:
    """`config` with the given non-None fields replaced (validated again)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
