"""The series a VARMAX is fitted on: loading, checks, the time split and the transforms.

`load_series` reads statsmodels' macrodata or a CSV/parquet file into a frame indexed by a
regular PeriodIndex; `check_columns` names any column a config cannot use; `split_by_time` keeps
the last periods as the test set; `transform_endog` / `model_data` give what the model runs on
(the transforms are described in the package docstring).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mlflow_numerai.families.varmax.config import TRANSFORMS, VarmaxConfig

MACRODATA = "macrodata"


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

