"""Summaries of per-era scores: sharpe, smart sharpe, max drawdown, positive share, payout.

Every function takes per-era scores (a Series, or a DataFrame eras x columns) and skips NaN eras;
``score_summary`` gathers them in one table per column. ``PAYOUT_PRESETS`` holds Numerai's payout
rules, each with the date and the page it was read from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlflow_numerai.scoring.checks import ScoringError


def sharpe(per_era: pd.Series | pd.DataFrame):
    """Mean over eras divided by the standard deviation (ddof=1), NaN eras skipped; NaN when
    the scores do not vary (a clipped payout can be constant)."""
    std = per_era.std()
    return per_era.mean() / (std.where(std > 0) if isinstance(std, pd.Series) else (std if std > 0 else np.nan))


def max_drawdown(per_era: pd.Series | pd.DataFrame):
    """Largest fall of the cumulative era score from its running peak, as a positive number
    (Numerai's ``(cumsum.expanding().max() - cumsum).max()``), NaN eras skipped."""

    def one(s: pd.Series) -> float:
        cum = s.dropna().cumsum()
        if cum.empty:
            return float("nan")
        return float((cum.cummax() - cum).max())

    if isinstance(per_era, pd.DataFrame):
        return per_era.apply(one)
    return one(per_era)


def autocorr_penalty(per_era: pd.Series) -> float:
    """``sqrt(1 + 2 sum_{i=1}^{n-1} (n - i) / n |rho|^i)`` with ``rho`` the lag-1 autocorrelation
    of the era scores (NaN eras dropped): how much the variance of a sum of AR(1) scores
    exceeds that of independent ones (the smart Sharpe of Numerai's forum and numerblox)."""
    x = per_era.dropna().to_numpy(dtype=np.float64)
    n = len(x)
    if n < 3:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.corrcoef(x[:-1], x[1:])[0, 1]
    if not np.isfinite(rho):
        return float("nan")
    i = np.arange(1, n)
    return float(np.sqrt(1.0 + 2.0 * np.sum((n - i) / n * np.abs(rho) ** i)))


def smart_sharpe(per_era: pd.Series | pd.DataFrame):
    """Sharpe (ddof=1) divided by :func:`autocorr_penalty`: autocorrelated eras score lower."""
    if isinstance(per_era, pd.DataFrame):
        return per_era.apply(smart_sharpe)
    return float(sharpe(per_era) / autocorr_penalty(per_era))


def positive_share(per_era: pd.Series | pd.DataFrame):
    """Share of the scored (non-NaN) eras whose score is above 0."""
    return (per_era > 0).where(per_era.notna()).mean()


@dataclass(frozen=True)
class PayoutPreset:
    """Numerai's payout rule ``clip(corr * CORR + mmc * MMC, -clip, clip)`` per era (times the
    stake and a payout factor, left out here). Numerai changes it: each preset says when and
    where it was read."""

    corr: float
    mmc: float
    clip: float
    source: str


PAYOUT_PRESETS: dict[str, PayoutPreset] = {
    # Forum, "MMC staking starts Jan 2, 2024" (announced 0.5 CORR + 3 MMC).
    "numerai_2024_01": PayoutPreset(0.5, 3.0, 0.05, "forum.numer.ai 'MMC staking starts Jan 2, 2024'"),
    # Staking docs (2025): 0.5 CORR + 2 MMC, clipped to +-5 % of the stake per round.
    "numerai_2025": PayoutPreset(
        0.5, 2.0, 0.05, "docs.numer.ai 'Staking' (payout = clip(0.5 CORR + 2 MMC, +-0.05)), 2025"
    ),
}
DEFAULT_PAYOUT_PRESET = "numerai_2025"


def payout_estimate(
    corr: pd.Series | pd.DataFrame,
    mmc: pd.Series | pd.DataFrame,
    *,
    preset: str | None = DEFAULT_PAYOUT_PRESET,
    w_corr: float | None = None,
    w_mmc: float | None = None,
    clip: float | None = None,
):
    """Per-era payout fraction ``clip(w_corr * corr + w_mmc * mmc, -clip, clip)``; the weights
    and the clip default to ``PAYOUT_PRESETS[preset]``. NaN where either score is NaN."""
    if preset is not None and preset not in PAYOUT_PRESETS:
        raise ScoringError(f"unknown payout preset {preset!r}; known: {sorted(PAYOUT_PRESETS)}")
    base = PAYOUT_PRESETS[preset] if preset is not None else None
    w_corr = w_corr if w_corr is not None else (base.corr if base else None)
    w_mmc = w_mmc if w_mmc is not None else (base.mmc if base else None)
    clip = clip if clip is not None else (base.clip if base else None)
    if w_corr is None or w_mmc is None or clip is None:
        raise ScoringError("payout_estimate needs w_corr, w_mmc and clip (or a preset)")
    if not clip > 0:
        raise ScoringError(f"clip must be positive, got {clip}")
    return (w_corr * corr + w_mmc * mmc).clip(-clip, clip)


def score_summary(per_era: pd.DataFrame) -> pd.DataFrame:
    """Per column: mean, std, sharpe, smart_sharpe, max_drawdown (additive), the share of
    positive eras and the number of scored eras."""
    per_era = per_era if isinstance(per_era, pd.DataFrame) else per_era.to_frame()
    return pd.DataFrame(
        {
            "mean": per_era.mean(),
            "std": per_era.std(),
            "sharpe": sharpe(per_era),
            "smart_sharpe": smart_sharpe(per_era),
            "max_drawdown": max_drawdown(per_era),
            "positive_share": positive_share(per_era),
            "n_eras": per_era.notna().sum(),
        }
    )
