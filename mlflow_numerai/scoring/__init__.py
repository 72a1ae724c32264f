"""Numerai's scoring metrics, vectorized over eras and over many prediction columns.

The definitions are those of Numerai's `numerai-tools` (`numerai_tools/scoring.py`), and its
names come first here. Each metric is a composition of named transforms (``transforms``):

* ``tie_kept_rank``: ``(rank(method="average") - 0.5) / count`` per column;
* ``gaussianize``: the normal percent point function (``scipy.stats.norm.ppf``) of that rank;
* ``power``: ``sign(x) * |x| ** 1.5``; ``orthogonalize``; ``neutralize`` (least squares with an
  intercept);
* ``numerai_corr``: center the target on its mean, keep the ids present in both predictions and
  target, tie-kept rank + gaussianize the predictions, raise predictions and target to the power
  1.5 keeping the sign, then Pearson correlation per prediction column;
* ``correlation_contribution`` (MMC): tie-kept rank + gaussianize predictions and meta model,
  orthogonalize the predictions to the meta model, then covariance with the centered target
  (scaled to buckets -2..2 when it lies in [0, 1]);
* ``feature_neutral_corr``: tie-kept rank + gaussianize, neutralize to the features (least squares
  with an intercept), then ``numerai_corr``.

Their ``per_era_*`` forms score every column in every era at once (``correlation``, ``features``)
with fast numpy kernels (``_kernels``) over one era layout (``eras``); results equal the pandas
recipe to ~1e-15. Summaries of per-era scores are in ``summaries``, the Bayesian-only
uncertainty metrics (burn AUC, JS divergence) in ``uncertainty``, the input checks in ``checks``.
Every public name is importable from here: ``from mlflow_numerai import scoring``.

Edge cases (never a silent wrong number):

* bad input (duplicate ids, NaN or infinite predictions, non-numeric columns, eras that do not
  cover the predictions, no id shared with the target, too many ids dropped) raises
  :class:`ScoringError` (an ``InputError``, so a ``ValueError``) naming the column or parameter;
* a prediction column that is constant over the whole input raises (``on_constant="raise"``, the
  default) or scores NaN (``on_constant="nan"``, for many posterior samples at once);
* within one era, a constant prediction column, a constant target or a single row has no defined
  correlation: that cell is NaN;
* an era with no target at all (not yet resolved) is a NaN row, with a warning;
* inputs are never modified (numerai-tools' ``numerai_corr`` centers the caller's target in place).

Summaries (``score_summary``, ``sharpe``, ``max_drawdown``) skip NaN eras.
"""

from __future__ import annotations

import pandas as pd

from mlflow_numerai.scoring.checks import (
    DEFAULT_MAX_FILTERED_RATIO,
    OnConstant,
    ScoringError,
    _check_predictions,
    _check_target,
)
from mlflow_numerai.scoring.correlation import (
    per_era_bmc,
    per_era_churn,
    per_era_corr_with,
    per_era_correlation_contribution,
    per_era_numerai_corr,
)
from mlflow_numerai.scoring.features import (
    feature_exposure,
    max_feature_exposure,
    per_era_feature_neutral_corr,
    per_era_max_feature_exposure,
)
from mlflow_numerai.scoring.summaries import (
    DEFAULT_PAYOUT_PRESET,
    PAYOUT_PRESETS,
    PayoutPreset,
    autocorr_penalty,
    max_drawdown,
    payout_estimate,
    positive_share,
    score_summary,
    sharpe,
    smart_sharpe,
)
from mlflow_numerai.scoring.transforms import (
    gaussianize,
    neutralize,
    orthogonalize,
    power,
    rank_gauss_pow,
    tie_kept_rank,
)
from mlflow_numerai.scoring.uncertainty import burn_auc, burn_roc_curve, js_divergence_normal

