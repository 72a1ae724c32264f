"""Training from the stream: `train_keras_stream` fits the MLP on a `BatchStream` over an era cache.

After each epoch it predicts the validation stream in era order (`predict_stream`) and scores the
per-era numerai_corr of the first target's output (`per_era_corr`). Training stops early when that
corr has not improved for `patience` epochs, and the best epoch's weights are restored before the
predict closure is made. Keras is imported where it is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlflow_numerai.data.cache import EraCache
from mlflow_numerai.data.stream import BatchStream, keras_dataset
from mlflow_numerai.families.keras_stream.config import KerasStreamConfig
from mlflow_numerai.families.keras_stream.model import Layers, build_mlp, extract_layers
from mlflow_numerai.families.keras_stream.predict import make_predict
from mlflow_numerai.scoring import per_era_numerai_corr

DEFAULT_CONFIG = KerasStreamConfig()  # frozen: one shared default is safe


@dataclass
class KerasStreamResult:
    """A trained streamed MLP: the predict closure, its weights and the per-epoch history."""

    predict: Callable[[pd.DataFrame], pd.DataFrame]
    layers: Layers
    features: list[str]
    targets: list[str]
    history: pd.DataFrame  # one row per epoch: loss, val_loss, val_corr_mean, learning_rate, ...
    best_epoch: int
    stopped_early: bool  # early stopping ended training before the epoch budget
    val_per_era: pd.Series  # best epoch's per-era validation corr (first target)
    model: object = field(repr=False, default=None)


def predict_stream(model, stream: BatchStream) -> np.ndarray:
    """Model outputs (rows x targets) for every row of an unshuffled stream, in cache order."""
    if stream.shuffle:
        raise ValueError("predict_stream needs an unshuffled stream (shuffle=False)")
    out = np.empty((stream.n_rows, model.outputs[0].shape[-1]), dtype=np.float32)
    pos = 0
    with stream.epoch(0) as batches:
        for x, _ in batches:
            out[pos : pos + len(x)] = np.asarray(model(x, training=False))
            pos += len(x)
    return out


def per_era_corr(predictions: np.ndarray, targets: np.ndarray, eras: np.ndarray) -> pd.Series:
    """Per-era numerai_corr of one prediction vector with one target (NaN for a constant era)."""
    ids = pd.RangeIndex(len(predictions))
    frame = pd.DataFrame({"prediction": np.asarray(predictions, dtype=np.float64)}, index=ids)
    scores = per_era_numerai_corr(
        frame, pd.Series(targets, index=ids), pd.Series(eras, index=ids), on_constant="nan"
    )
    return scores["prediction"]


def _summary(per_era: pd.Series) -> tuple[float, float]:
    mean, std = float(per_era.mean()), float(per_era.std())
    return mean, (mean / std if std > 0 else float("nan"))


# ---------------------------------------------------------------------------------------------
# training


def train_keras_stream(
    train: EraCache,
    validation: EraCache,
    config: KerasStreamConfig = DEFAULT_CONFIG,
    *,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    verbose: int = 0,
) -> KerasStreamResult:
    """Train the MLP on the streamed `train` cache, scoring `validation` after each epoch.

    `on_epoch_end(epoch, metrics)` gets loss, val_loss, val_corr_mean, val_corr_sharpe,
    learning_rate, rows_per_sec and epoch_seconds as each epoch ends (for logging). Training
    stops once val_corr_mean has not improved for `config.patience` epochs; the best epoch by
    val_corr_mean is restored before the predict closure is made."""
    import keras

    if train.features != validation.features:
        raise ValueError("train and validation caches hold different feature columns")
    if train.targets != validation.targets:
        raise ValueError("train and validation caches hold different target columns")
    train_stream = BatchStream(
        train, config.batch_size, shuffle=True, window=config.window, seed=config.seed,
        prefetch=config.prefetch, threads=config.threads,
    )
    val_stream = BatchStream(
        validation, config.batch_size, shuffle=False, prefetch=config.prefetch, threads=config.threads
    )
    val_targets = val_stream.targets()
    val_eras = val_stream.eras()
    target_mean = train_stream.targets().mean(axis=0, dtype=np.float64)
    model = build_mlp(train.n_features, len(train.targets), config, steps_per_epoch=train_stream.steps,
                      target_mean=target_mean)
    rows: list[dict[str, float]] = []
    best: dict = {"corr": -np.inf, "epoch": -1, "weights": None, "per_era": None}

    class EpochScores(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            outputs = predict_stream(self.model, val_stream)
            per_era = per_era_corr(outputs[:, 0], val_targets[:, 0], val_eras)
            corr_mean, corr_sharpe = _summary(per_era)
            metrics = {
                "loss": float(logs["loss"]),
                "val_loss": float(np.mean((outputs - val_targets) ** 2)),
                "val_corr_mean": corr_mean,
                "val_corr_sharpe": corr_sharpe,
                "learning_rate": float(np.asarray(self.model.optimizer.learning_rate)),
                "rows_per_sec": train.n_rows / seconds,
                "epoch_seconds": seconds,
            }
            rows.append({"epoch": epoch, **metrics})
            if np.isfinite(corr_mean) and corr_mean > best["corr"]:
                best.update(corr=corr_mean, epoch=epoch, weights=self.model.get_weights(), per_era=per_era)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)
            if config.patience and epoch - max(best["epoch"], 0) >= config.patience:
                self.model.stop_training = True

    dataset = keras_dataset(train_stream)
    try:
        # shuffle=False: the stream shuffles; Keras' shuffling would read batches out of order
        model.fit(dataset, epochs=config.epochs, shuffle=False, callbacks=[EpochScores()], verbose=verbose)
    finally:
        dataset.close()
    if best["weights"] is None:  # every epoch scored NaN (constant predictions): keep the last
        best.update(epoch=len(rows) - 1, per_era=per_era_corr(
            predict_stream(model, val_stream)[:, 0], val_targets[:, 0], val_eras))
    else:
        model.set_weights(best["weights"])
    layers = extract_layers(model)
    return KerasStreamResult(
        predict=make_predict(layers, train.features),
        layers=layers,
        features=list(train.features),
        targets=list(train.targets),
        history=pd.DataFrame(rows).set_index("epoch"),
        best_epoch=int(best["epoch"]),
        stopped_early=len(rows) < config.epochs,
        val_per_era=best["per_era"],
        model=model,
    )
