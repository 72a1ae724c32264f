"""Per-family readers: the artifacts and metrics each model family logs, as DataFrames.

Owns what is specific to one family: Bayesian-NN ensembles and uncertainty (`bnn/*.csv`, the
study's JS divergence), model ensembles (`ensemble/*.csv`), Keras training curves (metric
histories) and VARMAX forecasts (`varmax/*.csv`). A new family's dashboard reader goes here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from mlflow_numerai.dashboard.queries.runs import metric_columns
from mlflow_numerai.dashboard.queries.store import get_client, read_artifact_csv

BNN_METRICS = (
    "ensemble_corr_mean",
    "ensemble_sharpe",
    "member_corr_mean_mean",
    "member_corr_mean_std",
    "member_sharpe_mean",
    "member_sharpe_std",
    "burn_auc",
    "n_burn_eras",
)
BNN_PARAMS = ("prior", "hidden", "target_model", "n_samples")
KERAS_METRICS = ("loss", "val_loss", "val_corr_mean", "val_corr_sharpe", "rows_per_sec")

BNN_PER_ERA_ARTIFACT = "bnn/per_era.csv"
BNN_MEMBERS_ARTIFACT = "bnn/members.csv"
BNN_ROC_ARTIFACT = "bnn/roc.csv"
BNN_JS_ARTIFACT = "bnn/js_divergence.csv"
VARMAX_ORDER_ARTIFACT = "varmax/order_search.csv"
VARMAX_FORECAST_ARTIFACT = "varmax/test_forecast.csv"

# ---------------------------------------------------------------------------------------------
# Bayesian NN: ensembles and uncertainty


def _param_or_tag(runs: pd.DataFrame, param: str, tag: str) -> pd.Series:
    """A run param, else the same fact from a tag (the study tags its nested runs `bnn.*`)."""
    out = pd.Series([None] * len(runs), index=runs.index, dtype=object)
    for col in (f"params.{param}", f"tags.{tag}"):
        if col in runs:
            out = out.where(out.notna(), runs[col])
    return out


def bnn_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per Bayesian-NN model (a `bayes_nn` run or a model of a `bnn_study`, including the
    study's non-Bayesian baselines) with prior/architecture and ensemble-vs-member metrics.
    `ensemble_beats_members`: ensemble corr mean > the members' average (None without members)."""
    cols = ["run_id", "run_name", "family", "model", *BNN_PARAMS, *BNN_METRICS, "ensemble_beats_members",
            "parent_run_id"]
    if runs.empty or "metrics.ensemble_corr_mean" not in runs:
        return pd.DataFrame(columns=cols)
    sel = runs[runs["metrics.ensemble_corr_mean"].notna()]
    out = metric_columns(sel, BNN_METRICS)
    out["prior"] = _param_or_tag(sel, "prior", "bnn.prior")
    is_baseline = _param_or_tag(sel, "model", "bnn.model").astype(str).str.startswith("baseline")
    out.loc[is_baseline.to_numpy(), "prior"] = "baseline (MSE)"
    out["hidden"] = _param_or_tag(sel, "hidden", "bnn.hidden")
    out["target_model"] = _param_or_tag(sel, "target_model", "bnn.target_model")
    out["n_samples"] = _param_or_tag(sel, "n_samples", "bnn.n_samples")
    model = _param_or_tag(sel, "__none__", "bnn.model")
    out["model"] = model.where(model.notna(), sel["run_name"])
    beats = (out["ensemble_corr_mean"] > out["member_corr_mean_mean"]).astype(object)
    out["ensemble_beats_members"] = beats.where(out["member_corr_mean_mean"].notna(), None)
    out["parent_run_id"] = sel["parent_run_id"]
    return out[cols].reset_index(drop=True)


