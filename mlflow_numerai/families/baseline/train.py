"""`train_baseline`: the ridge fitted on a training frame (NaN targets dropped), with its predict closure."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlflow_numerai.conventions import MIDDLE_BIN  # what a NaN feature counts as
from mlflow_numerai.families.baseline.predict import make_predict
from mlflow_numerai.families.baseline.ridge import RidgeFit, fit_ridge


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
