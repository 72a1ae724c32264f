"""Runs of the package's families as DataFrames: the runs table, metric columns, labels, studies.

Owns the generic view of runs: every active run tagged with a family (`runs_table`), the metric
columns of a selection, a short label per run, the trials of an Optuna study, and the command that
creates what a page needs when nothing is logged yet.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from mlflow_numerai.conventions import FAMILY_TAG, STUDY_TAG, STUDY_TRIAL_TAG
from mlflow_numerai.dashboard.queries.store import get_client

FAMILIES = ("baseline", "keras_stream", "bayes_nn", "bnn_study", "varmax", "ensemble")

# The command that creates what a page needs, shown when there is nothing to show yet.
CREATE_COMMANDS = {
    "any": "mlflow-numerai train baseline",
    "registry": "mlflow-numerai train baseline && mlflow-numerai validate models:/<name>/1",
    "bayes_nn": "mlflow-numerai train bnn-study",
    "keras_stream": "mlflow-numerai train keras-stream",
    "varmax": "mlflow-numerai train varmax",
    "ensemble": "mlflow-numerai ensemble numerai-ensemble --member models:/<a>/1 --member models:/<b>/1",
}

RUN_COLUMNS = [
    "run_id",
    "run_name",
    "experiment_id",
    "experiment",
    "family",
    "status",
    "start_time",
    "parent_run_id",
]

# ---------------------------------------------------------------------------------------------
# Runs


def _run_row(run, experiments: dict[str, str]) -> dict:
    info, data = run.info, run.data
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name or data.tags.get("mlflow.runName") or info.run_id[:8],
        "experiment_id": info.experiment_id,
        "experiment": experiments.get(info.experiment_id, info.experiment_id),
        "family": data.tags.get(FAMILY_TAG),
        "status": info.status,
        "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True) if info.start_time else pd.NaT,
        "parent_run_id": data.tags.get("mlflow.parentRunId"),
    }
    row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
    row.update({f"params.{k}": v for k, v in data.params.items()})
    row.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
    return row


def runs_table(tracking_uri: str, families: Iterable[str] | None = None, max_runs: int = 5000) -> pd.DataFrame:
    """Every active run tagged with a `numerai.family` (optionally only `families`), newest first.

    Columns: RUN_COLUMNS, then `metrics.<key>` (latest value), `params.<key>`, `tags.<key>`.
    """
    client = get_client(tracking_uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    runs, token = [], None
    wanted = None if families is None else list(families)
    if wanted is not None:
        unknown = sorted(set(wanted) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    while experiments and len(runs) < max_runs:
        page = client.search_runs(
            list(experiments),
            filter_string=f"tags.`{FAMILY_TAG}` != ''",
            max_results=min(1000, max_runs - len(runs)),
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows = [_run_row(r, experiments) for r in runs]
    df = pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)
    if wanted is not None and not df.empty:
        df = df[df["family"].isin(wanted)]
    return df.reset_index(drop=True)


def metric_columns(runs: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """`runs` reduced to run_id, run_name, family and the given metrics (NaN where not logged)."""
    out = runs[["run_id", "run_name", "family"]].copy()
    for name in names:
        col = f"metrics.{name}"
        out[name] = runs[col].astype(float) if col in runs else np.nan
    return out


def run_label(runs: pd.DataFrame) -> pd.Series:
    """A short unique label per run: `<run_name> (<first 6 of run_id>)`."""
    return runs["run_name"].astype(str) + " (" + runs["run_id"].str[:6] + ")"


# ---------------------------------------------------------------------------------------------
# Studies (`mlflow-numerai study`): trial runs tagged `numerai.study`, params `trial.<name>`


def study_trials(runs: pd.DataFrame, objective: str = "numerai_corr_mean") -> pd.DataFrame:
    """One row per trial run of a study: study, trial, run_id, the trial's parameters (columns
    without the `trial.` prefix) and `objective`. Empty when no study was run."""
    study_col, trial_col = f"tags.{STUDY_TAG}", f"tags.{STUDY_TRIAL_TAG}"
    if study_col not in runs or trial_col not in runs:
        return pd.DataFrame(columns=["study", "trial", "run_id", "objective"])
    sel = runs[runs[trial_col].notna()]
    params = [c for c in sel.columns if c.startswith("params.trial.")]
    out = pd.DataFrame({"study": sel[study_col], "trial": pd.to_numeric(sel[trial_col]), "run_id": sel["run_id"]})
    for col in params:
        values = sel[col]
        numeric = pd.to_numeric(values, errors="coerce")
        out[col.removeprefix("params.trial.")] = numeric if numeric.notna().all() else values
    metric = f"metrics.{objective}"
    out["objective"] = sel[metric] if metric in sel else float("nan")
    return out.sort_values(["study", "trial"]).reset_index(drop=True)
