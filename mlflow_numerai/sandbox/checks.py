"""Checks on a model's written output, done in the parent on the CSV the child wrote.

The child already applied Numerai runner's checks to the returned object (None, exact
`pd.DataFrame`, 0 rows, NaN, first column in [0, 1]); these are the submission checks Numerai
publishes (columns `id,prediction`, every live id once and nothing else, values in [0, 1],
std > 0), and the `forecast` profile's checks of a model's own declared output contract.
Each failure names its check; the reason code is `invalid_output:<check>`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

SUBMISSION_COLUMNS = ["id", "prediction"]


@dataclass(frozen=True)
class CheckFailure:
    """One failed check: its name (the reason suffix) and what was wrong."""

    check: str
    message: str

    @property
    def reason(self) -> str:
        return f"invalid_output:{self.check}"

    def to_dict(self) -> dict:
        return asdict(self)


def read_output_csv(path: str) -> pd.DataFrame:
    """The written CSV as plain columns (ids as strings, nothing parsed into an index)."""
    return pd.read_csv(path, dtype={0: str}, keep_default_na=True)


def check_submission(frame: pd.DataFrame, live_ids: pd.Index) -> list[CheckFailure]:
    """Numerai's submission checks on a written CSV frame; [] when it would be accepted."""
    columns = [str(c) for c in frame.columns]
    if columns != SUBMISSION_COLUMNS:
        return [CheckFailure("columns", f"CSV columns are {columns}, expected exactly {SUBMISSION_COLUMNS}")]
    failures = []
    ids = frame["id"].astype(str)
    expected = pd.Index(live_ids.astype(str))
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        failures.append(CheckFailure("ids_duplicated", f"{len(duplicated)} id(s) appear more than once, e.g. {list(duplicated[:3])}"))
    missing = expected.difference(pd.Index(ids))
    if len(missing):
        failures.append(CheckFailure("ids_missing", f"{len(missing)} live id(s) have no prediction, e.g. {list(missing[:3])}"))
    unknown = pd.Index(ids.unique()).difference(expected)
    if len(unknown):
        failures.append(CheckFailure("ids_unknown", f"{len(unknown)} id(s) are not in the live data, e.g. {list(unknown[:3])}"))
    values = pd.to_numeric(frame["prediction"], errors="coerce")
    if values.isna().any():
        failures.append(CheckFailure("nan", f"{int(values.isna().sum())} prediction(s) are empty or not numbers"))
    out_of_range = (values < 0) | (values > 1)
    if out_of_range.any():
        failures.append(CheckFailure("range", f"{int(out_of_range.sum())} prediction(s) outside [0, 1], e.g. {values[out_of_range].head(3).tolist()}"))
    if len(values.dropna()) and not float(values.std(ddof=0)) > 0:
        failures.append(CheckFailure("std", f"predictions are constant ({values.iloc[0]!r}); std must be > 0"))
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
        failures.append(CheckFailure("columns", f"forecast columns are {list(map(str, body.columns))}, the contract says {list(expected)}"))
    horizon = requested_horizon(request)
    if horizon is None and contract.get("horizon") is not None:
        horizon = int(contract["horizon"])
    if horizon is not None and len(body) != horizon:
        failures.append(CheckFailure("horizon", f"forecast has {len(body)} row(s) but {horizon} period(s) were requested"))
    max_horizon = contract.get("max_horizon")
    if max_horizon is not None and len(body) > int(max_horizon):
        failures.append(CheckFailure("horizon", f"forecast has {len(body)} row(s), more than the contract's max_horizon {int(max_horizon)}"))
    if contract.get("finite", True):
        values = body.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            failures.append(CheckFailure("finite", f"{int(bad.sum())} forecast value(s) are NaN, infinite or not numbers"))
    return failures


def summary_stats(values: pd.Series) -> dict:
    """Small description of a prediction column for the report."""
    values = pd.to_numeric(values, errors="coerce")
    return {
        "rows": int(len(values)),
        "mean": float(values.mean()) if len(values) else math.nan,
        "std": float(values.std(ddof=0)) if len(values) else math.nan,
        "min": float(values.min()) if len(values) else math.nan,
        "max": float(values.max()) if len(values) else math.nan,
    }
