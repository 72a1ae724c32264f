"""Baseline: ridge regression in numpy on a feature set (pure maths: no MLflow, no click).

`train_baseline(train, features, target, alpha)` fits the ridge and returns a `predict` closure
that Numerai can run: it selects its own features by name (column order does not matter), and
returns the rank of the linear score in (0, 1] as a one-column `prediction` DataFrame. A NaN
feature (real Numerai data has some) counts as the middle bin (`conventions.MIDDLE_BIN`), in
training and in predict, as in the era cache.

The modules: `ridge` (the fit), `predict` (the closure), `train` (`train_baseline`). Every public
name is re-exported here.
"""

from mlflow_numerai.families.baseline.predict import make_predict
from mlflow_numerai.families.baseline.ridge import CHUNK_ROWS, RidgeFit, fit_ridge, gram_statistics, ridge_scores
from mlflow_numerai.families.baseline.train import train_baseline

__all__ = ["CHUNK_ROWS", "RidgeFit", "fit_ridge", "gram_statistics", "make_predict", "ridge_scores", "train_baseline"]
