"""A Keras MLP trained from a streamed era-sharded cache (maths only: no MLflow, no click).

The network (`model`): optional GaussianNoise on the inputs, Dense(ReLU, He init) hidden layers
each followed by optional Dropout, a linear output per target that starts as the constant training
mean of the targets; MSE, Adam with a linear warm-up then cosine decay over the epoch budget, set
by `config.KerasStreamConfig`. Training (`fit`) reads batches from a `BatchStream` (features
scaled to 0..1), scores the validation stream per era after each epoch and stops early, restoring
the best epoch. The trained network becomes a Numerai `predict(live_features)` (`predict`) that
runs a pure-numpy forward pass of the extracted weights, so `predict.pkl` needs numpy and pandas
only. Every public name is re-exported here.
"""

from mlflow_numerai.families.keras_stream.config import LR_SCHEDULES, KerasStreamConfig
from mlflow_numerai.families.keras_stream.fit import (
    DEFAULT_CONFIG,
    KerasStreamResult,
    per_era_corr,
    predict_stream,
    train_keras_stream,
)
from mlflow_numerai.families.keras_stream.model import Layers, build_mlp, extract_layers, learning_rate_schedule
from mlflow_numerai.families.keras_stream.predict import (
    PREDICT_CHUNK_ROWS,
    make_predict,
    numpy_forward,
    scaled_features,
)

__all__ = [
    "DEFAULT_CONFIG", "LR_SCHEDULES", "PREDICT_CHUNK_ROWS", "KerasStreamConfig", "KerasStreamResult", "Layers",
    "build_mlp", "extract_layers", "learning_rate_schedule", "make_predict", "numpy_forward", "per_era_corr",
    "predict_stream", "scaled_features", "train_keras_stream",
]
