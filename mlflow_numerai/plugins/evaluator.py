"""The `numerai` MLflow model evaluator (entry point group `mlflow.model_evaluator`).

    mlflow.models.evaluate(model_uri, data=validation_df, targets="target", model_type="regressor",
                           evaluators=["numerai"], evaluator_config={"numerai": {...}})

(with `evaluators="numerai"`, a string, MLflow takes the flat `evaluator_config={...}`.)

The model gets the whole frame (id index, `era`, `data_type`, every feature) without the target
columns (every column whose name starts with "target") and without a meta-model column, like a
live frame. Its predictions are scored with `mlflow_numerai.scoring`, era by era.

Logged to the run (names in docs/ARCHITECTURE.md): `numerai_corr_mean`, `numerai_corr_std`,
`numerai_corr_sharpe`, `numerai_corr_max_drawdown`; `mmc_mean`, `mmc_std`, `mmc_sharpe` when a
meta model is given; `fnc_mean`, `fnc_sharpe` when `feature_neutral` is on (each of these for
every target, suffixed `_<target>` for targets other than the main one, the `targets=` of
`evaluate`); `max_feature_exposure` (mean over eras of the largest absolute correlation with a
feature); `n_eras`. Artifacts: `numerai_eval/per_era_corr.csv` (index era, one column per target),
`numerai_eval/per_era_mmc.csv` (with a meta model), `numerai_eval/summary.csv` and
`numerai_eval/cumulative_corr.png`.

`evaluator_config` keys: see `mlflow_numerai.evaluation.config`. This module is only the MLflow
interface: it parses the config and computes the scores with `mlflow_numerai.evaluation`, draws
the charts with `mlflow_numerai.plots`, then logs metrics, artifacts and the churn tag; the
churn reference (a registered model's earlier predictions) is found here, through the MLflow registry.

Data without the era column and no `evaluator_config` is not Numerai data: the evaluator then
steps aside with a warning (it may run under `evaluators=None` next to MLflow's own); with a
config, that is an error.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from mlflow_numerai.conventions import (
    CHURN_TAG,
    EVAL_DIR,
    EVAL_PREDICTIONS_FILE,
    PER_ERA_CORR_FILE,
    PER_ERA_DIAGNOSTICS_FILE,
    RUN_ID_TAG,
)
from mlflow_numerai.evaluation import (  # re-exported: entry points and tests import them from here
    CONFIG_KEYS,
    DEFAULT_TOP_BOTTOM,
    EvalConfig,
    NumeraiEvaluationError,
    NumeraiScores,
    model_input,
    numerai_scores,
    parse_config,
    predictions_series,
)
from mlflow_numerai.plots import plot_cumulative_corr, plot_diagnostics

PER_ERA_MMC_FILE = "per_era_mmc.csv"
SUMMARY_FILE = "summary.csv"
PLOT_FILE = "cumulative_corr.png"
DIAGNOSTICS_FILE = PER_ERA_DIAGNOSTICS_FILE
DIAGNOSTICS_PLOT_FILE = "diagnostics.png"
PREDICTIONS_FILE = EVAL_PREDICTIONS_FILE

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_TOP_BOTTOM",
    "EvalConfig",
    "NumeraiEvaluationError",
    "NumeraiEvaluator",
    "NumeraiScores",
    "model_input",
    "numerai_scores",
    "parse_config",
    "plot_cumulative_corr",
    "plot_diagnostics",
    "predictions_series",
    "previous_predictions",
]


def previous_predictions(churn_model: str, frame: pd.DataFrame, cfg: EvalConfig) -> tuple[pd.Series | None, str]:
    """The predictions of the registered model's @champion (else its latest version) to score
    churn against, and a note saying which (or why there are none). Read from the version's
    run (`numerai_eval/predictions.parquet`), else the version's model is run on the data."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        try:
            mv, which = client.get_model_version_by_alias(churn_model, "champion"), "@champion"
        except Exception:
            versions = client.search_model_versions(f"name='{churn_model}'")
            if not versions:
                return None, f"churn skipped: {churn_model!r} has no registered version yet"
            mv, which = max(versions, key=lambda v: int(v.version)), "latest version"
    except Exception as err:  # registry unreachable or no such model
        return None, f"churn skipped: no registered model {churn_model!r} ({type(err).__name__})"
    label = f"{churn_model}/{mv.version} ({which})"
    run_id = (mv.tags or {}).get(RUN_ID_TAG) or mv.run_id
    if run_id:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{EVAL_DIR}/{PREDICTIONS_FILE}")
            return pd.read_parquet(local)["prediction"], f"churn against {label}, from its evaluation"
        except Exception:
            pass
    try:
        model = mlflow.pyfunc.load_model(f"models:/{churn_model}/{mv.version}")
        output = model.predict(model_input(frame, cfg))
        return predictions_series(output, frame.index), f"churn against {label}, predicted now"
    except Exception as err:
        return None, f"churn skipped: {label} could not predict ({type(err).__name__}: {str(err)[:200]})"


