"""How good a VARMAX forecast is: RMSE and MAPE against the actual values and the naive forecast.

`forecast_metrics` is the per-variable metrics.csv table, `test_forecast_table` the
test_forecast.csv one; numpy and pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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


def test_forecast_table(actual: pd.DataFrame, forecast: pd.DataFrame) -> pd.DataFrame:
    """`period` plus, per variable, `<var>_actual`, `_forecast`, `_lower`, `_upper` columns."""
    table = pd.DataFrame({"period": actual.index.astype(str)})
    for name in actual.columns:
        table[f"{name}_actual"] = actual[name].to_numpy(dtype="float64")
        for part in ("forecast", "lower", "upper"):
            table[f"{name}_{part}"] = forecast[f"{name}_{part}"].to_numpy()
    return table


test_forecast_table.__test__ = False  # a table builder, not a pytest test
