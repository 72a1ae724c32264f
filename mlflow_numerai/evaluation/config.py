"""The `numerai` evaluator's configuration and the model's input and output, checked.

`parse_config` turns an `evaluator_config` into an :class:`EvalConfig` resolved against one data
frame; `model_input` is what the model sees (no target nor meta-model column, like a live frame);
`predictions_series` turns the model's output into one float Series indexed like the input. Bad
input raises :class:`NumeraiEvaluationError` (an ``InputError``, so a ``ValueError``).

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_numerai import scoring
from mlflow_numerai.data import io as data_io
from mlflow_numerai.errors import InputError

DEFAULT_TOP_BOTTOM = 200  # Numerai's TB200
CONFIG_KEYS = ("era_col", "targets", "meta_model", "benchmark", "feature_cols", "feature_set", "data_dir",
               "feature_neutral", "max_filtered_ratio", "top_bottom", "churn_model", "previous_predictions",
               "payout_preset")


class NumeraiEvaluationError(InputError):
    """The data, the config or the model's output cannot be evaluated as given."""


@dataclass
class EvalConfig:
    """A validated `evaluator_config`, resolved against one data frame."""

    era_col: str = "era"
    targets: list[str] = field(default_factory=list)  # main target first
    meta_model: pd.Series | None = None
    meta_model_col: str | None = None  # when the meta model is a column of the data
    benchmark: pd.Series | None = None
    benchmark_col: str | None = None
    feature_cols: list[str] = field(default_factory=list)
    feature_neutral: bool = True
    max_filtered_ratio: float | None = scoring.DEFAULT_MAX_FILTERED_RATIO
    top_bottom: int | None = DEFAULT_TOP_BOTTOM
    churn_model: str | None = None  # registered model name: churn against @champion or the latest version
    previous_predictions: pd.Series | None = None  # or given directly
    payout_preset: str = scoring.DEFAULT_PAYOUT_PRESET


def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise NumeraiEvaluationError(f"evaluator_config[{key!r}] must be a column name or a list of names, got {value!r}")


def _series_option(value: Any, frame: pd.DataFrame, key: str) -> tuple[str | None, pd.Series | None]:
    """(column name, Series) of a config value that is a column of the data or a Series by id."""
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in frame.columns:
            raise NumeraiEvaluationError(f"{key} column {value!r} is not in the data")
        return value, frame[value]
    if isinstance(value, pd.DataFrame):
        if value.shape[1] != 1:
            raise NumeraiEvaluationError(
                f"{key} must be one column; got a DataFrame with columns {list(value.columns)}: pick one"
            )
        return None, value.iloc[:, 0]
    if isinstance(value, pd.Series):
        return None, value
    raise NumeraiEvaluationError(
        f"{key} must be a column name or a pandas Series indexed by id, got {type(value).__name__}"
    )


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

    cfg.meta_model_col, cfg.meta_model = _series_option(config.get("meta_model"), frame, "meta_model")
    cfg.benchmark_col, cfg.benchmark = _series_option(config.get("benchmark"), frame, "benchmark")
    _, cfg.previous_predictions = _series_option(config.get("previous_predictions"), frame, "previous_predictions")
    churn_model = config.get("churn_model")
    if churn_model is not None and not (isinstance(churn_model, str) and churn_model.strip()):
        raise NumeraiEvaluationError(f"churn_model must be a registered model name, got {churn_model!r}")
    cfg.churn_model = churn_model
    tb = config.get("top_bottom", DEFAULT_TOP_BOTTOM)
    if tb is not None and (isinstance(tb, bool) or not isinstance(tb, int) or tb < 1):
        raise NumeraiEvaluationError(f"top_bottom must be a positive integer or None, got {tb!r}")
    cfg.top_bottom = tb
    preset = config.get("payout_preset", scoring.DEFAULT_PAYOUT_PRESET)
    if preset not in scoring.PAYOUT_PRESETS:
        raise NumeraiEvaluationError(f"payout_preset {preset!r} is not one of {sorted(scoring.PAYOUT_PRESETS)}")
    cfg.payout_preset = preset

    if "feature_cols" in config:
        cfg.feature_cols = _as_list(config["feature_cols"], "feature_cols")
    elif "feature_set" in config:
        if "data_dir" not in config:
            raise NumeraiEvaluationError(
                "evaluator_config['feature_set'] needs evaluator_config['data_dir'] (features.json)"
            )
        cfg.feature_cols = data_io.feature_columns(data_io.resolve_data_dir(config["data_dir"]), config["feature_set"])
    else:
        cfg.feature_cols = [c for c in frame.columns if isinstance(c, str) and c.startswith("feature_")]
    missing = [c for c in cfg.feature_cols if c not in frame.columns]
    if missing:
        raise NumeraiEvaluationError(f"{len(missing)} feature column(s) are not in the data, e.g. {missing[:3]}")

    cfg.feature_neutral = bool(config.get("feature_neutral", bool(cfg.feature_cols)))
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
    drop += [c for c in (cfg.meta_model_col, cfg.benchmark_col) if c is not None and c not in drop]
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
