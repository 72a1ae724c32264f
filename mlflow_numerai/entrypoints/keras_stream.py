"""`mlflow-numerai train keras-stream` (MLproject entry point `keras_stream`).

Builds (or reuses) the era-sharded int8 caches of train and validation, trains the Keras MLP
from the prefetching stream, logs per-epoch metrics as they come (`loss`, `val_loss`,
`val_corr_mean`, `val_corr_sharpe`, `rows_per_sec`, step = epoch) and a learning-curve PNG, logs
the numpy `predict` closure with `log_numerai_model`, evaluates it with the `numerai` evaluator
and registers it.
"""

from __future__ import annotations

import os

import click

FAMILY = "keras_stream"
DEFAULT_REGISTERED_NAME = "numerai-keras-stream"


def parse_hidden(value: str) -> tuple[int, ...]:
    """"128,64,64" -> (128, 64, 64); "" -> () (a linear model)."""
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}", param_hint="'--hidden'") from None
    if any(s < 1 for s in sizes):
        raise click.BadParameter(f"layer sizes must be >= 1, got {value!r}", param_hint="'--hidden'")
    return sizes


def parse_targets(value: str, known: list[str]) -> list[str]:
    """"target,target_nomi_60" -> a list of known target columns (first one is scored)."""
    targets = [t.strip() for t in str(value).split(",") if t.strip()]
    if not targets:
        raise click.BadParameter("name at least one target column", param_hint="'--targets'")
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise click.BadParameter(f"unknown target(s) {unknown}; choose from {known}", param_hint="'--targets'")
    if len(set(targets)) != len(targets):
        raise click.BadParameter(f"duplicate target in {value!r}", param_hint="'--targets'")
    return targets


