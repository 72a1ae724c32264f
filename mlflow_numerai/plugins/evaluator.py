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

`evaluator_config` keys:

* `era_col` (default "era"): the era column of the data;
* `targets`: more target columns to score (a name or a list); the main target comes first;
* `meta_model`: the meta model or a benchmark model for MMC, either a column of the data or a
  `pd.Series` indexed by id (e.g. a column of `validation_benchmark_models.parquet`);
* `feature_cols` (a list), or `feature_set` with `data_dir` (read from `features.json`): the
  features for max feature exposure; default every data column starting with "feature_";
  `[]` turns exposure off; a NaN feature counts as the middle bin 2 (as in the models);
* `feature_neutral` (default False): also score feature-neutral corr (slower: a least-squares
  fit per era);
* `max_filtered_ratio` (default 0.2, as numerai-tools): the largest share of an era's ids that
  may lack a target (None: no check).

Data without the era column and no `evaluator_config` is not Numerai data: the evaluator then
steps aside with a warning (it may run under `evaluators=None` next to MLflow's own); with a
config, that is an error.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from mlflow_numerai import scoring
from mlflow_numerai.data.cache import MIDDLE_BIN  # a NaN feature counts as that, as in the models

EVAL_DIR = "numerai_eval"
PER_ERA_CORR_FILE = "per_era_corr.csv"
PER_ERA_MMC_FILE = "per_era_mmc.csv"
SUMMARY_FILE = "summary.csv"
PLOT_FILE = "cumulative_corr.png"
CONFIG_KEYS = ("era_col", "targets", "meta_model", "feature_cols", "feature_set", "data_dir",
               "feature_neutral", "max_filtered_ratio")


class NumeraiEvaluationError(ValueError):
    """The data, the config or the model's output cannot be evaluated as given."""


@dataclass
class EvalConfig:
    """A validated `evaluator_config`, resolved against one data frame."""

    era_col: str = "era"
    targets: list[str] = field(default_factory=list)  # main target first
    meta_model: pd.Series | None = None
    meta_model_col: str | None = None  # when the meta model is a column of the data
    feature_cols: list[str] = field(default_factory=list)
    feature_neutral: bool = False
    max_filtered_ratio: float | None = scoring.DEFAULT_MAX_FILTERED_RATIO


def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise NumeraiEvaluationError(f"evaluator_config[{key!r}] must be a column name or a list of names, got {value!r}")


def parse_config(config: dict | None, frame: pd.DataFrame, main_target: str) -> EvalConfig:
    """Check `config` against the data `frame` (which holds every column, the main target too)."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise NumeraiEvaluationError(f"unknown evaluator_config key(s) {unknown}; known keys: {list(CONFIG_KEYS)}")
    cfg = EvalConfig()
    cfg.era_col = config.get("era_col", "era")
    if not isinstance(cfg.era_col, str) or cfg.era_col not in frame.columns:
        raise NumeraiEvaluationError(f"era column {cfg.era_col!r} is not in the data (set evaluator_config['era_col'])")
    targets = [main_target] + [t for t in _as_list(config.get("targets"), "targets") if t != main_target]
    missing = [t for t in targets if t not in frame.columns]
    if missing:
        raise NumeraiEvaluationError(f"target column(s) {missing} are not in the data")
    cfg.targets = targets

    meta = config.get("meta_model")
    if isinstance(meta, str):
        if meta not in frame.columns:
            raise NumeraiEvaluationError(f"meta_model column {meta!r} is not in the data")
        cfg.meta_model_col, cfg.meta_model = meta, frame[meta]
    elif isinstance(meta, pd.DataFrame):
        if meta.shape[1] != 1:
            raise NumeraiEvaluationError(
                f"meta_model must be one column; got a DataFrame with columns {list(meta.columns)}: pick one"
            )
        cfg.meta_model = meta.iloc[:, 0]
    elif isinstance(meta, pd.Series):
        cfg.meta_model = meta
    elif meta is not None:
        raise NumeraiEvaluationError(f"meta_model must be a column name or a pandas Series indexed by id, got {type(meta).__name__}")

    if "feature_cols" in config:
        cfg.feature_cols = _as_list(config["feature_cols"], "feature_cols")
    elif "feature_set" in config:
        if "data_dir" not in config:
            raise NumeraiEvaluationError("evaluator_config['feature_set'] needs evaluator_config['data_dir'] (features.json)")
        from mlflow_numerai.data import io as data_io

        cfg.feature_cols = data_io.feature_columns(data_io.resolve_data_dir(config["data_dir"]), config["feature_set"])
    else:
        cfg.feature_cols = [c for c in frame.columns if isinstance(c, str) and c.startswith("feature_")]
    missing = [c for c in cfg.feature_cols if c not in frame.columns]
    if missing:
        raise NumeraiEvaluationError(f"{len(missing)} feature column(s) are not in the data, e.g. {missing[:3]}")

    cfg.feature_neutral = bool(config.get("feature_neutral", False))
    if cfg.feature_neutral and not cfg.feature_cols:
        raise NumeraiEvaluationError("feature_neutral needs feature columns (feature_cols or feature_set)")
    ratio = config.get("max_filtered_ratio", scoring.DEFAULT_MAX_FILTERED_RATIO)
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0 <= ratio <= 1):
        raise NumeraiEvaluationError(f"max_filtered_ratio must be a number in [0, 1] or None, got {ratio!r}")
    cfg.max_filtered_ratio = ratio
    return cfg


def model_input(frame: pd.DataFrame, cfg: EvalConfig) -> pd.DataFrame:
    """What the model sees: the frame without target columns and the meta-model column."""
    drop = [c for c in frame.columns if (isinstance(c, str) and c.startswith("target")) or c in cfg.targets]
    if cfg.meta_model_col is not None:
        drop.append(cfg.meta_model_col)
    return frame.drop(columns=drop)


def predictions_series(output: Any, index: pd.Index, column: str | None = None) -> pd.Series:
    """The model's output as one float Series indexed like the input.

    Accepts a DataFrame (column `prediction`, the `predictions` column named to `evaluate`, or
    its only column), a Series or a 1-D array. Indexed output must carry the input's ids."""
    if isinstance(output, pd.DataFrame):
        if column is not None and column in output.columns:
            output = output[column]
        elif "prediction" in output.columns:
            output = output["prediction"]
        elif output.shape[1] == 1:
            output = output.iloc[:, 0]
        else:
            raise NumeraiEvaluationError(
                f"the model returned columns {list(output.columns)[:5]}; expected one column 'prediction' "
                "(or name one with evaluate(..., predictions=...))"
            )
    if isinstance(output, pd.Series):
        if output.index.equals(index):
            series = output
        elif len(output) == len(index) and output.index.is_unique and set(output.index) == set(index):
            series = output.reindex(index)
        elif len(output) == len(index) and isinstance(output.index, pd.RangeIndex):
            series = pd.Series(output.to_numpy(), index=index)  # positional output of a generic model
        else:
            raise NumeraiEvaluationError(
                f"the model's predictions are indexed by {len(output)} ids that are not the input's "
                f"{len(index)} ids (e.g. {list(output.index[:3])} vs {list(index[:3])})"
            )
    else:
        values = np.asarray(output)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or len(values) != len(index):
            raise NumeraiEvaluationError(
                f"the model returned shape {values.shape}; expected {len(index)} predictions, one per row"
            )
        series = pd.Series(values, index=index)
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise NumeraiEvaluationError(f"the model's predictions must be numbers, got dtype {series.dtype}")
    series = series.astype(np.float64).rename("prediction")
    n_bad = int((~np.isfinite(series.to_numpy())).sum())
    if n_bad:
        raise NumeraiEvaluationError(f"the model returned {n_bad} NaN or infinite predictions")
    return series


def _suffix(target: str, main_target: str) -> str:
    return "" if target == main_target else f"_{target}"


_LOGGED_SUMMARIES = {
    "numerai_corr": ("mean", "std", "sharpe", "max_drawdown"),
    "mmc": ("mean", "std", "sharpe"),
    "fnc": ("mean", "sharpe"),
}


@dataclass
class NumeraiScores:
    """Everything the evaluator logs, computed from predictions and data only."""

    metrics: dict[str, float]
    per_era_corr: pd.DataFrame  # eras x targets
    per_era_mmc: pd.DataFrame | None  # eras x targets
    summary: pd.DataFrame  # one row per (score, target)


def numerai_scores(predictions: pd.Series, frame: pd.DataFrame, cfg: EvalConfig) -> NumeraiScores:
    """Per-era corr (and MMC, FNC, exposure) of `predictions` on `frame`, with their summaries."""
    main = cfg.targets[0]
    eras = frame[cfg.era_col]
    preds = predictions.to_frame("prediction")
    kw = {"max_filtered_ratio": cfg.max_filtered_ratio}
    corr, mmc, fnc = {}, {}, {}
    for target in cfg.targets:
        corr[target] = scoring.per_era_numerai_corr(preds, frame[target], eras, **kw)["prediction"]
        if cfg.meta_model is not None:
            mmc[target] = scoring.per_era_correlation_contribution(
                preds, cfg.meta_model, frame[target], eras, **kw
            )["prediction"]
        if cfg.feature_neutral:
            fnc[target] = scoring.per_era_feature_neutral_corr(
                preds, frame[cfg.feature_cols], frame[target], eras, nan_fill=MIDDLE_BIN, **kw
            )["prediction"]
    per_era_corr = pd.DataFrame(corr).rename_axis("era")
    per_era_mmc = pd.DataFrame(mmc).rename_axis("era") if mmc else None

    metrics: dict[str, float] = {"n_eras": float(per_era_corr[main].notna().sum())}
    rows = []
    for name, table in (("numerai_corr", per_era_corr), ("mmc", per_era_mmc), ("fnc", pd.DataFrame(fnc) if fnc else None)):
        if table is None:
            continue
        summary = scoring.score_summary(table)
        for target, row in summary.iterrows():
            rows.append({"score": name, "target": target, **row.to_dict()})
            for key in _LOGGED_SUMMARIES[name]:
                metrics[f"{name}_{key}{_suffix(target, main)}"] = float(row[key])
    if cfg.feature_cols:
        exposure = scoring.max_feature_exposure(preds, frame[cfg.feature_cols], eras, nan_fill=MIDDLE_BIN)
        metrics["max_feature_exposure"] = float(exposure["prediction"])
    return NumeraiScores(metrics, per_era_corr, per_era_mmc, pd.DataFrame(rows))


def plot_cumulative_corr(per_era_corr: pd.DataFrame, path: str | os.PathLike, per_era_mmc: pd.DataFrame | None = None) -> Path:
    """Per-era corr of the main target (bars) and the cumulative corr of every target (lines)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    main = per_era_corr.columns[0]
    x = np.arange(len(per_era_corr))
    fig = Figure(figsize=(10, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    values = per_era_corr[main].fillna(0).to_numpy()
    ax1.bar(x, values, color=np.where(values >= 0, "tab:green", "tab:red"))
    ax1.axhline(0, color="black", linewidth=0.5)
    ax1.set_ylabel(f"corr ({main})")
    for target in per_era_corr.columns:
        ax2.plot(x, per_era_corr[target].fillna(0).cumsum().to_numpy(), label=f"corr {target}")
    if per_era_mmc is not None:
        for target in per_era_mmc.columns:
            ax2.plot(x, per_era_mmc[target].fillna(0).cumsum().to_numpy(), linestyle="--", label=f"mmc {target}")
    ax2.axhline(0, color="black", linewidth=0.5)
    ax2.set_ylabel("cumulative")
    ax2.set_xlabel("era")
    ax2.legend(loc="best", fontsize="small")
    step = max(1, len(x) // 12)
    ax2.set_xticks(x[::step], [str(e) for e in per_era_corr.index[::step]], rotation=45)
    fig.suptitle("numerai evaluation: per-era and cumulative corr")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


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
        scores = numerai_scores(preds, frame, cfg)

        client = mlflow.MlflowClient()
        artifact_uri = client.get_run(run_id).info.artifact_uri.rstrip("/")
        artifacts = {}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / EVAL_DIR
            out.mkdir()
            scores.per_era_corr.to_csv(out / PER_ERA_CORR_FILE)
            scores.summary.to_csv(out / SUMMARY_FILE, index=False)
            if scores.per_era_mmc is not None:
                scores.per_era_mmc.to_csv(out / PER_ERA_MMC_FILE)
            plot_cumulative_corr(scores.per_era_corr, out / PLOT_FILE, scores.per_era_mmc)
            # everything computed first: a failure above logs nothing
            mlflow.log_metrics(scores.metrics, run_id=run_id, model_id=kwargs.get("model_id"))
            client.log_artifacts(run_id, str(out), EVAL_DIR)
            from PIL import Image

            with Image.open(out / PLOT_FILE) as image:
                image.load()
                plot = image.copy()
        uri = f"{artifact_uri}/{EVAL_DIR}"
        artifacts["per_era_corr"] = CsvEvaluationArtifact(f"{uri}/{PER_ERA_CORR_FILE}", scores.per_era_corr.reset_index())
        artifacts["summary"] = CsvEvaluationArtifact(f"{uri}/{SUMMARY_FILE}", scores.summary)
        if scores.per_era_mmc is not None:
            artifacts["per_era_mmc"] = CsvEvaluationArtifact(f"{uri}/{PER_ERA_MMC_FILE}", scores.per_era_mmc.reset_index())
        artifacts["cumulative_corr"] = ImageEvaluationArtifact(f"{uri}/{PLOT_FILE}", plot)
        return EvaluationResult(metrics=scores.metrics, artifacts=artifacts, run_id=run_id)
