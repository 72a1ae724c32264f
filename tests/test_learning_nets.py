"""Families that learn (issue 17): the Keras MLP and the Bayesian NN ensemble recover at least
80 % of the noiseless corr ceiling of a known linear signal, and score near 0 without it (the
data set and the ridge's version of the test: tests/test_learning.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import test_learning

linear_set = test_learning.linear_set  # the shared module-scoped fixture
mean_corr = test_learning.mean_corr


def test_keras_learns_the_linear_signal(linear_set, tmp_path):
    from mlflow_numerai.data.cache import build_cache
    from mlflow_numerai.families.keras_stream import KerasStreamConfig, train_keras_stream

    s = linear_set
    features = s["features"]
    config = KerasStreamConfig(epochs=8, batch_size=512, learning_rate=3e-3, patience=3, window=8000, seed=0)
    scores = {}
    for name, data_dir, valid in (("signal", s["dir"], s["valid"]), ("null", s["null_dir"], s["null_valid"])):
        caches = [build_cache(data_dir / f"{split}.parquet", tmp_path / name / split, features, ["target"],
                              progress=False) for split in ("train", "validation")]
        result = train_keras_stream(*caches, config)
        scores[name] = mean_corr(result.predict(valid)["prediction"], valid)
    assert scores["signal"] >= 0.8 * s["ceiling"]
    assert abs(scores["null"]) < 0.2 * s["ceiling"]


def test_bayes_nn_ensemble_learns_the_linear_signal(linear_set):
    import torch

    from mlflow_numerai.families import bayes_nn as bnn

    s = linear_set
    features = s["features"]
    torch.set_num_threads(1)
    x = bnn.feature_matrix(s["train"], features)  # the null set has the same features
    spec = bnn.BNNSpec(len(features), (32, 16), "normal")
    scores = {}
    for name, frame, valid in (("signal", s["train"], s["valid"]), ("null", s["null_train"], s["null_valid"])):
        batches = bnn.array_batches(x, frame[["target"]].to_numpy(), batch_size=512, seed=0)
        fit = bnn.fit_svi(batches, spec, epochs=8, lr=1e-2, final_lr_fraction=0.1, zero_output=True,
                           seed=0, progress=False)
        samples = bnn.sample_posterior(fit, 50, seed=0)
        predict = bnn.make_predict(features, samples, k=50)
        scores[name] = mean_corr(predict(valid)["prediction"], valid)
    assert scores["signal"] >= 0.8 * s["ceiling"]
    assert abs(scores["null"]) < 0.2 * s["ceiling"]


def test_entry_point_and_mlproject_defaults_are_the_families():
    import inspect
    from pathlib import Path

    import yaml

    from mlflow_numerai.entrypoints.bayes_nn import bayes_nn
    from mlflow_numerai.entrypoints.keras_stream import keras_stream
    from mlflow_numerai.families import bayes_nn as bnn
    from mlflow_numerai.families.keras_stream import KerasStreamConfig

    keras = {p.name: p.default for p in keras_stream.params}
    config = KerasStreamConfig()
    for name in ("epochs", "batch_size", "learning_rate", "lr_schedule", "warmup_epochs", "patience", "weight_decay",
                 "dropout", "noise", "seed"):
        assert keras[name] == getattr(config, name), name
    assert keras["hidden"] in (config.hidden, ",".join(map(str, config.hidden)))
    svi = {k: p.default for k, p in inspect.signature(bnn.fit_svi).parameters.items()}
    cli = {p.name: p.default for p in bayes_nn.params}
    assert (cli["epochs"], cli["learning_rate"], cli["final_lr_fraction"], cli["init_scale"]) == (
        svi["epochs"], svi["lr"], svi["final_lr_fraction"], svi["init_scale"])
    assert (cli["output_init"] == "zero") == svi["zero_output"]
    project = yaml.safe_load((Path(__file__).parents[1] / "projects" / "MLproject").read_text())["entry_points"]
    for entry, defaults in (("keras_stream", keras), ("bayes_nn", cli)):
        for name, param in project[entry]["parameters"].items():
            if name in defaults and isinstance(param["default"], (int, float)):
                assert param["default"] == pytest.approx(float(defaults[name])), (entry, name)
