"""Per-era correlation metrics: numerai corr, MMC / BMC, correlation with another model, churn.

Each function scores every prediction column in every era (a DataFrame eras x columns) with the
kernels of ``_kernels`` over the era layout of ``eras``; the one-era forms with numerai-tools'
names (``numerai_corr``, ``correlation_contribution``) are in the package's ``__init__``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlflow_numerai.scoring._kernels import (
    _column_chunks,
    _gauss_rows,
    _pearson_rows,
    _pearson_sorted,
    _sort_columns,
    _SortedTransform,
    _tb_positions,
    _unsort,
)
from mlflow_numerai.scoring.checks import (
    DEFAULT_MAX_FILTERED_RATIO,
    OnConstant,
    ScoringError,
    _check_coverage,
    _check_not_constant,
    _check_on_constant,
    _check_predictions,
    _check_target,
    _check_top_bottom,
    _examples,
)
from mlflow_numerai.scoring.eras import _era_block, _EraLayout, _float_values, _progress, _warn_small_eras
from mlflow_numerai.scoring.transforms import power


def per_era_numerai_corr(
    predictions: pd.DataFrame,
    targets: pd.Series,
    eras: pd.Series,
    *,
    max_filtered_ratio: float | None = DEFAULT_MAX_FILTERED_RATIO,
    on_constant: OnConstant = "raise",
    progress: bool = False,
    top_bottom: int | None = None,
) -> pd.DataFrame:
    """Numerai corr of every prediction column in every era: a DataFrame (eras x columns).

    ``predictions`` (ids x columns), ``targets`` and ``eras`` are indexed by id; ``eras`` must
    give the era of every prediction id. Per era this equals ``numerai_corr`` applied to that
    era's predictions and that era's targets. Ids without a target are not scored; an era that
    keeps fewer than ``1 - max_filtered_ratio`` of its ids raises (None: no check).
    ``top_bottom=N``: as numerai-tools, the correlation over the N lowest and N highest
    transformed predictions of each era (ties broken by id); an era with fewer than 2 N rows is
    NaN. See the module docstring for other NaN cells.
    """
    predictions = _check_predictions(predictions)
    targets = _check_target(targets)
    _check_on_constant(on_constant)
    tb = _check_top_bottom(top_bottom)
    _check_not_constant(predictions, on_constant)
    layout = _EraLayout(predictions, targets, eras, max_filtered_ratio, by_id=tb is not None)
    values = _float_values(predictions)
    target_pow = power(layout.target, 1.5)
    out = np.full((len(layout.labels), predictions.shape[1]), np.nan)
    small = []
    for e, rows in _progress(layout, progress, len(layout.labels), "numerai_corr"):
        t = target_pow[rows]
        if len(rows) < 2 or np.all(t == t[0]):
            continue  # one row or a constant target: no correlation (NaN)
        if tb is not None and len(rows) < 2 * tb:
            small.append(e)
            continue
        block = _era_block(values, rows)
        for cols in _column_chunks(block.shape[1]):
            order, ties = _sort_columns(block[:, cols])
            g = _SortedTransform(ties, 1.5)
            if tb is None:
                corr = _pearson_sorted(g, order, t)
            else:
                sel = _tb_positions(len(rows), tb)
                corr = _pearson_rows(g.dense()[:, sel], t[order[:, sel]])
            corr[g.constant] = np.nan
            out[e, cols] = corr
    _warn_small_eras(layout.labels, small, tb or 0)
    return pd.DataFrame(out, index=layout.labels, columns=predictions.columns)


def _mmc_target(t: np.ndarray) -> np.ndarray:
    """Target as numerai-tools scores MMC: times 4 when in [0, 1] (buckets), centered."""
    if (t >= 0).all() and (t <= 1).all():
        t = t * 4
    return t - t.mean()


def per_era_correlation_contribution(
    predictions: pd.DataFrame,
    meta_model: pd.Series,
    targets: pd.Series,
    eras: pd.Series,
    *,
    max_filtered_ratio: float | None = DEFAULT_MAX_FILTERED_RATIO,
    on_constant: OnConstant = "raise",
    progress: bool = False,
    top_bottom: int | None = None,
    name: str = "meta_model",
) -> pd.DataFrame:
    """MMC of every prediction column against ``meta_model`` in every era (eras x columns).

    Ids scored in an era are those with a prediction, a meta-model value and a target; a meta
    model covering fewer than ``1 - max_filtered_ratio`` of them raises, naming it (``name``).
    ``top_bottom=N``: as numerai-tools, the covariance over the N lowest and N highest
    predictions once orthogonalized to the meta model (ties broken by id)."""
    predictions = _check_predictions(predictions)
    targets = _check_target(targets)
    meta = _check_target(meta_model, name)
    _check_on_constant(on_constant)
    tb = _check_top_bottom(top_bottom)
    _check_not_constant(predictions, on_constant)
    meta_values = _check_coverage(meta, predictions, targets, eras, max_filtered_ratio, name)
    has_meta = ~np.isnan(meta_values)
    # the raw (uncentered) target of the kept rows: MMC centers it itself, after scaling
    raw_target = targets.reindex(predictions.index).to_numpy()
    layout = _EraLayout(predictions, targets, eras, max_filtered_ratio, extra_keep=has_meta, by_id=tb is not None)
    values = _float_values(predictions)
    out = np.full((len(layout.labels), predictions.shape[1]), np.nan)
    small = []
    for e, rows in _progress(layout, progress, len(layout.labels), "mmc"):
        meta_rows = meta_values[rows]
        if len(rows) < 2 or np.all(meta_rows == meta_rows[0]):
            continue  # one row or a constant meta model: nothing to orthogonalize against (NaN)
        if tb is not None and len(rows) < 2 * tb:
            small.append(e)
            continue
        m = _gauss_rows(meta_rows[:, None], None)[0]
        t = _mmc_target(raw_target[rows])
        block = _era_block(values, rows)
        for cols in _column_chunks(block.shape[1]):
            order, ties = _sort_columns(block[:, cols])
            p = _SortedTransform(ties, None)
            if tb is None:
                # t . (p - m (p . m) / (m . m)): the covariance of t with p orthogonalized to m
                mmc = (p.dot(t[order]) - (t @ m) * p.dot(m[order]) / (m @ m)) / len(rows)
            else:
                neutral = _unsort(p.dense() - m[order] * (p.dot(m[order]) / (m @ m))[:, None], order)
                pick = np.argsort(neutral, axis=1, kind="stable")[:, _tb_positions(len(rows), tb)]
                mmc = (np.take_along_axis(neutral, pick, axis=1) * t[pick]).sum(axis=1) / (2 * tb)
            mmc[p.constant] = np.nan
            out[e, cols] = mmc
    _warn_small_eras(layout.labels, small, tb or 0)
    return pd.DataFrame(out, index=layout.labels, columns=predictions.columns)


def per_era_bmc(
    predictions: pd.DataFrame,
    benchmark: pd.Series,
    targets: pd.Series,
    eras: pd.Series,
    **kwargs,
) -> pd.DataFrame:
    """BMC: :func:`per_era_correlation_contribution` against a benchmark model (a column of
    Numerai's ``validation_benchmark_models.parquet``) instead of the meta model."""
    kwargs.setdefault("name", "benchmark")
    return per_era_correlation_contribution(predictions, benchmark, targets, eras, **kwargs)


def per_era_corr_with(
    predictions: pd.DataFrame,
    other: pd.Series,
    eras: pd.Series,
    *,
    name: str = "meta_model",
    max_filtered_ratio: float | None = DEFAULT_MAX_FILTERED_RATIO,
    on_constant: OnConstant = "raise",
) -> pd.DataFrame:
    """Correlation of each prediction column with ``other`` (the meta model: CWMM; a benchmark)
    per era: Pearson of both tie-kept ranked and gaussianized, on the ids both have (numerai-
    tools' ``gaussian(tie_kept_rank(.))`` then ``pearson_correlation``). ``other`` must cover
    ``1 - max_filtered_ratio`` of the prediction ids in every era."""
    predictions = _check_predictions(predictions)
    other = _check_target(other, name)
    _check_on_constant(on_constant)
    _check_not_constant(predictions, on_constant)
    other_values = _check_coverage(
        other, predictions, pd.Series(0.0, index=predictions.index), eras, max_filtered_ratio, name
    )
    layout = _EraLayout(predictions, other, eras, None)
    values = _float_values(predictions)
    out = np.full((len(layout.labels), predictions.shape[1]), np.nan)
    for e, rows in layout:
        o = other_values[rows]
        if len(rows) < 2 or np.all(o == o[0]):
            continue
        m = _gauss_rows(o[:, None], None)[0]
        block = _era_block(values, rows)
        for cols in _column_chunks(block.shape[1]):
            order, ties = _sort_columns(block[:, cols])
            g = _SortedTransform(ties, None)
            corr = _pearson_sorted(g, order, m)
            corr[g.constant] = np.nan
            out[e, cols] = corr
    return pd.DataFrame(out, index=layout.labels, columns=predictions.columns)


def per_era_churn(
    predictions: pd.DataFrame,
    previous: pd.Series,
    eras: pd.Series,
    *,
    top_bottom: int | None = None,
) -> tuple[pd.DataFrame, int]:
    """Churn of each prediction column against ``previous`` (the same model's earlier
    predictions) per era, on the ids both have: ``1 - Spearman`` (numerai-tools' ``churn``); with
    ``top_bottom=N``, ``1 -`` the mean share of the N top and of the N bottom ids kept (ties
    broken by id). Returns the table (eras x columns) and the number of shared ids."""
    predictions = _check_predictions(predictions)
    previous = _check_target(previous, "previous")
    tb = _check_top_bottom(top_bottom)
    prev_values = previous.reindex(predictions.index).to_numpy()
    shared = ~np.isnan(prev_values)
    n_shared = int(shared.sum())
    if n_shared == 0:
        raise ScoringError(
            f"previous predictions share no id with the predictions (e.g. {_examples(previous.index)} vs "
            f"{_examples(predictions.index)})"
        )
    layout = _EraLayout(predictions, previous, eras, None, by_id=True)
    values = _float_values(predictions)
    out = np.full((len(layout.labels), predictions.shape[1]), np.nan)
    small = []
    for e, rows in layout:
        prev = prev_values[rows]
        if len(rows) < 2 or np.all(prev == prev[0]):
            continue
        if tb is not None and len(rows) < 2 * tb:
            small.append(e)
            continue
        block = _era_block(values, rows)
        prev_order, prev_ties = _sort_columns(prev[:, None])
        for cols in _column_chunks(block.shape[1]):
            order, ties = _sort_columns(block[:, cols])
            if tb is None:
                prev_rank = _unsort(_SortedTransform(prev_ties, "rank").dense(), prev_order)[0]
                g = _SortedTransform(ties, "rank")
                churn = 1.0 - _pearson_sorted(g, order, prev_rank)
                churn[g.constant] = np.nan
            else:
                n = len(rows)
                top = np.zeros(n, dtype=bool)
                top[prev_order[0, n - tb :]] = True
                bottom = np.zeros(n, dtype=bool)
                bottom[prev_order[0, :tb]] = True
                kept = (top[order[:, n - tb :]].sum(axis=1) + bottom[order[:, :tb]].sum(axis=1)) / (2 * tb)
                churn = 1.0 - kept
            out[e, cols] = churn
    _warn_small_eras(layout.labels, small, tb or 0)
    return pd.DataFrame(out, index=layout.labels, columns=predictions.columns), n_shared
