"""Comparing runs: per-era corr of any runs, era statistics, Numerai's diagnostics, metric tables.

Owns the views across families: per-era validation corr (the `numerai` evaluator's artifact, else
a Bayesian NN's own), statistics computed from it, the evaluator's per-era diagnostics and tiles,
and the side-by-side metric table of chosen runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from mlflow_numerai.dashboard.queries.families import BNN_METRICS, bnn_per_era
from mlflow_numerai.dashboard.queries.runs import metric_columns, run_label
from mlflow_numerai.dashboard.queries.store import read_artifact_csv
from mlflow_numerai.scoring import summaries

SUMMARY_METRICS = (
    "numerai_corr_mean",
    "numerai_corr_std",
    "numerai_corr_sharpe",
    "numerai_corr_max_drawdown",
    "mmc_mean",
    "max_feature_exposure",
)
PER_ERA_CORR_ARTIFACT = "numerai_eval/per_era_corr.csv"
PER_ERA_DIAGNOSTICS_ARTIFACT = "numerai_eval/per_era_diagnostics.csv"
# Numerai's diagnostics tiles: (label, metric logged by the `numerai` evaluator, digits)
DIAGNOSTIC_TILES = (
    ("CORR", "numerai_corr_mean", 4),
    ("MMC", "mmc_mean", 4),
    ("BMC", "bmc_mean", 4),
    ("CWMM", "cwmm_mean", 4),
    ("TB200", "numerai_corr_tb200_mean", 4),
    ("FNC", "fnc_mean", 4),
    ("Max exposure", "max_feature_exposure", 4),
    ("Churn", "churn_mean", 4),
    ("Payout est.", "payout_mean", 4),
    ("Sharpe", "numerai_corr_sharpe", 3),
    ("Smart Sharpe", "numerai_corr_smart_sharpe", 3),
    ("Max drawdown", "numerai_corr_max_drawdown", 4),
)
DIAGNOSTIC_CURVES = ("corr", "mmc", "bmc")
LOWER_IS_BETTER = {"max_feature_exposure", "churn_mean", "numerai_corr_max_drawdown"}

# ---------------------------------------------------------------------------------------------
# Compare: per-era corr of any runs


def per_era_corr(tracking_uri: str, run_ids: Iterable[str], target: str = "target") -> pd.DataFrame:
    """Per-era validation corr of each run, long: run_id, era, corr, cumulative_corr.

    Read from the `numerai` evaluator's `numerai_eval/per_era_corr.csv` (column `target`);
    Bayesian-NN runs without it fall back to `bnn/per_era.csv` (ensemble_corr).
    """
    frames = []
    for run_id in run_ids:
        df = read_artifact_csv(tracking_uri, run_id, PER_ERA_CORR_ARTIFACT, dtype={0: str})
        if df is not None:
            era_col = df.columns[0]
            col = target if target in df else (df.columns[1] if len(df.columns) > 1 else None)
            if col is None:
                continue
            f = pd.DataFrame({"era": df[era_col].astype(str), "corr": df[col].astype(float)})
        else:
            bnn = bnn_per_era(tracking_uri, run_id)
            if bnn.empty:
                continue
            f = pd.DataFrame({"era": bnn["era"].astype(str), "corr": bnn["ensemble_corr"].astype(float)})
        f = f.sort_values("era", kind="stable")
        f.insert(0, "run_id", run_id)
        f["cumulative_corr"] = f["corr"].cumsum()
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=["run_id", "era", "corr", "cumulative_corr"])
    return pd.concat(frames, ignore_index=True)


def per_era_diagnostics(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The evaluator's per-era diagnostics of a run (era, corr, mmc, bmc, ...); empty when the
    run has none."""
    df = read_artifact_csv(tracking_uri, run_id, PER_ERA_DIAGNOSTICS_ARTIFACT, dtype={0: str})
    if df is None or df.empty:
        return pd.DataFrame(columns=["era"])
    df = df.rename(columns={df.columns[0]: "era"})
    df["era"] = df["era"].astype(str)
    return df.sort_values("era", kind="stable").reset_index(drop=True)


def cumulative_diagnostics(per_era: dict[str, pd.DataFrame], scores: Iterable[str] = DIAGNOSTIC_CURVES) -> pd.DataFrame:
    """Long: version, era, score, value, cumulative (NaN eras count 0) for several versions."""
    frames = []
    for label, df in per_era.items():
        for score in scores:
            if score in df:
                values = df[score].astype(float)
                frames.append(pd.DataFrame({"version": label, "era": df["era"], "score": score.upper(),
                                            "value": values, "cumulative": values.fillna(0).cumsum()}))
    if not frames:
        return pd.DataFrame(columns=["version", "era", "score", "value", "cumulative"])
    return pd.concat(frames, ignore_index=True)


def diagnostic_tiles(metrics: dict[str, float]) -> list[tuple[str, float | None, int]]:
    """(label, value or None when not logged, digits) for each of Numerai's tiles."""
    return [(label, metrics.get(key), digits) for label, key, digits in DIAGNOSTIC_TILES]


def era_stats(per_era: pd.DataFrame) -> pd.DataFrame:
    """Per run, computed from its per-era corr: eras, mean, std, sharpe, max drawdown, % positive
    (the evaluator's definitions, `scoring.summaries`; an era without a score is skipped, and
    counted in `eras` only when it has one)."""
    cols = ["run_id", "eras", "corr_mean", "corr_std", "sharpe", "max_drawdown", "positive_eras"]
    if per_era.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for run_id, g in per_era.groupby("run_id", sort=False):
        c = g["corr"].astype(float).dropna()
        rows.append(
            {
                "run_id": run_id,
                "eras": len(c),
                "corr_mean": float(c.mean()),
                "corr_std": float(c.std()),
                "sharpe": float(summaries.sharpe(c)),
                "max_drawdown": float(summaries.max_drawdown(c)),
                "positive_eras": float((c > 0).mean()) if len(c) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def compare_table(runs: pd.DataFrame, run_ids: Iterable[str], metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Metrics of the chosen runs side by side: one row per metric, one column per run label.

    Without `metrics`, every metric logged by at least one of them (summary metrics first)."""
    ids = list(run_ids)
    sel = runs.set_index("run_id").loc[ids].reset_index()
    if metrics is None:
        logged = [c[len("metrics."):] for c in sel.columns if c.startswith("metrics.") and sel[c].notna().any()]
        first = [m for m in (*SUMMARY_METRICS, *BNN_METRICS) if m in logged]
        metrics = first + sorted(m for m in logged if m not in first)
    table = metric_columns(sel, list(metrics)).drop(columns=["run_id", "run_name", "family"])
    table.index = run_label(sel)
    return table.T
