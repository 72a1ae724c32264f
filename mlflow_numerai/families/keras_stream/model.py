"""The network: the compiled Keras MLP (`build_mlp`), its learning-rate schedule and its weights.

[GaussianNoise] -> (Dense ReLU, He init [-> Dropout])* -> Dense linear whose output starts as the
constant training mean of the targets (zero kernel, bias at the mean); MSE, Adam with a linear
warm-up then cosine decay over the epoch budget (`learning_rate_schedule`). `extract_layers`
reads the Dense weights out as numpy arrays (`Layers`) for the predict closure. Keras is imported
where it is used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mlflow_numerai.families.keras_stream.config import KerasStreamConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

Layers = list[tuple[np.ndarray, np.ndarray]]  # (kernel, bias) per Dense layer, input to output


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
    schedule = learning_rate_schedule(config, steps_per_epoch)
    if config.weight_decay > 0:
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias"])  # the output bias holds the target mean
    else:
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
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

