"""The Numerai predict closure of a ridge fit: features by name, NaN as the middle bin, ranks in (0, 1].

The closure captures plain lists and arrays only: the pickle stays small and needs nothing but
numpy and pandas.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlflow_numerai.conventions import MIDDLE_BIN  # what a NaN feature counts as
from mlflow_numerai.families.baseline.ridge import RidgeFit


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
