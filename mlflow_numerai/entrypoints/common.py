"""What every training entry point does the same way: resolve the data options, start the run,
log params, evaluate the logged model with the `numerai` evaluator, register it.

The one way to log params under `mlflow run` is `log_new_params`: MLflow Projects has already
logged the entry point's own parameters as the user spelled them ("synthetic", "1e-2", "512"),
so a param the run has is never logged again (MLflow refuses a changed value).
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import pandas as pd

from mlflow_numerai.conventions import DATA_VERSION_ENV, FAMILY_TAG, FEATURE_SET_ENV, RUN_ID_TAG
from mlflow_numerai.data import io as data_io
from mlflow_numerai.data.cache import EraCache, build_cache
from mlflow_numerai.errors import InputError

NO_REGISTRATION = ("", "none")  # --registered-model-name values that skip registration


def resolve_data_and_features(data_dir: str, feature_set: str):
    """(data dir, feature names, known targets, data version) with a bad data dir or feature
    set reported as click.BadParameter."""
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


def read_split(path: Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """`data_io.read_split`, with a file that cannot be read (truncated, not parquet) reported as
    an InputError naming the file."""
    try:
        return data_io.read_split(path, split, columns=columns)
    except data_io.DataError:
        raise
    except (OSError, ValueError) as exc:
        file = data_io.split_path(path, split)
        raise InputError(f"cannot read {split} split {str(file)!r}: {' '.join(str(exc).split())}") from exc


def build_split_cache(path: Path, split: str, cache_dir: Path, features: list[str], targets: list[str]) -> EraCache:
    """The int8 era cache of one split (`data.cache.build_cache`), with a file that cannot be
    read reported as an InputError naming the file."""
    file = data_io.split_path(path, split)
    try:
        return build_cache(file, cache_dir, features, targets)
    except data_io.DataError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {split} split {str(file)!r}: {' '.join(str(exc).split())}") from exc


def export_data_env(version: str, feature_set: str | None = None) -> None:
    """Record the data version (and feature set) for the run context provider's tags."""
    os.environ[DATA_VERSION_ENV] = version
    if feature_set is not None:
        os.environ[FEATURE_SET_ENV] = feature_set


def registered_name(value: str | None) -> str | None:
    """The registry name of `--registered-model-name`; None for "" or "none" (skip registration)."""
    if value is None or value.strip().lower() in NO_REGISTRATION:
        return None
    return value


def start_family_run(family: str, run_name: str | None = None, tag_family: str | None = None):
    """`mlflow.start_run` tagged with the family (continues MLFLOW_RUN_ID under `mlflow run`)."""
    import mlflow

    return mlflow.start_run(run_name=run_name or family, tags={FAMILY_TAG: tag_family or family})


def log_new_params(params: dict, run_id: str | None = None) -> None:
    """Log the params the run (`run_id`, else the active run) does not have yet. Under
    `mlflow run` the entry point's parameters are already logged as the user spelled them
    ("synthetic", "1e-2"); logging them again with another spelling would fail."""
    import mlflow

    if run_id is None:
        active = mlflow.active_run()
        existing = mlflow.get_run(active.info.run_id).data.params if active else {}
        mlflow.log_params({k: v for k, v in params.items() if k not in existing})
        return
    client = mlflow.MlflowClient()
    existing = client.get_run(run_id).data.params
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()
                                     if k not in existing])


def _first_model_column(path: Path):
    """The first model column of a benchmark/meta-model parquet (indexed by id), or None."""
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    if "id" in frame.columns:
        frame = frame.set_index("id")
    columns = [c for c in frame.columns if c not in ("era", "data_type")]
    return frame[columns[0]] if columns else None


def numerai_evaluator_config(data_dir, feature_set: str, target: str, churn_model: str | None = None) -> dict:
    """`evaluator_config` for the `numerai` evaluator: every target of features.json, MMC
    against `meta_model.parquet` (else the first validation benchmark model, as before), BMC
    against the first validation benchmark model, exposure to the model's feature set, churn
    against `churn_model`'s @champion or latest version (the name the run registers)."""
    targets = [t for t in data_io.load_feature_metadata(data_dir).get("targets", []) if t != target]
    config = {"era_col": "era", "targets": targets, "feature_set": feature_set, "data_dir": str(data_dir)}
    benchmark = _first_model_column(Path(data_dir) / "validation_benchmark_models.parquet")
    if benchmark is not None:
        config["meta_model"] = config["benchmark"] = benchmark
    meta_model = _first_model_column(Path(data_dir) / "meta_model.parquet")
    if meta_model is not None:
        config["meta_model"] = meta_model
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


def evaluate_on_validation(model_uri: str, path: Path, feature_set: str, target: str,
                           churn_model: str | None) -> dict[str, float]:
    """Evaluate a logged model on the validation split of `path` (the MMC benchmark's name
    logged as the param `mmc_benchmark`); returns the evaluator's metrics."""
    validation = read_split(path, "validation")
    config = numerai_evaluator_config(path, feature_set, target, churn_model=churn_model)
    if "meta_model" in config:
        log_new_params({"mmc_benchmark": config["meta_model"].name})
    return evaluate_numerai(model_uri, validation, target, config)


def register(model_uri: str, name: str, family: str, run_id: str, **tags: str):
    """Register `model_uri` as a new version of `name`, tagged with its family and run."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags={FAMILY_TAG: family, RUN_ID_TAG: run_id, **tags})
    click.echo(f"{family}: registered {name} version {version.version}")
    return version

