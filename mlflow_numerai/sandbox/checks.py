"""Checks on a model's written output, done in the parent on the CSV the child wrote.

The checks themselves, and their names, are the output contract in
`mlflow_numerai.packaging.contract` (re-exported here): the child already applied Numerai
runner's checks to the returned object (`check_returned`: None, exact `pd.DataFrame`, 0 rows, NaN,
first column in [0, 1]); the parent applies the submission checks Numerai publishes
(`check_submission`: columns `id,prediction`, every live id once and nothing else, values in
[0, 1], std > 0) and, for the `forecast` profile, a model's own declared output contract
(`check_forecast`). Each failure names its check; the reason code is `invalid_output:<check>`.
This module adds reading the CSV and the summary of a prediction column for the report.
"""

from __future__ import annotations

import math

import pandas as pd

from mlflow_numerai.packaging.contract import (
    CHECKS,
    SUBMISSION_COLUMNS,
    CheckFailure,
    check_forecast,
    check_returned,
    check_submission,
    requested_horizon,
)

__all__ = [
    "CHECKS", "SUBMISSION_COLUMNS", "CheckFailure", "check_forecast", "check_returned", "check_submission",
    "read_output_csv", "requested_horizon", "summary_stats",
]


def read_output_csv(path: str) -> pd.DataFrame:
    """The written CSV as plain columns (ids as strings, nothing parsed into an index)."""
    return pd.read_csv(path, dtype={0: str}, keep_default_na=True)


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