def bnn_members(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """Per posterior sample: corr_mean, sharpe (`bnn/members.csv`); empty when not logged."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_MEMBERS_ARTIFACT)
    if df is None or not {"corr_mean", "sharpe"} <= set(df.columns):
        return pd.DataFrame(columns=["corr_mean", "sharpe"])
    return df[["corr_mean", "sharpe"]]  # without the `sample` index column


def bnn_per_era(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """Per era: ensemble_corr, uncertainty, burn (bool) from `bnn/per_era.csv`."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_PER_ERA_ARTIFACT, dtype={"era": str})
    if df is None:
        return pd.DataFrame(columns=["era", "ensemble_corr", "uncertainty", "burn"])
    if "era" not in df:
        df = df.rename(columns={df.columns[0]: "era"})
    df["era"] = df["era"].astype(str)
    if "burn" in df:
        df["burn"] = df["burn"].astype(str).str.lower().isin(["1", "true", "1.0"])
    return df


def bnn_roc(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The burn-era ROC curve (fpr, tpr) of one run, from `bnn/roc.csv`."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_ROC_ARTIFACT)
    if df is None or not {"fpr", "tpr"} <= set(df.columns):
        return pd.DataFrame(columns=["fpr", "tpr"])
    return df[["fpr", "tpr"]]


def js_divergence(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The study's Jensen-Shannon divergence matrix (models as index and columns)."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_JS_ARTIFACT, index_col=0)
    return df if df is not None else pd.DataFrame()


def js_long(matrix: pd.DataFrame) -> pd.DataFrame:
    """The square JS matrix as rows (model_a, model_b, js) for a heatmap."""
    if matrix.empty:
        return pd.DataFrame(columns=["model_a", "model_b", "js"])
    m = matrix.copy()
    m.index.name, m.columns.name = "model_a", "model_b"
    return m.stack().rename("js").reset_index().astype({"js": float})


def study_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The top-level `bnn_study` runs (they hold the JS matrix; their models are nested runs of
    the same family), newest first."""
    if runs.empty:
        return runs
    studies = runs[runs["family"] == "bnn_study"]
    nested = studies["parent_run_id"].isin(studies["run_id"])
    return studies[~nested].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Model ensembles (`mlflow-numerai ensemble`): blends of registered models

ENSEMBLE_METRICS = ("numerai_corr_mean", "numerai_corr_sharpe", "best_member_corr_mean",
                    "blend_minus_best_member_corr", "mean_member_rank_corr")
ENSEMBLE_WEIGHTS_ARTIFACT = "ensemble/weights.csv"
ENSEMBLE_SIDE_BY_SIDE_ARTIFACT = "ensemble/side_by_side.csv"
ENSEMBLE_PER_ERA_ARTIFACT = "ensemble/per_era_corr.csv"
ENSEMBLE_MEMBER_CORR_ARTIFACT = "ensemble/member_corr.csv"


def ensemble_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per `ensemble` run: name, objective, members, blend and best-member corr."""
    cols = ["run_id", "run_name", "name", "objective", "n_members", *ENSEMBLE_METRICS]
    if runs.empty or "family" not in runs:
        return pd.DataFrame(columns=cols)
    sel = runs[runs["family"] == "ensemble"]
    out = metric_columns(sel, ENSEMBLE_METRICS)
    for param in ("name", "objective", "n_members"):
        out[param] = sel.get(f"params.{param}", None)
    return out[cols].reset_index(drop=True)


def ensemble_weights(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """member, uri, weight of an ensemble run (`ensemble/weights.csv`)."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_WEIGHTS_ARTIFACT)
    return df if df is not None else pd.DataFrame(columns=["member", "uri", "weight"])


def ensemble_side_by_side(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The evaluator's scores of each member and of the blend (index: model; last row the blend)."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_SIDE_BY_SIDE_ARTIFACT, index_col=0)
    return df if df is not None else pd.DataFrame()


def ensemble_per_era(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """Per era and model (members and the blend): corr and cumulative corr, long format."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_PER_ERA_ARTIFACT, dtype={"era": str})
    if df is None:
        return pd.DataFrame(columns=["era", "model", "corr", "cumulative"])
    df = df.set_index(df.columns[0])
    cumulative = df.fillna(0).cumsum()
    long = df.rename_axis("era").stack(future_stack=True).rename("corr").reset_index()
    long.columns = ["era", "model", "corr"]
    long["cumulative"] = cumulative.stack(future_stack=True).to_numpy()
    long["era"] = long["era"].astype(str)
    return long


def ensemble_member_corr(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The members' rank correlation matrix (mean over eras)."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_MEMBER_CORR_ARTIFACT, index_col=0)
    return df if df is not None else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# Keras training curves


def metric_history(tracking_uri: str, run_ids: Iterable[str], keys: Iterable[str] = KERAS_METRICS) -> pd.DataFrame:
    """Every logged value of `keys` for each run: run_id, key, step, value (long format)."""
    client = get_client(tracking_uri)
    rows = []
    for run_id in run_ids:
        for key in keys:
            for m in client.get_metric_history(run_id, key):
                rows.append({"run_id": run_id, "key": key, "step": int(m.step), "value": float(m.value)})
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def training_summary(history: pd.DataFrame) -> pd.DataFrame:
    """Per run: epochs, best val_corr_mean and its epoch, final loss, mean rows/s."""
    cols = ["run_id", "epochs", "best_epoch", "best_val_corr_mean", "final_loss", "final_val_loss", "mean_rows_per_sec"]
    if history.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for run_id, h in history.groupby("run_id", sort=False):
        by_key = {k: g.sort_values("step") for k, g in h.groupby("key")}
        corr = by_key.get("val_corr_mean")
        best = corr.loc[corr["value"].idxmax()] if corr is not None and not corr.empty else None
        rows.append(
            {
                "run_id": run_id,
                "epochs": int(h["step"].nunique()),
                "best_epoch": int(best["step"]) if best is not None else None,
                "best_val_corr_mean": float(best["value"]) if best is not None else np.nan,
                "final_loss": float(by_key["loss"]["value"].iloc[-1]) if "loss" in by_key else np.nan,
                "final_val_loss": float(by_key["val_loss"]["value"].iloc[-1]) if "val_loss" in by_key else np.nan,
                "mean_rows_per_sec": (
                    float(by_key["rows_per_sec"]["value"].mean()) if "rows_per_sec" in by_key else np.nan
                ),
            }
        )
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------
# VARMAX forecasts

FORECAST_KINDS = ("actual", "forecast", "lower", "upper")


def tidy_forecast(wide: pd.DataFrame) -> pd.DataFrame:
    """`varmax/test_forecast.csv` (period, then `<variable>_<kind>` columns with kind in actual,
    forecast, lower, upper; `<kind>_<variable>` also read) as rows: period, variable, kinds..."""
    if wide.empty:
        return pd.DataFrame(columns=["period", "variable", *FORECAST_KINDS])
    wide = wide.copy()
    period_col = "period" if "period" in wide else wide.columns[0]
    parts: dict[str, dict[str, str]] = {}
    for col in wide.columns:
        if col == period_col:
            continue
        for kind in FORECAST_KINDS:
            for sep in ("_", ".", ":"):
                if col.endswith(sep + kind):
                    parts.setdefault(col[: -len(kind) - 1], {})[kind] = col
                elif col.startswith(kind + sep):
                    parts.setdefault(col[len(kind) + 1 :], {})[kind] = col
    if not parts:
        raise ValueError(
            f"forecast table has no '<variable>_<kind>' columns (kinds {list(FORECAST_KINDS)}); "
            f"got {list(wide.columns)}"
        )
    frames = []
    for variable, kinds in parts.items():
        f = pd.DataFrame({"period": wide[period_col].astype(str), "variable": variable})
        for kind in FORECAST_KINDS:
            f[kind] = wide[kinds[kind]].astype(float) if kind in kinds else np.nan
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def varmax_forecast(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The winner's test-set forecast versus actual, tidy (see `tidy_forecast`)."""
    df = read_artifact_csv(tracking_uri, run_id, VARMAX_FORECAST_ARTIFACT)
    return tidy_forecast(df if df is not None else pd.DataFrame())


def varmax_order_search(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The order-search table (p, q, aic, bic, hqic, test_rmse, fit_seconds, converged)."""
    df = read_artifact_csv(tracking_uri, run_id, VARMAX_ORDER_ARTIFACT)
    cols = ["p", "q", "aic", "bic", "hqic", "test_rmse", "fit_seconds", "converged"]
    return df if df is not None else pd.DataFrame(columns=cols)


def forecast_coverage(forecast: pd.DataFrame) -> pd.DataFrame:
    """Per variable: RMSE of the forecast and the share of actuals inside [lower, upper]."""
    if forecast.empty:
        return pd.DataFrame(columns=["variable", "rmse", "coverage", "periods"])
    f = forecast.dropna(subset=["actual", "forecast"])
    g = f.assign(
        sq=(f["actual"] - f["forecast"]) ** 2,
        inside=(f["actual"] >= f["lower"]) & (f["actual"] <= f["upper"]),
    ).groupby("variable", sort=False)
    return pd.DataFrame(
        {"rmse": np.sqrt(g["sq"].mean()), "coverage": g["inside"].mean(), "periods": g.size()}
    ).reset_index()
