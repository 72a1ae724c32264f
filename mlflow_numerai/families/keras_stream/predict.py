"""The Numerai predict closure of the MLP: a pure-numpy forward pass of the extracted weights.

`make_predict` needs numpy and pandas only (no TensorFlow at upload time). It selects its
features by name, fills NaN with the middle bin (`conventions.MIDDLE_BIN`), scales to 0..1 as the
cache does and returns the rank of one output within the frame: values in (0, 1], one
`prediction` column, indexed like the input. Ranking changes no per-era correlation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from mlflow_numerai.conventions import MIDDLE_BIN
from mlflow_numerai.data.stream import SCALE
from mlflow_numerai.families.keras_stream.model import Layers

PREDICT_CHUNK_ROWS = 65536  # rows per forward-pass chunk in predict (bounded memory)


def numpy_forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    """The MLP's inference output (noise and dropout are identity): ReLU hidden, linear last."""
    h = np.asarray(x, dtype=np.float32)
    for i, (kernel, bias) in enumerate(layers):
        h = h @ kernel + bias
        if i < len(layers) - 1:
            np.maximum(h, 0.0, out=h)
    return h


def scaled_features(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Features by name as float32 scaled to 0..1, NaN as the middle bin (as in the cache)."""
    # copy=True: pandas may hand back a read-only view (copy-on-write), scaled in place below
    x = frame[list(features)].to_numpy(dtype=np.float32, na_value=float(MIDDLE_BIN), copy=True)
    x *= SCALE
    return x


def make_predict(layers: Layers, features: Sequence[str], output: int = 0) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A Numerai `predict(live_features)`: numpy forward pass, rank of output `output` in (0, 1]."""
    layers = [(np.ascontiguousarray(k, np.float32), np.ascontiguousarray(b, np.float32)) for k, b in layers]
    features = list(features)

    def predict(live_features: pd.DataFrame) -> pd.DataFrame:
        missing = [f for f in features if f not in live_features.columns]
        if missing:
            raise KeyError(f"live_features lacks {len(missing)} model feature(s), e.g. {missing[:5]}")
        scores = np.empty(len(live_features), dtype=np.float64)
        for start in range(0, len(live_features), PREDICT_CHUNK_ROWS):
            chunk = live_features.iloc[start : start + PREDICT_CHUNK_ROWS]
            scores[start : start + len(chunk)] = numpy_forward(layers, scaled_features(chunk, features))[:, output]
        ranked = pd.Series(scores, index=live_features.index).rank(pct=True)
        return ranked.to_frame("prediction")

    return predict

