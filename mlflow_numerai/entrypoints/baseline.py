"""`mlflow-numerai train baseline` (MLproject entry point `baseline`): ridge on a feature set.

Trains `families.baseline` on train, logs params and metrics, logs the predict closure with
`log_numerai_model`, evaluates it on validation with the `numerai` evaluator, then registers it.
"""

from __future__ import annotations

import time

import click
import mlflow

from mlflow_numerai.conventions import MODEL_ARTIFACT
from mlflow_numerai.entrypoints import options
from mlflow_numerai.entrypoints.common import (
    evaluate_on_validation,
    export_data_env,
    log_new_params,
    read_split,
    register,
    registered_name,
    resolve_data_options,
    start_family_run,
)
from mlflow_numerai.families.baseline import train_baseline
from mlflow_numerai.packaging import log_numerai_model
from mlflow_numerai.tracking import ensure_tracking_uri

FAMILY = "baseline"
DEFAULT_REGISTERED_NAME = "numerai-baseline"


@click.command(FAMILY)
@options.data_dir_option('Numerai data directory, or "synthetic" for the default synthetic set. '
                         "Under `mlflow run`, relative paths resolve against the projects directory.")
@options.feature_set_option()
@options.target_option()
@click.option("--alpha", type=options.FiniteFloatRange(min=0.0), default=1e-2, show_default=True,
              help="Ridge penalty per row (>= 0).")
@options.registered_model_name_option(DEFAULT_REGISTERED_NAME)
@options.tracking_uri_option()
def baseline(data_dir: str, feature_set: str, target: str, alpha: float,
             registered_model_name: str, tracking_uri: str | None) -> None:
    """Ridge regression on a feature set: train, log predict.pkl, evaluate, register."""
    path, features, version = resolve_data_options(data_dir, feature_set, target)
    ensure_tracking_uri(tracking_uri)
    export_data_env(version, feature_set)
    register_as = registered_name(registered_model_name)

    with start_family_run(FAMILY) as run:
        log_new_params({"data_dir": data_dir, "feature_set": feature_set, "target": target,
                        "alpha": alpha, "n_features": len(features), "resolved_data_dir": str(path)})
        click.echo(f"baseline: reading train ({len(features)} features of {feature_set!r}) from {path}")
        train = read_split(path, "train", columns=[*features, target])
        started = time.perf_counter()
        predict, fit = train_baseline(train, features, target=target, alpha=alpha)
        mlflow.log_metrics({"train_seconds": time.perf_counter() - started,
                            "train_rows": float(train[target].notna().sum()),
                            "coef_l2_norm": float((fit.coef**2).sum() ** 0.5)})
        del train

        info = log_numerai_model(predict, MODEL_ARTIFACT, data_dir=path, feature_set=feature_set,
                                 data_version=version)
        click.echo(f"baseline: logged {info.model_uri}")

        metrics = evaluate_on_validation(info.model_uri, path, feature_set, target, churn_model=register_as)
        shown = ("numerai_corr_mean", "numerai_corr_sharpe", "mmc_mean", "max_feature_exposure")
        click.echo("baseline: validation " + ", ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics))

        if register_as:
            register(info.model_uri, register_as, FAMILY, run.info.run_id)
