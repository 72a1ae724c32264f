"""`mlflow-numerai train baseline` (MLproject entry point `baseline`): ridge on a feature set.

Trains `families.baseline` on train, logs params and metrics, logs the predict closure with
`log_numerai_model`, evaluates it on validation with the `numerai` evaluator, then registers it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

FAMILY = "baseline"
DEFAULT_REGISTERED_NAME = "numerai-baseline"
DATA_VERSION_ENV = "MLFLOW_NUMERAI_DATA_VERSION"
FEATURE_SET_ENV = "MLFLOW_NUMERAI_FEATURE_SET"


def resolve_data_and_features(data_dir: str, feature_set: str):
    """(data dir, feature names, known targets, data version) with a bad data dir or feature
    set reported as click.BadParameter."""
    from mlflow_numerai.data import io as data_io

    try:
        path = data_io.resolve_data_dir(data_dir)
    except data_io.DataError as exc:
        raise click.BadParameter(str(exc), param_hint="'--data-dir'") from exc
    try:
        features = data_io.feature_columns(path, feature_set)
    except data_io.DataError as exc:
        raise click.BadParameter(str(exc), param_hint="'--feature-set'") from exc
    targets = data_io.load_feature_metadata(path).get("targets") or ["target"]
    return path, features, targets, data_io.data_version(path)


def resolve_data_options(data_dir: str, feature_set: str, target: str):
    """(data dir, feature names, data version) with bad options reported as click.BadParameter."""
    path, features, targets, version = resolve_data_and_features(data_dir, feature_set)
    if target not in targets and target != "target":
        raise click.BadParameter(f"unknown target {target!r}; choose one of {targets}", param_hint="'--target'")
    return path, features, version


def log_new_params(params: dict) -> None:
    """Log the params the active run does not have yet. Under `mlflow run` the entry point's
    parameters are already logged as the user spelled them ("synthetic", "1e-2"); logging
    them again with another spelling would fail."""
    import mlflow

    existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


def numerai_evaluator_config(data_dir, feature_set: str, target: str, churn_model: str | None = None) -> dict:
    """`evaluator_config` for the `numerai` evaluator: every target of features.json, MMC
    against `meta_model.parquet` (else the first validation benchmark model, as before), BMC
    against the first validation benchmark model, exposure to the model's feature set, churn
    against `churn_model`'s @champion or latest version (the name the run registers)."""
    import pandas as pd

    from mlflow_numerai.data import io as data_io

    targets = [t for t in data_io.load_feature_metadata(data_dir).get("targets", []) if t != target]
    config = {"era_col": "era", "targets": targets, "feature_set": feature_set, "data_dir": str(data_dir)}
    bench_path = Path(data_dir) / "validation_benchmark_models.parquet"
    if bench_path.exists():
        bench = pd.read_parquet(bench_path)
        if "id" in bench.columns:
            bench = bench.set_index("id")
        columns = [c for c in bench.columns if c not in ("era", "data_type")]
        if columns:
            config["meta_model"] = config["benchmark"] = bench[columns[0]]
    meta_path = Path(data_dir) / "meta_model.parquet"
    if meta_path.exists():
        meta = pd.read_parquet(meta_path)
        if "id" in meta.columns:
            meta = meta.set_index("id")
        columns = [c for c in meta.columns if c not in ("era", "data_type")]
        if columns:
            config["meta_model"] = meta[columns[0]]
    if churn_model:
        config["churn_model"] = churn_model
    return config


def evaluate_numerai(model_uri: str, validation, target: str, config: dict) -> dict[str, float]:
    """Run the `numerai` evaluator on `validation`; returns its metrics."""
    import mlflow

    result = mlflow.models.evaluate(
        model_uri,
        data=validation,
        targets=target,
        model_type="regressor",
        evaluators=["numerai"],
        evaluator_config={"numerai": config},
    )
    return dict(result.metrics)


@click.command(FAMILY)
@click.option("--data-dir", default="synthetic", show_default=True,
              help='Numerai data directory, or "synthetic" for the default synthetic set. '
                   "Under `mlflow run`, relative paths resolve against the projects directory.")
@click.option("--feature-set", default="small", show_default=True, help="Feature set of features.json.")
@click.option("--target", default="target", show_default=True, help="Target column to fit and score.")
@click.option("--alpha", type=click.FloatRange(min=0.0), default=1e-2, show_default=True,
              help="Ridge penalty per row (>= 0).")
@click.option("--registered-model-name", default=DEFAULT_REGISTERED_NAME, show_default=True,
              help='Registry name for the model; "" or "none" to skip registration.')
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
              "else sqlite:///<cwd>/mlflow.db).")
def baseline(data_dir: str, feature_set: str, target: str, alpha: float,
             registered_model_name: str, tracking_uri: str | None) -> None:
    """Ridge regression on a feature set: train, log predict.pkl, evaluate, register."""
    import mlflow

    from mlflow_numerai.data import io as data_io
    from mlflow_numerai.families.baseline import train_baseline
    from mlflow_numerai.packaging import log_numerai_model
    from mlflow_numerai.tracking import ensure_tracking_uri

    ensure_tracking_uri(tracking_uri)
    path, features, version = resolve_data_options(data_dir, feature_set, target)
    os.environ[DATA_VERSION_ENV] = version
    os.environ[FEATURE_SET_ENV] = feature_set
    register_as = None if registered_model_name.strip().lower() in ("", "none") else registered_model_name

    with mlflow.start_run(run_name=FAMILY, tags={"numerai.family": FAMILY}) as run:
        log_new_params({"data_dir": data_dir, "feature_set": feature_set, "target": target,
                        "alpha": alpha, "n_features": len(features), "resolved_data_dir": str(path)})
        click.echo(f"baseline: reading train ({len(features)} features of {feature_set!r}) from {path}")
        train = data_io.read_split(path, "train", columns=[*features, target])
        started = time.perf_counter()
        predict, fit = train_baseline(train, features, target=target, alpha=alpha)
        mlflow.log_metrics({"train_seconds": time.perf_counter() - started,
                            "train_rows": float(train[target].notna().sum()),
                            "coef_l2_norm": float((fit.coef**2).sum() ** 0.5)})
        del train

        info = log_numerai_model(predict, "model", data_dir=path, feature_set=feature_set,
                                 data_version=version)
        click.echo(f"baseline: logged {info.model_uri}")

        validation = data_io.read_split(path, "validation")
        config = numerai_evaluator_config(path, feature_set, target, churn_model=register_as)
        if "meta_model" in config:
            log_new_params({"mmc_benchmark": config["meta_model"].name})
        metrics = evaluate_numerai(info.model_uri, validation, target, config)
        shown = ("numerai_corr_mean", "numerai_corr_sharpe", "mmc_mean", "max_feature_exposure")
        click.echo("baseline: validation " + ", ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics))

        if register_as:
            version_info = mlflow.register_model(info.model_uri, register_as,
                                                 tags={"numerai.family": FAMILY,
                                                       "numerai.run_id": run.info.run_id})
            click.echo(f"baseline: registered {register_as} version {version_info.version}")
