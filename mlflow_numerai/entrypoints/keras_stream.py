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
import mlflow

from mlflow_numerai.conventions import MODEL_ARTIFACT
from mlflow_numerai.data.cache import cache_dirs
from mlflow_numerai.entrypoints import options
from mlflow_numerai.entrypoints.common import (
    build_split_cache,
    evaluate_on_validation,
    export_data_env,
    log_new_params,
    register,
    registered_name,
    resolve_data_and_features,
    start_family_run,
)
from mlflow_numerai.families.keras_stream import KerasStreamConfig, train_keras_stream
from mlflow_numerai.packaging import log_numerai_model
from mlflow_numerai.tracking import ensure_tracking_uri

FAMILY = "keras_stream"
DEFAULT_REGISTERED_NAME = "numerai-keras-stream"


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
@options.data_dir_option()
@options.feature_set_option()
@options.targets_option()
@options.hidden_option("128,64,64")
@click.option("--dropout", type=options.FiniteFloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Dropout rate after each hidden layer.")
@click.option("--noise", type=options.FiniteFloatRange(min=0.0), default=0.0, show_default=True,
              help="Standard deviation of Gaussian input noise (features scaled to 0..1).")
@options.epochs_option(10, "The budget: at most this many epochs (early stopping may end sooner).")
@options.batch_size_option(1024)
@options.learning_rate_option(3e-3, "Peak Adam learning rate (after the warm-up).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="cosine: linear warm-up, then cosine decay to 1 %% of the peak at the end of the budget.")
@click.option("--warmup-epochs", type=options.FiniteFloatRange(min=0.0), default=1.0, show_default=True,
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
@options.seed_option()
@click.option("--cache-dir", default=None,
              help="Where the int8 caches go (default: <MLFLOW_NUMERAI_CACHE>/era_cache).")
@options.registered_model_name_option(DEFAULT_REGISTERED_NAME)
@options.tracking_uri_option()
def keras_stream(data_dir: str, feature_set: str, targets: str, hidden: tuple[int, ...], dropout: float,
                 noise: float, epochs: int, batch_size: int, learning_rate: float, lr_schedule: str,
                 warmup_epochs: float, patience: int, shuffle_window: int, prefetch: int, loader_threads: int,
                 seed: int, cache_dir: str | None, registered_model_name: str, tracking_uri: str | None) -> None:
    """Keras MLP streamed from an era-sharded int8 cache: train, log predict.pkl, evaluate, register."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    path, features, known_targets, version = resolve_data_and_features(data_dir, feature_set)
    target_list = parse_targets(targets, known_targets)
    ensure_tracking_uri(tracking_uri)
    export_data_env(version, feature_set)
    register_as = registered_name(registered_model_name)

    config = KerasStreamConfig(hidden=hidden, dropout=dropout, noise=noise, epochs=epochs,
                               batch_size=batch_size, learning_rate=learning_rate, lr_schedule=lr_schedule,
                               warmup_epochs=warmup_epochs, patience=patience, window=shuffle_window,
                               prefetch=prefetch, threads=loader_threads, seed=seed)
    train_dir, val_dir = cache_dirs(path, features, target_list, root=cache_dir)
    click.echo(f"keras_stream: caching train and validation ({len(features)} features) under {train_dir.parent}")
    train_cache = build_split_cache(path, "train", train_dir, features, target_list)
    val_cache = build_split_cache(path, "validation", val_dir, features, target_list)

    with start_family_run(FAMILY) as run:
        log_new_params({
            "data_dir": str(path), "feature_set": feature_set, "targets": ",".join(target_list),
            "hidden": ",".join(map(str, hidden)), "dropout": dropout, "noise": noise, "epochs": epochs,
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

        info = log_numerai_model(result.predict, MODEL_ARTIFACT, data_dir=path, feature_set=feature_set,
                                 data_version=version)
        click.echo(f"keras_stream: logged {info.model_uri} (best epoch {result.best_epoch + 1})")
        metrics = evaluate_on_validation(info.model_uri, path, feature_set, target_list[0], churn_model=register_as)
        summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("numerai_corr"))
        click.echo(f"keras_stream: validation {summary or metrics}")
        if register_as:
            register(info.model_uri, register_as, FAMILY, run.info.run_id)
