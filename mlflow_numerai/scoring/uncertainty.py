"""Metrics of a model's uncertainty (the Bayesian families): burn AUC and JS divergence.

``burn_auc`` / ``burn_roc_curve`` say how well a per-era uncertainty score flags the eras whose
corr is negative ("burn" eras); ``js_divergence_normal`` compares two normal predictive
distributions. Not part of Numerai's own scoring.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from mlflow_numerai.scoring.checks import ScoringError, _check_unique_index, _examples


def _align_era_series(era_scores: pd.Series, era_corr: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Scores and burn labels (corr < 0) of the eras both series have, NaN pairs dropped."""
    for name, s in (("era_scores", era_scores), ("era_corr", era_corr)):
        if not isinstance(s, pd.Series):
            raise ScoringError(f"{name} must be a pandas Series indexed by era, got {type(s).__name__}")
        _check_unique_index(s, name)
    if not era_scores.index.sort_values().equals(era_corr.index.sort_values()):
        only = era_scores.index.symmetric_difference(era_corr.index)
        raise ScoringError(f"era_scores and era_corr cover different eras, e.g. {_examples(only)}")
    frame = pd.DataFrame({"score": era_scores, "corr": era_corr.reindex(era_scores.index)}).dropna()
    return frame["score"].to_numpy(dtype=float), (frame["corr"] < 0).to_numpy()


def burn_auc(era_scores: pd.Series, era_corr: pd.Series) -> float:
    """ROC AUC of ``era_scores`` as a detector of burn eras (eras whose corr is < 0).

    Computed as the Mann-Whitney statistic (ties count one half). NaN (with a warning) when
    every era burns or none does: an AUC needs both classes."""
    scores, burn = _align_era_series(era_scores, era_corr)
    n_pos, n_neg = int(burn.sum()), int((~burn).sum())
    if n_pos == 0 or n_neg == 0:
        warnings.warn(
            f"burn_auc is NaN: {n_pos} burn and {n_neg} non-burn eras; an AUC needs both",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[burn].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def burn_roc_curve(era_scores: pd.Series, era_corr: pd.Series) -> pd.DataFrame:
    """ROC curve of ``era_scores`` for burn eras: columns fpr, tpr, threshold (a higher score
    flags more eras), starting at (0, 0)."""
    scores, burn = _align_era_series(era_scores, era_corr)
    n_pos, n_neg = int(burn.sum()), int((~burn).sum())
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], burn[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(len(tp) + 1, np.nan)
        fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(len(fp) + 1, np.nan)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.r_[np.inf, s[last_of_tie]]})


# --------------------------------------------------------------------------------------------
# Jensen-Shannon divergence between two normals
# --------------------------------------------------------------------------------------------


def _check_normal(mu: float, sd: float, name: str) -> None:
    if not np.isfinite(mu):
        raise ScoringError(f"mu{name} must be finite, got {mu}")
    if not (np.isfinite(sd) and sd > 0):
        raise ScoringError(f"sd{name} must be a positive finite number, got {sd}")


def js_divergence_normal(
    mu1: float, sd1: float, mu2: float, sd2: float, *, n_grid: int = 201, base: float = np.e
) -> float:
    """Jensen-Shannon divergence between N(mu1, sd1^2) and N(mu2, sd2^2).

    JS = KL(P || M) / 2 + KL(Q || M) / 2 with M the equal mixture. It has no closed form for
    normals, so it is integrated numerically: composite 8-point Gauss-Legendre quadrature on the
    cells of a grid made of ``n_grid`` points spanning +-12 standard deviations around each mean
    (the union of both), which resolves both densities even when one is much narrower; it agrees
    with adaptive quadrature to about 1e-15. Natural log by default (0 .. ln 2); ``base=2``
    gives bits (0 .. 1)."""
    _check_normal(mu1, sd1, "1")
    _check_normal(mu2, sd2, "2")
    if n_grid < 11:
        raise ScoringError(f"n_grid must be at least 11, got {n_grid}")
    edges = np.unique(
        np.concatenate(
            [np.linspace(mu1 - 12 * sd1, mu1 + 12 * sd1, n_grid), np.linspace(mu2 - 12 * sd2, mu2 + 12 * sd2, n_grid)]
        )
    )
    nodes, weights = np.polynomial.legendre.leggauss(8)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    x = mid[:, None] + half[:, None] * nodes
    log_p = norm.logpdf(x, mu1, sd1)
    log_q = norm.logpdf(x, mu2, sd2)
    log_m = np.logaddexp(log_p, log_q) - np.log(2.0)
    integrand = 0.5 * np.exp(log_p) * (log_p - log_m) + 0.5 * np.exp(log_q) * (log_q - log_m)
    js = float(np.sum(half[:, None] * weights * integrand)) / np.log(base)
    return float(min(max(js, 0.0), np.log(2.0) / np.log(base)))
