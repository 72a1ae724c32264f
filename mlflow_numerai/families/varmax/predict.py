"""The served VARMAX: `make_predict` wraps a fitted model into `predict(frame) -> frame`.

The closure holds numpy arrays and strings only (the state space of :func:`.fit.forecast_state`;
the output's Index objects are built on first use, see `FrameLabels`) and forecasts with
:mod:`.forecast`, so `predict.pkl` loads and runs without statsmodels. Everything a request does
not change (the error standard deviations of every horizon, the output columns, the period
labels) is computed once: a request costs the mean recursion, a few array operations and one
DataFrame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from mlflow_numerai.families.varmax.fit import forecast_labels, forecast_state
from mlflow_numerai.families.varmax.forecast import error_sd, forecast_values, output_columns
from mlflow_numerai.families.varmax.request import ForecastInputError, check_alpha, parse_forecast_request


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
    # numpy arrays and strings only: the closure pickles without statsmodels (see forecast.py)
    state = forecast_state(results)
    sd = error_sd(state, max_horizon, transform)
    frame_labels = FrameLabels(["step", *output_columns(endog_names)], forecast_labels(results, max_horizon))
    steps_column = np.arange(1, max_horizon + 1, dtype="int64")

    def forecast(frame: pd.DataFrame, alpha: float = default_alpha) -> pd.DataFrame:
        steps, exog = parse_forecast_request(frame, exog_names, max_horizon)
        values = forecast_values(state, steps, exog, transform=transform, last_level=last_level,
                                 alpha=check_alpha(alpha), sd=sd)
        if not np.isfinite(values).all():  # e.g. exog of 1e300: overflow, not a forecast
            raise ForecastInputError(
                "the forecast is not finite: the exogenous values are too large for this model"
                if exog is not None else "the forecast is not finite"
            )
        columns, periods = frame_labels.get()
        table = np.empty((steps, values.shape[1] + 1))
        table[:, 1:] = values
        out = pd.DataFrame(table, columns=columns, index=periods[:steps])
        out.isetitem(0, steps_column[:steps].copy())  # by position: no label lookup, no new Index
        return out

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return forecast(frame)

    predict.with_params = forecast
    return predict


class FrameLabels:
    """The output's column and period Index objects, built on first use in each process and left
    out of the pickle: pandas' default string Index is pyarrow-backed, so pickled it would make
    pyarrow a requirement of predict.pkl (and object dtype would change the output's dtypes)."""

    def __init__(self, columns: list[str], periods: list[str]) -> None:
        self.columns, self.periods = list(columns), list(periods)
        self.built: tuple[pd.Index, pd.Index] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "built": None}

    def get(self) -> tuple[pd.Index, pd.Index]:
        if self.built is None:  # a race builds them twice: harmless
            self.built = (pd.Index(self.columns), pd.Index(self.periods, name="period"))
        return self.built