class NumeraiEvaluator(ModelEvaluator):
    """Numerai's per-era scores for a regressor, as an MLflow evaluator plugin."""

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type == "regressor"

    def evaluate(
        self,
        *,
        model_type,
        dataset,
        run_id,
        evaluator_config,
        model=None,
        extra_metrics=None,
        custom_artifacts=None,
        predictions=None,
        **kwargs,
    ):
        import mlflow
        from mlflow.models.evaluation.artifacts import CsvEvaluationArtifact, ImageEvaluationArtifact

        features = dataset.features_data
        if not isinstance(features, pd.DataFrame):
            raise NumeraiEvaluationError("the numerai evaluator needs a pandas DataFrame as data")
        main_target = getattr(dataset, "targets_name", None)
        main_target = main_target if isinstance(main_target, str) else "target"
        era_col = (evaluator_config or {}).get("era_col", "era")
        if era_col not in features.columns and not evaluator_config:
            warnings.warn(
                f"numerai evaluator skipped: the data has no {era_col!r} column (not Numerai data; "
                "set evaluator_config={'era_col': ...} if its era column has another name)",
                UserWarning,
                stacklevel=2,
            )
            return None
        if dataset.labels_data is None:
            raise NumeraiEvaluationError("the numerai evaluator needs targets (evaluate(..., targets='target'))")
        frame = features.copy(deep=False)
        frame[main_target] = np.asarray(dataset.labels_data)
        cfg = parse_config(evaluator_config, frame, main_target)

        if model is not None:
            output = model.predict(model_input(frame, cfg))
        elif dataset.predictions_data is not None:
            output = dataset.predictions_data
        else:
            raise NumeraiEvaluationError("nothing to evaluate: no model and no predictions column")
        preds = predictions_series(output, frame.index, predictions)
        previous, churn_note = cfg.previous_predictions, "churn against the given previous_predictions"
        if previous is None and cfg.churn_model:
            previous, churn_note = previous_predictions(cfg.churn_model, frame, cfg)
        elif previous is None:
            churn_note = "churn skipped: the run registers no model (evaluator_config['churn_model'])"
        scores = numerai_scores(preds, frame, cfg, previous)
        if "churn_n_ids" in scores.metrics:
            churn_note += f" on {int(scores.metrics['churn_n_ids'])} shared ids"
        for note in [churn_note, *scores.notes]:
            warnings.warn(f"numerai evaluator: {note}", UserWarning, stacklevel=2)

        client = mlflow.MlflowClient()
        artifact_uri = client.get_run(run_id).info.artifact_uri.rstrip("/")
        artifacts = {}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / EVAL_DIR
            out.mkdir()
            scores.per_era_corr.to_csv(out / PER_ERA_CORR_FILE)
            scores.summary.to_csv(out / SUMMARY_FILE, index=False)
            scores.per_era.to_csv(out / DIAGNOSTICS_FILE)
            preds.to_frame().to_parquet(out / PREDICTIONS_FILE)  # churn of the next version reads it
            if scores.per_era_mmc is not None:
                scores.per_era_mmc.to_csv(out / PER_ERA_MMC_FILE)
            plot_cumulative_corr(scores.per_era_corr, out / PLOT_FILE, scores.per_era_mmc)
            plot_diagnostics(scores.per_era, out / DIAGNOSTICS_PLOT_FILE, f"diagnostics ({cfg.targets[0]})")
            # everything computed first: a failure above logs nothing
            mlflow.log_metrics(scores.metrics, run_id=run_id, model_id=kwargs.get("model_id"))
            client.set_tag(run_id, CHURN_TAG, churn_note)
            client.log_artifacts(run_id, str(out), EVAL_DIR)
            from PIL import Image

            plots = {}
            for key, name in (("cumulative_corr", PLOT_FILE), ("diagnostics", DIAGNOSTICS_PLOT_FILE)):
                with Image.open(out / name) as image:
                    image.load()
                    plots[key] = image.copy()
        uri = f"{artifact_uri}/{EVAL_DIR}"
        artifacts["per_era_corr"] = CsvEvaluationArtifact(
            f"{uri}/{PER_ERA_CORR_FILE}", scores.per_era_corr.reset_index()
        )
        artifacts["per_era_diagnostics"] = CsvEvaluationArtifact(
            f"{uri}/{DIAGNOSTICS_FILE}", scores.per_era.reset_index()
        )
        artifacts["summary"] = CsvEvaluationArtifact(f"{uri}/{SUMMARY_FILE}", scores.summary)
        if scores.per_era_mmc is not None:
            artifacts["per_era_mmc"] = CsvEvaluationArtifact(
                f"{uri}/{PER_ERA_MMC_FILE}", scores.per_era_mmc.reset_index()
            )
        artifacts["cumulative_corr"] = ImageEvaluationArtifact(f"{uri}/{PLOT_FILE}", plots["cumulative_corr"])
        artifacts["diagnostics"] = ImageEvaluationArtifact(f"{uri}/{DIAGNOSTICS_PLOT_FILE}", plots["diagnostics"])
        return EvaluationResult(metrics=scores.metrics, artifacts=artifacts, run_id=run_id)
