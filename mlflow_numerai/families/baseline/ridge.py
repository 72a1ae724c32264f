"""Ridge regression in numpy: `fit_ridge` on Gram statistics accumulated in row blocks.

`gram_statistics` sums X'X and X'y block by block (bounded memory on any data size), `fit_ridge`
solves for the coefficients of a ridge on centred x with an unpenalised intercept (`RidgeFit`),
`ridge_scores` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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

