"""Evaluation of one model's predictions on Numerai data, without MLflow (layer below plugins).

- `config`: `parse_config` (an `evaluator_config` checked against the data: `EvalConfig`),
  `model_input` (what the model sees) and `predictions_series` (the model's output, checked);
- `scores`: `numerai_scores`, every per-era diagnostic and summary metric the `numerai` evaluator
  plugin (`plugins/evaluator.py`) logs.

May import `scoring`, `data` and `conventions`; the plots are in `mlflow_numerai.plots`.
"""

from __future__ import annotations

from mlflow_numerai.evaluation.config import (
    CONFIG_KEYS,
    DEFAULT_TOP_BOTTOM,
    EvalConfig,
    NumeraiEvaluationError,
    model_input,
    parse_config,
    predictions_series,
)
from mlflow_numerai.evaluation.scores import NumeraiScores, numerai_scores

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_TOP_BOTTOM",
    "EvalConfig",
    "NumeraiEvaluationError",
    "NumeraiScores",
    "model_input",
    "numerai_scores",
    "parse_config",
    "predictions_series",
]
