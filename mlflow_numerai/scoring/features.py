"""Metrics against the features: feature-neutral corr and feature exposure.

Feature rows are read per era on demand (``_Features``: a float64 copy of 2376 features for
millions of rows would not fit in memory); per era the predictions are neutralized to the era's
features (``transforms.neutralize``) before numerai corr, or correlated with each feature.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from mlflow_numerai.scoring._kernels import (
    _corr_matrix,
    _gauss_rows,
    _pearson_rows,
    _pearson_sorted,
    _sort_columns,
    _SortedTransform,
    _tb_positions,
)
from mlflow_numerai.scoring.checks import (
    DEFAULT_MAX_FILTERED_RATIO,
    OnConstant,
    ScoringError,
    _check_eras,
    _check_not_constant,
    _check_on_constant,
    _check_predictions,
    _check_target,
    _check_top_bottom,
    _check_unique_index,
    _examples,
)
from mlflow_numerai.scoring.eras import _EraLayout, _progress, _warn_small_eras
from mlflow_numerai.scoring.transforms import neutralize, power


class _Features:
    """The feature rows of given ids as float64 blocks, made on demand: a float64 copy of every
    feature for every id (2376 features x millions of rows) would not fit in memory."""

    def __init__(self, features, index: pd.Index, nan_fill: float | None = None):
        if not isinstance(features, pd.DataFrame) or features.shape[1] == 0:
            raise ScoringError("features must be a non-empty pandas DataFrame indexed by id")
        _check_unique_index(features, "features")
        bad = [c for c, dt in features.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
        if bad:
            raise ScoringError(f"features columns must be numeric; not numeric: {_examples(bad)}")
        missing = index.difference(features.index)
        if len(missing):
            raise ScoringError(f"features has no row for {len(missing)} prediction ids, e.g. {_examples(missing)}")
        self.frame = features
        self.columns = features.columns
        self.positions = features.index.get_indexer(index)
        self.nan_fill = np.nan if nan_fill is None else float(nan_fill)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """float64 (rows, features) of the prediction rows ``rows``."""
        block = self.frame.iloc[self.positions[rows]].to_numpy(dtype=np.float64, na_value=self.nan_fill)
        finite = np.isfinite(block)
        if not finite.all():
            cols = self.columns[~finite.all(axis=0)]
            raise ScoringError(f"features has NaN or infinite values in columns {_examples(cols)}")
        return block


def _era_groups(codes: np.ndarray, n_eras: int):
    """(era position, rows) for each era, from the era code of each row."""
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=n_eras))])
    for e in range(n_eras):
        yield e, order[bounds[e] : bounds[e + 1]]


def per_era_feature_neutral_corr(
    predictions: pd.DataFrame,
    features: pd.DataFrame,
    targets: pd.Series,
    eras: pd.Series,
    *,
    max_filtered_ratio: float | None = DEFAULT_MAX_FILTERED_RATIO,
    on_constant: OnConstant = "raise",
    progress: bool = False,
    nan_fill: float | None = None,
    top_bottom: int | None = None,
) -> pd.DataFrame:
    """Feature-neutral corr of every column in every era (eras x columns): within each era,
    tie-kept rank + gaussianize and neutralize to the era's features over every prediction row
    (as numerai-tools, before targets are matched), then numerai corr (``top_bottom`` as there).
    `nan_fill`: the value a NaN feature counts as (None: a NaN feature is an error)."""
    predictions = _check_predictions(predictions)
    targets = _check_target(targets)
    _check_on_constant(on_constant)
    tb = _check_top_bottom(top_bottom)
    _check_not_constant(predictions, on_constant)
    feats = _Features(features, predictions.index, nan_fill)
    layout = _EraLayout(predictions, targets, eras, max_filtered_ratio, by_id=tb is not None)
    values = predictions.to_numpy(dtype=np.float64)
    target_pow = power(layout.target, 1.5)
    out = np.full((len(layout.labels), predictions.shape[1]), np.nan)
    small = []
    for e, _ in _progress(layout, progress, len(layout.labels), "feature_neutral_corr"):
        all_rows = layout.all_rows(e)
        scored = layout.keep[all_rows]
        rows = all_rows[scored]
        t = target_pow[rows]
        if len(rows) < 2 or np.all(t == t[0]):
            continue  # one row or a constant target: no correlation (NaN)
        if tb is not None and len(rows) < 2 * tb:
            small.append(e)
            continue
        block = values[all_rows]
        constant = (block == block[:1]).all(axis=0)
        neutral = neutralize(_gauss_rows(block, None).T, feats.rows(all_rows))[scored]
        # a column fully explained by the features has only rounding noise left to rank
        explained = neutral.std(axis=0) < 1e-9
        order, ties = _sort_columns(neutral)
        g = _SortedTransform(ties, 1.5)
        if tb is None:
            corr = _pearson_sorted(g, order, t)
        else:
            sel = _tb_positions(len(rows), tb)
            corr = _pearson_rows(g.dense()[:, sel], t[order[:, sel]])
        corr[constant | explained] = np.nan
        out[e] = corr
    _warn_small_eras(layout.labels, small, tb or 0)
    return pd.DataFrame(out, index=layout.labels, columns=predictions.columns)


_EXPOSURE_BLOCK_VALUES = 2**22  # feature values per block of rows (32 MiB as float64)


def feature_exposure(
    predictions: pd.DataFrame, features: pd.DataFrame, *, nan_fill: float | None = None
) -> pd.DataFrame:
    """Pearson correlation of each prediction column with each feature over all rows
    (features x prediction columns); NaN for a constant feature. Accumulated over blocks of
    rows (sums of shifted values), so memory does not grow with the number of rows.
    `nan_fill`: the value a NaN feature counts as (None: a NaN feature is an error)."""
    predictions = _check_predictions(predictions)
    feats = _Features(features, predictions.index, nan_fill)
    values = predictions.to_numpy()
    n, k, m = len(values), values.shape[1], len(feats.columns)
    step = max(1, min(n, _EXPOSURE_BLOCK_VALUES // m))
    sf, sff, fmin, fmax = np.zeros(m), np.zeros(m), np.full(m, np.inf), np.full(m, -np.inf)
    sp, spp, sfp = np.zeros(k), np.zeros(k), np.zeros((m, k))
    shift_f = shift_p = None
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        f, p = feats.rows(rows), values[rows].astype(np.float64)
        if shift_f is None:  # shift by the first block's means: sums of squares stay accurate
            shift_f, shift_p = f.mean(axis=0), p.mean(axis=0)
        fmin, fmax = np.minimum(fmin, f.min(axis=0)), np.maximum(fmax, f.max(axis=0))
        f = f - shift_f
        p = p - shift_p
        sf += f.sum(axis=0)
        sff += (f * f).sum(axis=0)
        sp += p.sum(axis=0)
        spp += (p * p).sum(axis=0)
        sfp += f.T @ p
    cov = sfp - np.outer(sf, sp) / n
    var_f = np.maximum(sff - sf**2 / n, 0.0)
    var_p = np.maximum(spp - sp**2 / n, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.sqrt(np.outer(var_f, var_p))
    corr[fmin == fmax] = np.nan
    return pd.DataFrame(corr, index=pd.Index(feats.columns, name="feature"), columns=predictions.columns)


def per_era_max_feature_exposure(
    predictions: pd.DataFrame, features: pd.DataFrame, eras: pd.Series, *, nan_fill: float | None = None
) -> pd.DataFrame:
    """Per era, the largest absolute Pearson correlation of each prediction column with any
    feature (eras x columns); features constant in an era are skipped. `nan_fill`: the value a
    NaN feature counts as (None: a NaN feature is an error)."""
    predictions = _check_predictions(predictions)
    feats = _Features(features, predictions.index, nan_fill)
    pred_eras = _check_eras(eras, predictions.index)
    codes, labels = pd.factorize(pred_eras, sort=True)
    values = predictions.to_numpy()
    out = np.full((len(labels), values.shape[1]), np.nan)
    for e, rows in _era_groups(codes, len(labels)):
        if len(rows) < 2:
            continue
        corr = np.abs(_corr_matrix(feats.rows(rows), values[rows].astype(np.float64)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: stays NaN
            out[e] = np.nanmax(corr, axis=0)
    return pd.DataFrame(out, index=pd.Index(labels, name="era"), columns=predictions.columns)


def max_feature_exposure(
    predictions: pd.DataFrame,
    features: pd.DataFrame,
    eras: pd.Series | None = None,
    *,
    nan_fill: float | None = None,
) -> pd.Series:
    """Max feature exposure of each column: with ``eras``, the mean over eras of the per-era
    maximum (Numerai's diagnostics); without, the maximum over all rows at once."""
    if eras is None:
        exposure = feature_exposure(predictions, features, nan_fill=nan_fill).abs()
        return exposure.max(axis=0, skipna=True).rename("max_feature_exposure")
    per_era = per_era_max_feature_exposure(predictions, features, eras, nan_fill=nan_fill)
    return per_era.mean(axis=0).rename("max_feature_exposure")
