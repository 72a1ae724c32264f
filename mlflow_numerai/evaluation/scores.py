"""Numerai's per-era diagnostics of one prediction column on one evaluation frame.

`numerai_scores` computes everything the `numerai` evaluator logs (per-era corr per target, MMC,
BMC, CWMM, FNC, the top/bottom variants, churn, the payout estimate, max feature exposure) and the
metric names it logs them under, from predictions and data only: no MLflow here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pandas as pd

from mlflow_numerai import scoring
from mlflow_numerai.conventions import MIDDLE_BIN  # a NaN feature counts as that, as in the models
from mlflow_numerai.evaluation.config import EvalConfig

_LOGGED_SUMMARIES = {  # for targets other than the main one
    "numerai_corr": ("mean", "std", "sharpe", "max_drawdown"),
    "mmc": ("mean", "std", "sharpe"),
    "fnc": ("mean", "sharpe"),
}
# the main target: every summary of every diagnostic
_MAIN_SUMMARIES = ("mean", "std", "sharpe", "smart_sharpe", "max_drawdown", "positive_share")
_TB_SUMMARIES = ("mean", "sharpe")


@dataclass
class NumeraiScores:
    """Everything the evaluator logs, computed from predictions and data only."""

    metrics: dict[str, float]
    per_era_corr: pd.DataFrame  # eras x targets
    per_era_mmc: pd.DataFrame | None  # eras x targets
    summary: pd.DataFrame  # one row per (score, target)
    per_era: pd.DataFrame | None = None  # eras x diagnostics of the main target
    notes: list[str] = field(default_factory=list)


def _tb_name(name: str, tb: int) -> str:
    return f"{name}_tb{tb}"


def numerai_scores(
    predictions: pd.Series, frame: pd.DataFrame, cfg: EvalConfig, previous: pd.Series | None = None
) -> NumeraiScores:
    """Per-era diagnostics of `predictions` on `frame` and their summaries: corr (each target),
    MMC (meta model), BMC and corr with the benchmark, CWMM, FNC, the top/bottom variants, churn
    against `previous` (shared ids), the payout estimate and max feature exposure."""
    main = cfg.targets[0]
    eras = frame[cfg.era_col]
    preds = predictions.to_frame("prediction")
    kw = {"max_filtered_ratio": cfg.max_filtered_ratio}
    notes: list[str] = []
    corr, mmc, fnc = {}, {}, {}
    for target in cfg.targets:
        corr[target] = scoring.per_era_numerai_corr(preds, frame[target], eras, **kw)["prediction"]
        if cfg.meta_model is not None:
            mmc[target] = scoring.per_era_correlation_contribution(
                preds, cfg.meta_model, frame[target], eras, **kw
            )["prediction"]
        if cfg.feature_neutral and target == main:
            fnc[target] = scoring.per_era_feature_neutral_corr(
                preds, frame[cfg.feature_cols], frame[target], eras, nan_fill=MIDDLE_BIN, **kw
            )["prediction"]
    per_era_corr = pd.DataFrame(corr).rename_axis("era")
    per_era_mmc = pd.DataFrame(mmc).rename_axis("era") if mmc else None

    # the main target's diagnostics, one column each
    target = frame[main]
    diag: dict[str, pd.Series] = {"corr": corr[main]}
    if cfg.meta_model is not None:
        diag["mmc"] = mmc[main]
        diag["cwmm"] = scoring.per_era_corr_with(preds, cfg.meta_model, eras, **kw)["prediction"]
    if cfg.benchmark is not None:
        diag["bmc"] = scoring.per_era_bmc(preds, cfg.benchmark, target, eras, **kw)["prediction"]
        diag["corr_with_benchmark"] = scoring.per_era_corr_with(
            preds, cfg.benchmark, eras, name="benchmark", **kw
        )["prediction"]
    if fnc:
        diag["fnc"] = fnc[main]
    tb = cfg.top_bottom
    if tb is not None:
        sizes = target.notna().groupby(eras).sum()
        if (sizes >= 2 * tb).any():
            with warnings.catch_warnings():  # eras too small for top_bottom: NaN, counted in n_eras
                warnings.simplefilter("ignore", RuntimeWarning)
                diag[_tb_name("corr", tb)] = scoring.per_era_numerai_corr(
                    preds, target, eras, top_bottom=tb, **kw
                )["prediction"]
                if cfg.meta_model is not None:
                    diag[_tb_name("mmc", tb)] = scoring.per_era_correlation_contribution(
                        preds, cfg.meta_model, target, eras, top_bottom=tb, **kw
                    )["prediction"]
                if cfg.benchmark is not None:
                    diag[_tb_name("bmc", tb)] = scoring.per_era_bmc(
                        preds, cfg.benchmark, target, eras, top_bottom=tb, **kw
                    )["prediction"]
                if fnc:
                    diag[_tb_name("fnc", tb)] = scoring.per_era_feature_neutral_corr(
                        preds, frame[cfg.feature_cols], target, eras, nan_fill=MIDDLE_BIN, top_bottom=tb, **kw
                    )["prediction"]
        else:
            notes.append(f"top_bottom={tb} skipped: every era has fewer than {2 * tb} scored rows")
    metrics: dict[str, float] = {"n_eras": float(per_era_corr[main].notna().sum())}
    if previous is not None:
        churn, n_shared = scoring.per_era_churn(preds, previous, eras)
        diag["churn"] = churn["prediction"]
        metrics["churn_n_ids"] = float(n_shared)
        if tb is not None and churn["prediction"].notna().any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                churn_tb, _ = scoring.per_era_churn(preds, previous, eras, top_bottom=tb)
            if churn_tb["prediction"].notna().any():
                diag[_tb_name("churn", tb)] = churn_tb["prediction"]
    if "mmc" in diag:
        diag["payout"] = scoring.payout_estimate(diag["corr"], diag["mmc"], preset=cfg.payout_preset)
    per_era = pd.DataFrame(diag).rename_axis("era")

    rows = []
    for name, table in (("numerai_corr", per_era_corr), ("mmc", per_era_mmc)):
        if table is None:
            continue
        summary = scoring.score_summary(table)
        for t, row in summary.iterrows():
            rows.append({"score": name, "target": t, **row.to_dict()})
            if t != main:
                for key in _LOGGED_SUMMARIES[name]:
                    metrics[f"{name}_{key}_{t}"] = float(row[key])
    diag_summary = scoring.score_summary(per_era)
    for name, row in diag_summary.iterrows():
        metric = f"numerai_{name}" if name == "corr" or name.startswith("corr_tb") else name
        if name not in ("corr", "mmc"):
            rows.append({"score": metric, "target": main, **row.to_dict()})
        if name.startswith("churn"):
            metrics[f"{metric}_mean"] = float(row["mean"])
            continue
        keys = _TB_SUMMARIES if name.endswith(f"_tb{tb}") or name.startswith(("cwmm", "corr_with")) else _MAIN_SUMMARIES
        for key in keys:
            metrics[f"{metric}_{key}"] = float(row[key])
    if cfg.feature_cols:
        exposure = scoring.per_era_max_feature_exposure(
            preds, frame[cfg.feature_cols], eras, nan_fill=MIDDLE_BIN
        )["prediction"]
        metrics["max_feature_exposure"] = float(exposure.mean())
        per_era["max_feature_exposure"] = exposure
    return NumeraiScores(metrics, per_era_corr, per_era_mmc, pd.DataFrame(rows), per_era, notes)
