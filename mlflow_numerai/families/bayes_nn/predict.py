"""The Numerai predict closure: the K-sample ensemble mean, in numpy only.

`make_predict` stores K posterior samples as numpy arrays; the closure needs neither Pyro nor
torch to load or run (`numpy_forward` is the batched forward pass), ranks the ensemble mean to
(0, 1] and, through `predict.with_params(..., return_std=True)`, adds the predictive std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from mlflow_numerai.conventions import MIDDLE_BIN
from mlflow_numerai.families.bayes_nn.posterior import FLOAT_BYTES, PosteriorSamples

PREDICT_BUDGET_BYTES = 256 * 2**20


def numpy_forward(x: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray]) -> np.ndarray:
    """Predictions (n, K) of K stored weight sets on rows `x` (n, F), in numpy."""
    k, n_in, width = weights[0].shape
    n = x.shape[0]
    h = x @ weights[0].transpose(1, 0, 2).reshape(n_in, k * width) + biases[0].reshape(1, k * width)
    if len(weights) == 1:
        return h
    h = np.maximum(h, 0.0, out=h).reshape(n, k, width).transpose(1, 0, 2)
    last = len(weights) - 1
    for i in range(1, last + 1):
        h = np.matmul(h, weights[i]) + biases[i][:, None, :]
        if i < last:
            np.maximum(h, 0.0, out=h)
    return h[:, :, 0].T


def make_predict(
    features: Sequence[str],
    samples: PosteriorSamples,
    *,
    k: int = 100,
    budget_bytes: int = PREDICT_BUDGET_BYTES,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The Numerai `predict(live_features)`: the ensemble mean of the first `k` posterior samples,
    ranked to (0, 1]. Stored as numpy arrays; runs with numpy and pandas only.

    `predict.with_params(live_features, return_std=True)` adds `prediction_std` (the predictive
    standard deviation over the K samples, in target units) next to the same `prediction`."""
    if k < 1:
        raise ValueError(f"k (posterior samples kept in the model) must be >= 1, got {k}")
    features = list(features)
    if len(features) != samples.widths[0]:
        raise ValueError(f"{len(features)} feature names for a net with {samples.widths[0]} inputs")
    weights, biases = samples.head(k).numpy()
    n_kept = weights[0].shape[0]
    per_row = FLOAT_BYTES * n_kept * (2 * max(w.shape[2] for w in weights) + 2)
    rows_per_block = max(1, budget_bytes // per_row)
    fill = float(MIDDLE_BIN)  # what a NaN feature counts as

    def predict_with_options(live_features: pd.DataFrame, *, return_std: bool = False) -> pd.DataFrame:
        missing = [c for c in features if c not in live_features.columns]
        if missing:
            raise KeyError(f"live_features lacks feature column(s) {missing[:10]}")
        x = live_features[features].to_numpy(dtype=np.float32, na_value=fill) / 4.0 - 0.5
        mean = np.empty(len(x), dtype=np.float64)
        std = np.empty(len(x), dtype=np.float64)
        for a in range(0, len(x), rows_per_block):
            pred = numpy_forward(x[a : a + rows_per_block], weights, biases).astype(np.float64)
            mean[a : a + len(pred)] = pred.mean(axis=1)
            std[a : a + len(pred)] = pred.std(axis=1)
        out = pd.DataFrame(
            {"prediction": pd.Series(mean, index=live_features.index).rank(pct=True).to_numpy()},
            index=live_features.index,
        )
        if return_std:
            out["prediction_std"] = std
        return out

    def predict(live_features: pd.DataFrame) -> pd.DataFrame:
        return predict_with_options(live_features)

    predict.with_params = predict_with_options
    predict.features = features
    predict.n_samples = n_kept
    return predict
