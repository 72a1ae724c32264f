"""Baseline: ridge regression in numpy on a feature set (pure maths, no MLflow).

`train_baseline(train, features, target, alpha)` fits the ridge and returns a `predict` closure
that Numerai can run: it selects its own features by name (column order does not matter), and
returns the rank of the linear score in (0, 1] as a one-column `prediction` DataFrame. A NaN
feature (real Numerai data has some) counts as the middle bin 2, in training and in predict,
as in the era cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlflow_numerai.data.cache import MIDDLE_BIN  # what a NaN feature counts as

CHUNK_ROWS = 100_000  # rows per block when accumulating X'X: bounded memory on any data size


@dataclass(frozen=True)
class RidgeFit:
    """Coefficients of a ridge fit on (x - mean) with an intercept."""

    features: list[str]
    coef: np.ndarray
    intercept: float
    x_mean: np.ndarray = field(repr=False)


def gram_statistics(x: np.ndarray, y: np.ndarray, chunk_rows: int = CHUNK_ROWS):
    """(n, sum x, sum y, X'X, X'y) in float64, accumulated over row blocks."""
    n_features = x.shape[1]
    xtx = np.zeros((n_features, n_features))
    xty = np.zeros(n_features)
    sx = np.zeros(n_features)
    sy = 0.0
    for start in range(0, len(x), chunk_rows):
        xb = x[start : start + chunk_rows].astype(np.float64)
        yb = y[start : start + chunk_rows].astype(np.float64)
        xtx += xb.T @ xb
        xty += xb.T @ yb
        sx += xb.sum(axis=0)
        sy += yb.sum()
    return len(x), sx, sy, xtx, xty


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float, features: list[str]) -> RidgeFit:
    """Ridge regression of y on x with an unpenalised intercept; `alpha` scales with the rows."""
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be 2-D with one row per target value, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"need at least 2 training rows, got {len(x)}")
    if np.isnan(y).any():
        raise ValueError(f"the target has {int(np.isnan(y).sum())} NaN value(s); drop those rows first")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    n, sx, sy, xtx, xty = gram_statistics(x, y)
    x_mean, y_mean = sx / n, sy / n
    centered_xtx = xtx - n * np.outer(x_mean, x_mean)
    centered_xty = xty - n * x_mean * y_mean
    penalty = alpha * n * np.eye(len(features))
    coef = np.linalg.solve(centered_xtx + penalty + 1e-9 * np.eye(len(features)), centered_xty)
    return RidgeFit(list(features), coef, float(y_mean - x_mean @ coef), x_mean)


def ridge_scores(fit: RidgeFit, x: np.ndarray) -> np.ndarray:
    """The linear scores x @ coef + intercept."""
    return x.astype(np.float64) @ fit.coef + fit.intercept


def make_predict(fit: RidgeFit) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A Numerai `predict(live_features)` for `fit`: features by name, ranks in (0, 1]."""
    # Capture plain lists/arrays only: the pickle stays small and needs nothing but numpy/pandas.
    features, coef, intercept = list(fit.features), np.asarray(fit.coef, dtype=np.float64), fit.intercept
    fill = float(MIDDLE_BIN)

    def predict(live_features: pd.DataFrame) -> pd.DataFrame:
        missing = [f for f in features if f not in live_features.columns]
        if missing:
            raise KeyError(f"live_features lacks {len(missing)} model feature(s), e.g. {missing[:5]}")
        x = live_features[features].to_numpy(dtype=np.float64, na_value=fill)
        scores = pd.Series(x @ coef + intercept, index=live_features.index)
        return scores.rank(pct=True).to_frame("prediction")

    return predict


def train_baseline(
    train: pd.DataFrame, features: list[str], target: str = "target", alpha: float = 1e-2
) -> tuple[Callable[[pd.DataFrame], pd.DataFrame], RidgeFit]:
    """Fit the ridge on `train` (rows with a NaN target dropped); returns (predict, fit)."""
    missing = [c for c in [*features, target] if c not in train.columns]
    if missing:
        raise KeyError(f"training data lacks column(s) {missing[:10]}")
    rows = train[target].notna().to_numpy()
    x = train.loc[rows, features].to_numpy()
    if x.dtype.kind == "f" and np.isnan(x).any():  # int8 columns cannot hold NaN: only floats
        x = np.where(np.isnan(x), MIDDLE_BIN, x)
    y = train.loc[rows, target].to_numpy(dtype=np.float64)
    fit = fit_ridge(x, y, alpha, features)
    return make_predict(fit), fit