__all__ = [
    "DEFAULT_MAX_FILTERED_RATIO",
    "DEFAULT_PAYOUT_PRESET",
    "PAYOUT_PRESETS",
    "PayoutPreset",
    "ScoringError",
    "autocorr_penalty",
    "burn_auc",
    "burn_roc_curve",
    "correlation_contribution",
    "feature_exposure",
    "feature_neutral_corr",
    "gaussianize",
    "js_divergence_normal",
    "max_drawdown",
    "max_feature_exposure",
    "neutralize",
    "numerai_corr",
    "orthogonalize",
    "payout_estimate",
    "per_era_bmc",
    "per_era_churn",
    "per_era_corr_with",
    "per_era_correlation_contribution",
    "per_era_feature_neutral_corr",
    "per_era_max_feature_exposure",
    "per_era_numerai_corr",
    "positive_share",
    "power",
    "rank_gauss_pow",
    "score_summary",
    "sharpe",
    "smart_sharpe",
    "tie_kept_rank",
]


# --------------------------------------------------------------------------------------------
# The one-era metrics, with numerai-tools' names and signatures
# --------------------------------------------------------------------------------------------


def numerai_corr(
    predictions: pd.DataFrame,
    targets: pd.Series,
    *,
    max_filtered_ratio: float | None = DEFAULT_MAX_FILTERED_RATIO,
    on_constant: OnConstant = "raise",
    top_bottom: int | None = None,
) -> pd.Series:
    """Numerai corr of each prediction column with the target over all rows (one era):
    ``pearson(power(gaussianize(tie_kept_rank(predictions))), power(targets - mean))`` on the
    ids both have (see :func:`per_era_numerai_corr`)."""
    predictions = _check_predictions(predictions)
    targets = _check_target(targets)
    single = pd.Series(0, index=predictions.index.union(targets.index))
    per_era = per_era_numerai_corr(
        predictions, targets, single, max_filtered_ratio=max_filtered_ratio, on_constant=on_constant,
        top_bottom=top_bottom,
    )
    return per_era.iloc[0].rename("numerai_corr")


def correlation_contribution(
    predictions: pd.DataFrame,
    meta_model: pd.Series,
    targets: pd.Series,
    *,
    max_filtered_ratio: float | None = DEFAULT_MAX_FILTERED_RATIO,
    on_constant: OnConstant = "raise",
    top_bottom: int | None = None,
) -> pd.Series:
    """MMC of each prediction column against ``meta_model`` over all rows (one era): the
    covariance of ``orthogonalize(gaussianize(tie_kept_rank(predictions)), gaussianized meta
    model)`` with the centered target (see :func:`per_era_correlation_contribution`)."""
    predictions = _check_predictions(predictions)
    targets = _check_target(targets)
    single = pd.Series(0, index=predictions.index.union(targets.index))
    per_era = per_era_correlation_contribution(
        predictions, meta_model, targets, single, max_filtered_ratio=max_filtered_ratio, on_constant=on_constant,
        top_bottom=top_bottom,
    )
    return per_era.iloc[0].rename("mmc")


def feature_neutral_corr(
    predictions: pd.DataFrame,
    features: pd.DataFrame,
    targets: pd.Series,
    *,
    max_filtered_ratio: float | None = DEFAULT_MAX_FILTERED_RATIO,
    on_constant: OnConstant = "raise",
    top_bottom: int | None = None,
) -> pd.Series:
    """Feature-neutral corr of each column over all rows (one era), as numerai-tools:
    ``numerai_corr(neutralize(gaussianize(tie_kept_rank(predictions)), features), targets)``
    (see :func:`per_era_feature_neutral_corr`)."""
    predictions = _check_predictions(predictions)
    targets = _check_target(targets)
    single = pd.Series(0, index=predictions.index.union(targets.index))
    per_era = per_era_feature_neutral_corr(
        predictions, features, targets, single, max_filtered_ratio=max_filtered_ratio, on_constant=on_constant,
        top_bottom=top_bottom,
    )
    return per_era.iloc[0].rename("feature_neutral_corr")