def learning_curve_figure(history):
    """Loss / val_loss and validation corr per epoch (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_corr) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = history.index + 1
    ax_loss.plot(epochs, history["loss"], marker="o", label="train loss")
    ax_loss.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("MSE")
    ax_loss.legend()
    ax_corr.plot(epochs, history["val_corr_mean"], marker="o", color="tab:green")
    ax_corr.axhline(0.0, color="grey", lw=0.8)
    ax_corr.set_xlabel("epoch")
    ax_corr.set_ylabel("mean per-era numerai_corr (validation)")
    fig.suptitle("keras_stream learning curve")
    fig.tight_layout()
    return fig


@click.command(FAMILY)
@click.option("--data-dir", default="synthetic", show_default=True,
              help='Numerai data directory, or "synthetic" for the default synthetic set.')
@click.option("--feature-set", default="small", show_default=True, help="Feature set of features.json.")
@click.option("--targets", default="target", show_default=True,
              help="Comma-separated target columns to fit; the first one is scored and predicted.")
@click.option("--hidden", default="128,64,64", show_default=True, help="Hidden layer sizes, comma-separated.")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Dropout rate after each hidden layer.")
@click.option("--noise", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Standard deviation of Gaussian input noise (features scaled to 0..1).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="The budget: at most this many epochs (early stopping may end sooner).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0.0, min_open=True), default=3e-3, show_default=True,
              help="Peak Adam learning rate (after the warm-up).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="cosine: linear warm-up, then cosine decay to 1 %% of the peak at the end of the budget.")
@click.option("--warmup-epochs", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Epochs of linear warm-up from 10 %% of the peak learning rate (cosine schedule).")
@click.option("--patience", type=click.IntRange(min=0), default=3, show_default=True,
              help="Stop after this many epochs without a better validation corr (0: run the whole budget); "
                   "the best epoch's weights are kept.")
@click.option("--shuffle-window", type=click.IntRange(min=1), default=131072, show_default=True,
              help="Rows shuffled together (after shuffling the era order each epoch).")
@click.option("--prefetch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Batches prepared ahead by the loader threads.")
@click.option("--loader-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads preparing batches (one contends least with training on few cores).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--cache-dir", default=None,
              help="Where the int8 caches go (default: <MLFLOW_NUMERAI_CACHE>/era_cache).")
@click.option("--registered-model-name", default=DEFAULT_REGISTERED_NAME, show_default=True,
              help='Registry name for the model; "" or "none" to skip registration.')
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db).")
def keras_stream(data_dir: str, feature_set: str, targets: str, hidden: str, dropout: float, noise: float,
                 epochs: int, batch_size: int, learning_rate: float, lr_schedule: str, warmup_epochs: float,
                 patience: int, shuffle_window: int, prefetch: int, loader_threads: int, seed: int,
                 cache_dir: str | None, registered_model_name: str, tracking_uri: str | None) -> None:
    """Keras MLP streamed from an era-sharded int8 cache: train, log predict.pkl, evaluate, register."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mlflow

    from mlflow_numerai.data import io as data_io
    from mlflow_numerai.data.cache import build_cache, cache_dirs
    from mlflow_numerai.entrypoints.baseline import (
        DATA_VERSION_ENV,
        FEATURE_SET_ENV,
        evaluate_numerai,
        numerai_evaluator_config,
        resolve_data_and_features,
    )
    from mlflow_numerai.tracking import ensure_tracking_uri

    ensure_tracking_uri(tracking_uri)
    hidden_sizes = parse_hidden(hidden)
    path, features, known_targets, version = resolve_data_and_features(data_dir, feature_set)
    target_list = parse_targets(targets, known_targets)
    os.environ[DATA_VERSION_ENV] = version
    os.environ[FEATURE_SET_ENV] = feature_set
    register_as = None if registered_model_name.strip().lower() in ("", "none") else registered_model_name

    from mlflow_numerai.families.keras_stream import KerasStreamConfig, train_keras_stream
    from mlflow_numerai.packaging import log_numerai_model

    config = KerasStreamConfig(hidden=hidden_sizes, dropout=dropout, noise=noise, epochs=epochs,
                               batch_size=batch_size, learning_rate=learning_rate, lr_schedule=lr_schedule,
                               warmup_epochs=warmup_epochs, patience=patience, window=shuffle_window,
                               prefetch=prefetch, threads=loader_threads, seed=seed)
    train_dir, val_dir = cache_dirs(path, features, target_list, root=cache_dir)
    click.echo(f"keras_stream: caching train and validation ({len(features)} features) under {train_dir.parent}")
    train_cache = build_cache(data_io.split_path(path, "train"), train_dir, features, target_list)
    val_cache = build_cache(data_io.split_path(path, "validation"), val_dir, features, target_list)

    with mlflow.start_run(run_name=FAMILY, tags={"numerai.family": FAMILY}) as run:
        mlflow.log_params({
            "data_dir": str(path), "feature_set": feature_set, "targets": ",".join(target_list),
            "hidden": ",".join(map(str, hidden_sizes)), "dropout": dropout, "noise": noise, "epochs": epochs,
            "batch_size": batch_size, "learning_rate": learning_rate, "lr_schedule": lr_schedule,
            "warmup_epochs": warmup_epochs, "patience": patience, "shuffle_window": shuffle_window,
            "prefetch": prefetch, "loader_threads": loader_threads, "seed": seed, "n_features": len(features),
        })
        mlflow.log_metrics({
            "train_rows": float(train_cache.n_rows), "validation_rows": float(val_cache.n_rows),
            "cache_nan_features_filled": float(train_cache.manifest["nan_features_filled"]
                                               + val_cache.manifest["nan_features_filled"]),
            "cache_rows_dropped_nan_target": float(train_cache.manifest["rows_dropped_nan_target"]
                                                   + val_cache.manifest["rows_dropped_nan_target"]),
        })

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            click.echo(f"keras_stream: epoch {epoch + 1}/{epochs} loss={metrics['loss']:.5f} "
                       f"val_corr_mean={metrics['val_corr_mean']:.4f} rows/s={metrics['rows_per_sec']:.0f}")

        result = train_keras_stream(train_cache, val_cache, config, on_epoch_end=log_epoch, verbose=0)
        mlflow.log_metrics({"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                            "best_val_corr_mean": float(result.val_per_era.mean())})
        if result.stopped_early:
            click.echo(f"keras_stream: stopped early after {len(result.history)} of {epochs} epochs "
                       f"(no better validation corr for {patience})")
        fig = learning_curve_figure(result.history)
        mlflow.log_figure(fig, "keras_stream/learning_curve.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
        mlflow.log_text(result.history.to_csv(), "keras_stream/history.csv")
        mlflow.log_text(result.val_per_era.rename("val_corr").to_csv(index_label="era"),
                        "keras_stream/val_per_era_corr.csv")

        info = log_numerai_model(result.predict, "model", data_dir=path, feature_set=feature_set,
                                 data_version=version)
        click.echo(f"keras_stream: logged {info.model_uri} (best epoch {result.best_epoch + 1})")
        validation = data_io.read_split(path, "validation")
        eval_config = numerai_evaluator_config(path, feature_set, target_list[0], churn_model=register_as)
        if "meta_model" in eval_config:
            mlflow.log_param("mmc_benchmark", eval_config["meta_model"].name)
        metrics = evaluate_numerai(info.model_uri, validation, target_list[0], eval_config)
        del validation
        summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("numerai_corr"))
        click.echo(f"keras_stream: validation {summary or metrics}")
        if register_as:
            version_info = mlflow.register_model(info.model_uri, register_as,
                                                 tags={"numerai.family": FAMILY, "numerai.run_id": run.info.run_id})
            click.echo(f"keras_stream: registered {register_as} version {version_info.version}")
