"""The output contract of a Numerai predict function: one set of named checks, one place.

What `predict(live_features)` must return: exactly a `pandas.DataFrame` with one float column
`prediction`, indexed like `live_features`, every value in [0, 1], no NaN, not constant; written as
CSV, columns exactly `id,prediction` with every live id once. `CHECKS` names every check; a failure
is a `CheckFailure(check, message)` whose reason code is `invalid_output:<check>`. Three places
apply it with these names: packaging (`check_predictions`, on what predict returns for an example),
the sandbox child (`check_returned`, Numerai runner's checks on the returned object) and the
validator (`check_submission` / `check_forecast`, on the CSV the child wrote).

Standalone on purpose: imports only the standard library, numpy and pandas, nothing of
`mlflow_numerai`. The sandbox child runs without the package (`python -I -S`) and loads this file by
path from its private directory. Keep it runnable on every Python the validator's images use (3.10+).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

PREDICTION_COLUMN = "prediction"
SUBMISSION_COLUMNS = ["id", PREDICTION_COLUMN]

# Every check, by name (the reason code is `invalid_output:<name>`), and what it refuses.
CHECKS: dict[str, str] = {
    "none": "predict returned None",
    "type": "predict returned something other than exactly a pandas.DataFrame",
    "empty": "no rows",
    "columns": "not the expected columns: exactly `prediction` returned, `id,prediction` written as CSV, "
               "a forecast's declared columns",
    "dtype": "the prediction column is not float",
    "index": "the index is not live_features' index (the same ids in the same order)",
    "ids_duplicated": "an id appears more than once in the written predictions",
    "ids_missing": "a live id has no written prediction",
    "ids_unknown": "a written id is not in the live data",
    "nan": "NaN, empty or non-numeric predictions",
    "range": "a prediction outside [0, 1]",
    "constant": "every prediction is the same (std 0)",
    "horizon": "a forecast with another number of rows than the periods requested",
    "finite": "a forecast value that is NaN, infinite or not a number",
    "csv": "the predictions could not be written as CSV",
    "file": "the written predictions are missing, not a regular file, linked elsewhere or too large",
}

# What a Numerai model's MLmodel metadata records as its output contract.
NUMERAI_OUTPUT_CONTRACT: dict[str, Any] = {
    "type": "pandas.DataFrame",
    "columns": [PREDICTION_COLUMN],
    "dtype": "float",
    "index": "same as live_features (id)",
    "range": [0.0, 1.0],
    "nan": False,
    "constant": False,
}


@dataclass(frozen=True)
class CheckFailure:
    """One failed check: its name (one of CHECKS, the reason suffix) and what was wrong."""

    check: str
    message: str

    @property
    def reason(self) -> str:
        return f"invalid_output:{self.check}"

    def to_dict(self) -> dict:
        return asdict(self)


def _returned_type(out: Any) -> CheckFailure | None:
    """None or not exactly a DataFrame (Numerai's runner compares the type, not isinstance)."""
    if out is None:
        return CheckFailure("none", "predict returned None")
    if type(out) is not pd.DataFrame:
        return CheckFailure("type", f"predict returned {type(out).__module__}.{type(out).__qualname__}, "
                                    "not a pandas.DataFrame")
    return None


def check_returned(out: Any, profile: str = "numerai") -> list[CheckFailure]:
    """Numerai runner's checks on the object predict returned: None, not exactly a DataFrame, 0 rows,
    no columns, any NaN, the first column outside [0, 1]. Profile 'forecast': only None and type."""
    failure = _returned_type(out)
    if failure is not None:
        return [failure]
    if profile == "forecast":
        return []
    if len(out) == 0:
        return [CheckFailure("empty", "predict returned 0 rows")]
    if out.shape[1] == 0:
        return [CheckFailure("columns", "predict returned a DataFrame with no columns")]
    failures = []
    if bool(out.isna().any().any()):
        failures.append(CheckFailure("nan", f"predictions contain {int(out.isna().sum().sum())} NaN value(s)"))
    first = pd.to_numeric(out.iloc[:, 0], errors="coerce")
    bad = ~((first >= 0) & (first <= 1))
    if bool(bad.any()) and not failures:
        sample = out.iloc[:, 0][bad].head(3).tolist()
        failures.append(CheckFailure("range", f"{int(bad.sum())} value(s) of the first column outside [0, 1], "
                                              f"e.g. {sample}"))
    return failures


def check_predictions(predictions: Any, live_features: pd.DataFrame) -> list[CheckFailure]:
    """The whole contract on what predict returned for `live_features`: [] when it holds, else the
    first failure (in this order: none, type, empty, columns, dtype, index, nan, range, constant)."""
    failure = _returned_type(predictions)
    if failure is not None:
        return [failure]
    if len(predictions) == 0:
        return [CheckFailure("empty", "predict returned 0 rows")]
    if list(predictions.columns) != [PREDICTION_COLUMN]:
        return [CheckFailure("columns", f"expected exactly one column 'prediction', got {list(predictions.columns)}")]
    column = predictions[PREDICTION_COLUMN]
    if not pd.api.types.is_float_dtype(column.dtype):
        return [CheckFailure("dtype", f"column 'prediction' must be float, got {column.dtype}")]
    if not predictions.index.equals(live_features.index):
        missing = live_features.index.difference(predictions.index)
        return [CheckFailure("index", f"the index must equal live_features' index ({len(live_features)} ids); got "
                                      f"{len(predictions)} rows, {len(missing)} live id(s) missing, "
                                      f"{int(predictions.index.duplicated().sum())} duplicated")]
    values = column.to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        return [CheckFailure("nan", f"{int(np.isnan(values).sum())} prediction(s) are NaN")]
    if values.min() < 0 or values.max() > 1:
        return [CheckFailure("range", f"predictions must lie in [0, 1], got [{values.min():g}, {values.max():g}]")]
    if values.std() == 0:
        return [CheckFailure("constant", f"all predictions equal {values[0]:g}")]
    return []


def check_submission(frame: pd.DataFrame, live_ids: pd.Index) -> list[CheckFailure]:
    """Numerai's submission checks on the written CSV (as plain columns): columns `id,prediction`,
    every live id once and nothing else, numbers in [0, 1], std > 0. [] when it would be accepted."""
    columns = [str(c) for c in frame.columns]
    if columns != SUBMISSION_COLUMNS:
        return [CheckFailure("columns", f"CSV columns are {columns}, expected exactly {SUBMISSION_COLUMNS}")]
    failures = []
    ids = frame["id"].astype(str)
    expected = pd.Index(live_ids.astype(str))
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        failures.append(CheckFailure("ids_duplicated", f"{len(duplicated)} id(s) appear more than once, "
                                                       f"e.g. {list(duplicated[:3])}"))
    missing = expected.difference(pd.Index(ids))
    if len(missing):
        failures.append(CheckFailure("ids_missing", f"{len(missing)} live id(s) have no prediction, "
                                                    f"e.g. {list(missing[:3])}"))
    unknown = pd.Index(ids.unique()).difference(expected)
    if len(unknown):
        failures.append(CheckFailure("ids_unknown", f"{len(unknown)} id(s) are not in the live data, "
                                                    f"e.g. {list(unknown[:3])}"))
    values = pd.to_numeric(frame[PREDICTION_COLUMN], errors="coerce")
    if values.isna().any():
        failures.append(CheckFailure("nan", f"{int(values.isna().sum())} prediction(s) are empty or not numbers"))
    out_of_range = (values < 0) | (values > 1)
    if out_of_range.any():
        failures.append(CheckFailure("range", f"{int(out_of_range.sum())} prediction(s) outside [0, 1], "
                                              f"e.g. {values[out_of_range].head(3).tolist()}"))
    if len(values.dropna()) and not float(values.std(ddof=0)) > 0:
        failures.append(CheckFailure("constant", f"predictions are constant ({values.iloc[0]!r}); std must be > 0"))
    return failures


def requested_horizon(request: pd.DataFrame | None) -> int | None:
    """Periods a forecast request asks for: its `steps` value, else one per row (None: unknown)."""
    if request is None or len(request) == 0:
        return None
    if "steps" in request.columns:
        value = pd.to_numeric(request["steps"], errors="coerce").iloc[0]
        return int(value) if pd.notna(value) else None
    return int(len(request))


def check_forecast(frame: pd.DataFrame, contract: dict, request: pd.DataFrame | None = None) -> list[CheckFailure]:
    """A forecast model's written output against its declared contract.

    `contract` keys (all optional): `columns` (list, order-free), `horizon` (rows, used when the
    request is unknown), `max_horizon`, `finite` (default True). With the `request` the model was
    called on, the rows must match the periods it asked for. The CSV's first column is the
    written index.
    """
    body = frame.iloc[:, 1:] if frame.shape[1] > 1 else frame
    if len(body) == 0:
        return [CheckFailure("empty", "the forecast has 0 rows")]
    failures = []
    expected = contract.get("columns")
    if expected is not None and sorted(map(str, body.columns)) != sorted(map(str, expected)):
        failures.append(CheckFailure("columns", f"forecast columns are {list(map(str, body.columns))}, "
                                                f"the contract says {list(expected)}"))
    horizon = requested_horizon(request)
    if horizon is None and contract.get("horizon") is not None:
        horizon = int(contract["horizon"])
    if horizon is not None and len(body) != horizon:
        failures.append(CheckFailure("horizon", f"forecast has {len(body)} row(s) but {horizon} period(s) "
                                                "were requested"))
    max_horizon = contract.get("max_horizon")
    if max_horizon is not None and len(body) > int(max_horizon):
        failures.append(CheckFailure("horizon", f"forecast has {len(body)} row(s), more than the contract's "
                                                f"max_horizon {int(max_horizon)}"))
    if contract.get("finite", True):
        values = body.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            failures.append(CheckFailure("finite", f"{int(bad.sum())} forecast value(s) are NaN, infinite or "
                                                   "not numbers"))
    return failures
