"""The streamed Keras MLP: training from the stream, the numpy predict closure, the entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import pytest

from mlflow_numerai.data.cache import build_cache
from mlflow_numerai.data.io import feature_columns, read_split
from mlflow_numerai.data.stream import BatchStream
from mlflow_numerai.families.keras_stream import (
    KerasStreamConfig,
    build_mlp,
    extract_layers,
    learning_rate_schedule,
    make_predict,
    numpy_forward,
    scaled_features,
    train_keras_stream,
)

TARGETS = ["target", "target_nomi_60"]
CONFIG = KerasStreamConfig(hidden=(16, 8), dropout=0.1, noise=0.05, epochs=2, batch_size=512,
                           learning_rate=1e-2, window=3000, seed=3)


@pytest.fixture(scope="module")
def trained(synthetic_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keras_cache")
    features = feature_columns(synthetic_dir, "all")
    train = build_cache(synthetic_dir / "train.parquet", tmp / "train", features, TARGETS, progress=False)
    validation = build_cache(synthetic_dir / "validation.parquet", tmp / "val", features, TARGETS, progress=False)
    logged = []
    with pytest.MonkeyPatch.context() as mp:  # record how the training stream is read
        reads = []
        epoch = BatchStream.epoch

        def recording_epoch(self, e=0, start=0):
            if self.shuffle:
                reads.append((e, start))
            return epoch(self, e, start)

        mp.setattr(BatchStream, "epoch", recording_epoch)
        result = train_keras_stream(train, validation, CONFIG, on_epoch_end=lambda e, m: logged.append((e, m)))
    result.training_reads = reads
    return result, logged, validation


def test_each_epoch_streams_in_one_pass(trained):
    """Keras reads the batches in order: one prefetching pass per epoch, fit epoch i = stream
    epoch i (plus Keras' first look at two batches for their shapes). Keras' default
    shuffle=True asked for them in a random order: a new pass (threads, buffers) per batch."""
    result, _, _ = trained
    assert result.training_reads == [(0, 0), (0, 0), (1, 0)]


def test_training_reports_every_epoch(trained, synthetic_dir):
    result, logged, validation = trained
    train = read_split(synthetic_dir, "train")
    train_rows = int(train[TARGETS].notna().all(axis=1).sum())  # rows with a NaN target are not trained on
    assert [e for e, _ in logged] == [0, 1]
    for _, metrics in logged:
        assert set(metrics) == {"loss", "val_loss", "val_corr_mean", "val_corr_sharpe", "learning_rate",
                                "rows_per_sec", "epoch_seconds"}
        assert all(np.isfinite(v) for v in metrics.values())
        # throughput is every training row over the epoch's time (its value is not a test matter)
        assert metrics["rows_per_sec"] * metrics["epoch_seconds"] == pytest.approx(train_rows, rel=1e-9)
        assert 0 < metrics["loss"] < 1
    assert list(result.history.index) == [0, 1]
    assert result.best_epoch == int(result.history["val_corr_mean"].idxmax())
    assert list(result.val_per_era.index) == validation.eras
    assert result.val_per_era.mean() == pytest.approx(result.history["val_corr_mean"].max())
    assert result.targets == TARGETS and result.layers[-1][0].shape == (8, 2)


def test_numpy_forward_equals_keras(trained, synthetic_dir):
    result, _, _ = trained
    frame = read_split(synthetic_dir, "validation")
    x = scaled_features(frame, result.features)
    keras_out = result.model.predict(x, verbose=0)
    assert np.abs(numpy_forward(result.layers, x) - keras_out).max() < 1e-5


def test_numpy_forward_equals_keras_random_weights():
    """Noise and dropout layers are identity at inference; nonzero biases are applied."""
    model = build_mlp(30, 3, KerasStreamConfig(hidden=(20, 10, 5), dropout=0.3, noise=0.2, seed=1))
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    x = rng.integers(0, 5, (257, 30)).astype(np.float32) / 4
    assert np.abs(numpy_forward(extract_layers(model), x) - model.predict(x, verbose=0)).max() < 1e-5


def test_predict_closure_meets_the_numerai_contract(trained, synthetic_dir):
    result, _, _ = trained
    live = read_split(synthetic_dir, "live")
    out = result.predict(live)
    assert type(out) is pd.DataFrame and list(out.columns) == ["prediction"]
    assert out.index.equals(live.index)
    assert out["prediction"].between(0, 1).all() and out["prediction"].std() > 0
    # the rank of Keras' own first output
    raw = result.model.predict(scaled_features(live, result.features), verbose=0)[:, 0]
    assert np.allclose(out["prediction"].to_numpy(), pd.Series(raw).rank(pct=True).to_numpy())
    # features by name: column order and extra columns do not matter
    shuffled = live[list(reversed(live.columns))].assign(extra=1.0)
    pd.testing.assert_frame_equal(result.predict(shuffled), out)
    # a missing feature is named
    with pytest.raises(KeyError, match=result.features[0]):
        result.predict(live.drop(columns=[result.features[0]]))


def test_nan_features_are_the_middle_bin(trained, synthetic_dir):
    result, _, _ = trained
    live = read_split(synthetic_dir, "live").iloc[:50]
    feature = result.features[5]
    with_nan = live.astype({feature: "float64"})
    with_nan.loc[with_nan.index[:10], feature] = np.nan
    as_two = live.copy()
    as_two.loc[as_two.index[:10], feature] = 2
    pd.testing.assert_frame_equal(result.predict(with_nan), result.predict(as_two))
    # all-float features (what MLflow's schema enforcement hands a pyfunc): to_numpy is then a
    # read-only view under pandas' copy-on-write, which must not be scaled in place
    as_float = pd.DataFrame(live[result.features].to_numpy(dtype=np.float64), index=live.index,
                            columns=result.features)
    pd.testing.assert_frame_equal(result.predict(as_float), result.predict(live))
    assert as_float.equals(live[result.features].astype("float64"))  # the input is left as it was


def test_predict_pickle_needs_no_tensorflow_or_project(trained, synthetic_dir, tmp_path):
    """predict.pkl loads and runs in a Python that cannot import mlflow_numerai, keras or tensorflow."""
    from mlflow_numerai.packaging import save_predict

    result, _, _ = trained
    pkl = save_predict(result.predict, tmp_path / "predict.pkl")
    live = read_split(synthetic_dir, "live")
    live.to_parquet(tmp_path / "live.parquet")
    result.predict(live).to_parquet(tmp_path / "expected.parquet")
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("mlflow_numerai", "mlflow", "tensorflow", "keras", "torch"):
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        import pandas as pd
        predict = pd.read_pickle({str(pkl)!r})
        out = predict(pd.read_parquet({str(tmp_path / 'live.parquet')!r}))
        pd.testing.assert_frame_equal(out, pd.read_parquet({str(tmp_path / 'expected.parquet')!r}))
        assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_make_predict_chunks_large_frames(monkeypatch):
    import mlflow_numerai.families.keras_stream.predict as family

    rng = np.random.default_rng(1)
    layers = [(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)),
              (rng.normal(size=(3, 1)).astype(np.float32), np.zeros(1, np.float32))]
    frame = pd.DataFrame(rng.integers(0, 5, (1000, 4)), columns=list("abcd")).astype(np.int8)
    whole = make_predict(layers, list("abcd"))(frame)
    monkeypatch.setattr(family, "PREDICT_CHUNK_ROWS", 64)
    pd.testing.assert_frame_equal(make_predict(layers, list("abcd"))(frame), whole)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"hidden": (0,)}, "hidden"), ({"dropout": 1.0}, "dropout"), ({"noise": -1.0}, "noise"),
     ({"learning_rate": 0.0}, "learning_rate"), ({"epochs": 0}, "epochs"), ({"window": 0}, "window"),
     ({"seed": -2}, "seed"), ({"weight_decay": -0.1}, "weight_decay"),
     ({"weight_decay": float("nan")}, "weight_decay")],
)
def test_bad_config_is_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        KerasStreamConfig(**kwargs)


def test_keras_net_starts_as_the_target_mean():
    model = build_mlp(12, 2, KerasStreamConfig(hidden=(8, 4)), target_mean=[0.5, 0.25])
    x = np.random.default_rng(0).random((50, 12)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.tile([0.5, 0.25], (50, 1)), atol=1e-7)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_keras_weight_decay_shrinks_kernels_not_the_target_mean(weight_decay):
    # Targets at their mean: the loss and its gradients are 0, so only the decay moves weights.
    config = KerasStreamConfig(hidden=(8,), learning_rate=0.01, lr_schedule="constant", weight_decay=weight_decay)
    model = build_mlp(6, 1, config, target_mean=[0.5])
    kernel = np.array(model.layers[0].kernel.numpy())
    x = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    model.fit(x, np.full((64, 1), 0.5, np.float32), batch_size=16, epochs=10, verbose=0)
    after = model.layers[0].kernel.numpy()
    np.testing.assert_allclose(model.layers[-1].bias.numpy(), [0.5])
    if weight_decay:
        assert np.abs(after).sum() < 0.9 * np.abs(kernel).sum()
    else:
        np.testing.assert_array_equal(after, kernel)


def test_keras_learning_rate_warms_up_then_decays():
    config = KerasStreamConfig(epochs=10, learning_rate=0.01, warmup_epochs=1.0)
    schedule = learning_rate_schedule(config, steps_per_epoch=20)
    rate = [float(schedule(step)) for step in (0, 10, 20, 110, 199)]
    assert rate[0] == pytest.approx(0.001) and rate[2] == pytest.approx(0.01)
    assert rate[0] < rate[1] < rate[2] > rate[3] > rate[4] and rate[4] < 0.0011
    assert learning_rate_schedule(KerasStreamConfig(lr_schedule="constant", learning_rate=0.01), 20) == 0.01
    with pytest.raises(ValueError, match="lr_schedule"):
        KerasStreamConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="patience"):
        KerasStreamConfig(patience=-1)


def test_caches_must_match(trained, synthetic_dir, tmp_path):
    _, _, validation = trained
    features = feature_columns(synthetic_dir, "all")[:10]
    other = build_cache(synthetic_dir / "train.parquet", tmp_path / "t", features, TARGETS, progress=False)
    with pytest.raises(ValueError, match="feature columns"):
        train_keras_stream(other, validation, CONFIG)


@pytest.mark.e2e
def test_entry_point_logs_evaluates_and_registers(synthetic_dir, tracking_uri, tmp_path):
    import mlflow
    from click.testing import CliRunner

    from mlflow_numerai.cli import main

    args = ["train", "keras-stream", "--data-dir", str(synthetic_dir), "--feature-set", "all",
            "--targets", "target,target_nomi_20", "--hidden", "16,8", "--epochs", "2", "--batch-size", "512",
            "--learning-rate", "0.01", "--shuffle-window", "2000", "--cache-dir", str(tmp_path / "cache"),
            "--registered-model-name", "ks-test"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient()
    run = client.search_runs(client.search_experiments()[0].experiment_id)[0]
    assert run.data.tags["numerai.family"] == "keras_stream"
    history = client.get_metric_history(run.info.run_id, "val_corr_mean")
    assert [m.step for m in history] == [0, 1]
    for name in ("loss", "val_loss", "val_corr_sharpe", "rows_per_sec"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2
    assert "numerai_corr_mean" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "keras_stream")}
    assert "keras_stream/learning_curve.png" in artifacts
    versions = client.search_model_versions("name='ks-test'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    model = mlflow.pyfunc.load_model(f"models:/ks-test/{versions[0].version}")
    live = read_split(synthetic_dir, "live")
    out = model.predict(live)
    assert out["prediction"].between(0, 1).all()
    # the caches were built once, under --cache-dir
    assert len(list((tmp_path / "cache").glob("*/train/manifest.json"))) == 1


def test_bad_options_are_named(synthetic_dir, tracking_uri):
    from click.testing import CliRunner

    from mlflow_numerai.cli import main

    base = ["train", "keras-stream", "--data-dir", str(synthetic_dir)]
    for extra, name in ((["--hidden", "16,x"], "--hidden"), (["--targets", "target_nope"], "--targets"),
                        (["--feature-set", "nope"], "--feature-set"), (["--epochs", "0"], "--epochs")):
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2 and name in result.output, result.output
