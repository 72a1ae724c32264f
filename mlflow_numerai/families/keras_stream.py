"""A Keras MLP trained from a streamed era-sharded cache (maths only, no MLflow).

The network: optional GaussianNoise on the inputs, Dense(ReLU, He init) hidden layers each
followed by optional Dropout, a linear output per target that starts as the constant training
mean of the targets (zero kernel, bias at the mean: else the first few hundred steps only fit
the bias and unlearn the random function of the initial weights); MSE, Adam with a linear
warm-up then cosine decay over the epoch budget. It reads batches from a `BatchStream`
(features scaled to 0..1) and, after each epoch, predicts the validation stream in era order and
scores the per-era numerai_corr of the first target's output. Training stops early when that
corr has not improved for `patience` epochs, and the best epoch's weights are restored.

The trained network becomes a Numerai `predict(live_features)` that runs a pure-numpy forward
pass of the extracted weights, so `predict.pkl` needs numpy and pandas only (no TensorFlow at
upload time). It selects its features by name, fills NaN with the middle bin 2, scales by 1/4 and
returns the rank of the first output within the frame: values in (0, 1], one `prediction`
column, indexed like the input. Ranking changes no per-era correlation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlflow_numerai.data.cache import EraCache
from mlflow_numerai.data.stream import SCALE, BatchStream

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

Layers = list[tuple[np.ndarray, np.ndarray]]  # (kernel, bias) per Dense layer, input to output
PREDICT_CHUNK_ROWS = 65536  # rows per forward-pass chunk in predict (bounded memory)


LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class KerasStreamConfig:
    """Hyper-parameters of the streamed MLP (the seed's 128-64-64 NN starter; budget, learning
    rate and schedule chosen by the study in benchmarks/README.md, "Families that learn")."""

    hidden: tuple[int, ...] = (128, 64, 64)
    dropout: float = 0.0
    noise: float = 0.0
    epochs: int = 10  # the budget: at most this many epochs (early stopping may end sooner)
    batch_size: int = 4096
    learning_rate: float = 1e-3  # peak rate, reached after the warm-up
    lr_schedule: str = "cosine"  # cosine: warm-up then cosine decay to 1 % over the budget
    warmup_epochs: float = 1.0
    patience: int = 3  # epochs without a better validation corr before stopping (0: never stop)
    window: int = 131072
    prefetch: int = 4
    threads: int = 1  # training leaves little CPU idle: one loader thread contends least
    seed: int = 0

    def __post_init__(self) -> None:
        hidden = tuple(self.hidden)
        if any(not isinstance(h, (int, np.integer)) or isinstance(h, bool) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be positive integers, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.noise >= 0.0:
            raise ValueError(f"noise must be >= 0, got {self.noise!r}")
        if not self.learning_rate > 0.0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not self.warmup_epochs >= 0.0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if not isinstance(self.patience, (int, np.integer)) or isinstance(self.patience, bool) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {self.patience!r}")
        for name in ("epochs", "batch_size", "window", "prefetch", "threads"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


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


# ---------------------------------------------------------------------------------------------
# network


def learning_rate_schedule(config: KerasStreamConfig, steps_per_epoch: int):
    """The optimizer's learning rate: constant, or a linear warm-up from 10 % to the peak over
    `warmup_epochs` then a cosine decay to 1 % of it at the end of the epoch budget."""
    import keras

    if config.lr_schedule == "constant":
        return config.learning_rate
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(config.warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * (0.1 if warmup else 1.0), decay_steps=total - warmup,
        alpha=0.01, warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup,
    )


def build_mlp(n_features: int, n_targets: int, config: KerasStreamConfig, *, steps_per_epoch: int = 1,
              target_mean: Sequence[float] | None = None):
    """The compiled Keras MLP: [GaussianNoise] -> (Dense ReLU [-> Dropout])* -> Dense linear,
    the output bias at `target_mean` (the targets' training mean) when given."""
    import keras

    keras.utils.set_random_seed(config.seed)
    layers: list = [keras.Input(shape=(n_features,), name="features")]
    if config.noise > 0:
        layers.append(keras.layers.GaussianNoise(config.noise, seed=config.seed))
    for i, units in enumerate(config.hidden):
        init = keras.initializers.HeNormal(seed=config.seed + i)
        layers.append(keras.layers.Dense(units, activation="relu", kernel_initializer=init, name=f"hidden_{i}"))
        if config.dropout > 0:
            layers.append(keras.layers.Dropout(config.dropout, seed=config.seed + 100 + i))
    # A zero output kernel: the net starts as a constant and grows the (weak) signal, instead
    # of first unlearning a random function that is larger than the signal and ranks rows.
    layers.append(keras.layers.Dense(n_targets, kernel_initializer="zeros", name="output"))
    model = keras.Sequential(layers, name="numerai_mlp")
    if target_mean is not None:
        model.layers[-1].bias.assign(np.asarray(target_mean, dtype=np.float32).reshape(n_targets))
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, steps_per_epoch))
    model.compile(optimizer=optimizer, loss="mse")
    return model


def extract_layers(model) -> Layers:
    """(kernel, bias) float32 arrays of every Dense layer of `model`, input to output."""
    import keras

    return [
        (np.array(layer.kernel.numpy(), dtype=np.float32), np.array(layer.bias.numpy(), dtype=np.float32))
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]


def numpy_forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    """The MLP's inference output (noise and dropout are identity): ReLU hidden, linear last."""
    h = np.asarray(x, dtype=np.float32)
    for i, (kernel, bias) in enumerate(layers):
        h = h @ kernel + bias
        if i < len(layers) - 1:
            np.maximum(h, 0.0, out=h)
    return h


def scaled_features(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Features by name as float32 scaled to 0..1, NaN as the middle bin 2 (as in the cache)."""
    # copy=True: pandas may hand back a read-only view (copy-on-write), scaled in place below
    x = frame[list(features)].to_numpy(dtype=np.float32, na_value=2.0, copy=True)
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


# ---------------------------------------------------------------------------------------------
# validation


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
    from mlflow_numerai.scoring import per_era_numerai_corr

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
    config: KerasStreamConfig = KerasStreamConfig(),
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

    from mlflow_numerai.data.stream import keras_dataset

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
