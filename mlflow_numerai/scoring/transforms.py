"""numerai-tools' elementary transforms, in their readable pandas / numpy reference forms.

Each function is one named step of Numerai's metrics (tie-kept rank, gaussianize, signed power,
orthogonalize, neutralize), one column at a time; the metrics in this package compose them (the
fast kernels in ``_kernels`` compute the same values for many columns at once). Imports nothing of
the package.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm


def tie_kept_rank(df: pd.DataFrame) -> pd.DataFrame:
    """Percentile rank of each column, ties kept: ``(rank(average) - 0.5) / count``."""
    return df.apply(lambda s: (s.rank(method="average") - 0.5) / s.count())


def gaussianize(df: pd.DataFrame) -> pd.DataFrame:
    """The normal percent point function of each value (values are ranks in (0, 1))."""
    return pd.DataFrame(norm.ppf(df.to_numpy(dtype=float)), index=df.index, columns=df.columns)


def power(x, p: float = 1.5):
    """``x`` raised to ``p`` keeping its sign: ``sign(x) * |x| ** p``."""
    return np.sign(x) * np.abs(x) ** p


def rank_gauss_pow(df: pd.DataFrame, p: float = 1.5) -> pd.DataFrame:
    """Tie-kept rank, gaussianize, then signed power ``p`` of each column."""
    return power(gaussianize(tie_kept_rank(df)), p)


def orthogonalize(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The columns of ``v`` minus their projection on the vector ``u``."""
    return v - np.outer(u, (v.T @ u) / (u @ u))


def neutralize(values: np.ndarray, neutralizers: np.ndarray, proportion: float = 1.0) -> np.ndarray:
    """The columns of ``values`` minus ``proportion`` times their least-squares fit on
    ``neutralizers`` plus an intercept (pseudo-inverse with ``rcond=1e-6``, as numerai-tools)."""
    exposures = np.hstack([neutralizers, np.ones((len(neutralizers), 1))])
    fit = exposures @ (np.linalg.pinv(exposures, rcond=1e-6) @ values)
    return values - proportion * fit
