"""A forecast request, as the served model receives it: parsing, checks and an example.

`parse_forecast_request` turns the request frame into (steps, future exog array) or raises
`ForecastInputError` (a ValueError) naming what is wrong; `check_alpha` checks the interval level
given as an inference param; `request_example` builds a valid request for the model signature.
numpy and pandas only: these functions are pickled by value into `predict.pkl`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlflow_numerai.errors import InputError
from mlflow_numerai.families.varmax.config import VarmaxConfig


class ForecastInputError(InputError):
    """A forecast request (the frame given to `predict`) is malformed; the message names why."""


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
    columns = frame.columns.tolist()  # once: `in frame.columns` goes through the Index engine each time
    if exog_names:
        if columns != exog_names:
            present = set(columns)
            missing = [c for c in exog_names if c not in present]
            if missing:
                raise ForecastInputError(f"the forecast request is missing exogenous column(s) {missing}")
        steps = len(frame)
        exog = _numeric_block(frame, columns, exog_names)
    else:
        if "steps" in columns:
            values = _numeric_block(frame, columns, ["steps"])[:, 0]
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


def _numeric_block(frame: pd.DataFrame, present: list, columns: list[str]) -> np.ndarray:
    """The columns as float64, or ForecastInputError naming a non-numeric or NaN column.

    `present`: `frame.columns` as a list. The usual request holds exactly `columns`, all int or
    float: one `to_numpy` (pandas gives object for bool or str mixed in, so those take the
    checked path)."""
    if present == columns:
        values = frame.to_numpy()
        if values.dtype.kind in "iuf" and np.isfinite(values).all():
            return values.astype("float64", copy=False)
    out = np.empty((len(frame), len(columns)))
    for j, column in enumerate(columns):
        series = frame[column]
        if isinstance(series, pd.DataFrame):  # the label is duplicated in the request
            raise ForecastInputError(f"column {column!r} appears more than once in the forecast request")
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            raise ForecastInputError(_non_numeric(column, series))
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        if not np.all(np.isfinite(values)):
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ForecastInputError(f"column {column!r} has a missing or infinite value (row {bad})")
        out[:, j] = values
    return out


def _non_numeric(column: str, series: pd.Series) -> str:
    """What is wrong with a column pandas did not read as numbers: its first bad value."""
    for row, value in enumerate(series.tolist()):
        if value is None or (isinstance(value, float) and value != value):
            return f"column {column!r} has a missing or infinite value (row {row})"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"column {column!r} must be numeric, got {repr(value)[:40]} (row {row}, dtype {series.dtype})"
        try:
            float(value)
        except OverflowError:  # a JSON integer beyond float range keeps the column object
            return f"column {column!r} has a number too large for a float (row {row})"
    return f"column {column!r} must be numeric, got dtype {series.dtype}"


def request_example(frame: pd.DataFrame, config: VarmaxConfig, *, steps: int = 4) -> pd.DataFrame:
    """A valid forecast request: the last `steps` exog rows (as stand-ins for future ones)."""
    if config.exog:
        return frame[list(config.exog)].iloc[-steps:].astype("float64").reset_index(drop=True)
    return pd.DataFrame({"steps": [int(steps)]})

