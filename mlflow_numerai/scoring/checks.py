"""Boundary checks of the scoring inputs, and the error they raise.

Predictions, targets, eras, ``on_constant``, ``top_bottom`` and a second model's coverage
(meta model, benchmark) are checked here once, before any kernel runs: bad input raises
:class:`ScoringError` (an :class:`~mlflow_numerai.errors.InputError`, so a ``ValueError``)
naming the column or parameter. Imports only ``errors`` of the package.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from mlflow_numerai.errors import InputError

DEFAULT_MAX_FILTERED_RATIO = 0.2  # numerai-tools' DEFAULT_MAX_FILTERED_INDEX_RATIO
OnConstant = Literal["raise", "nan"]


class ScoringError(InputError):
    """Predictions, targets, eras or features that cannot be scored as given."""


def _examples(index) -> str:
    items = list(index[:3])
    return f"{items}{' ...' if len(index) > 3 else ''}"


def _check_unique_index(obj: pd.Series | pd.DataFrame, name: str) -> None:
    if not obj.index.is_unique:
        dup = obj.index[obj.index.duplicated()].unique()
        raise ScoringError(f"{name} has {len(dup)} duplicate ids in its index, e.g. {_examples(dup)}")


def _check_predictions(predictions, name: str = "predictions") -> pd.DataFrame:
    """A DataFrame of finite numbers with unique ids; a Series becomes one column."""
    if isinstance(predictions, pd.Series):
        predictions = predictions.to_frame(predictions.name if predictions.name is not None else "prediction")
    if not isinstance(predictions, pd.DataFrame):
        raise ScoringError(f"{name} must be a pandas DataFrame (or Series), got {type(predictions).__name__}")
    if predictions.shape[0] == 0 or predictions.shape[1] == 0:
        raise ScoringError(f"{name} is empty (shape {predictions.shape})")
    bad = [
        c
        for c, dt in predictions.dtypes.items()
        if not (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt))
    ]
    if bad:
        raise ScoringError(f"{name} columns must be numeric; not numeric: {_examples(bad)}")
    _check_unique_index(predictions, name)
    values = predictions.to_numpy()
    # a float64 column sum is finite iff every value is (barring float64 overflow): a reduction,
    # so no (rows, columns) temporary for the 1000-column case; the exact count only on failure
    if not np.isfinite(values.sum(axis=0, dtype=np.float64)).all():
        bad = np.zeros(values.shape[1], dtype=np.int64)
        for start in range(0, len(values), 65536):
            bad += (~np.isfinite(values[start : start + 65536])).sum(axis=0)
        if bad.any():
            cols = predictions.columns[bad > 0]
            raise ScoringError(f"{name} has {int(bad.sum())} NaN or infinite values, in columns {_examples(cols)}")
    return predictions


def _check_target(targets, name: str = "targets") -> pd.Series:
    """A float Series with unique ids; NaN allowed (those ids are not scored), inf is not."""
    if isinstance(targets, pd.DataFrame) and targets.shape[1] == 1:
        targets = targets.iloc[:, 0]
    if not isinstance(targets, pd.Series):
        raise ScoringError(f"{name} must be a pandas Series, got {type(targets).__name__}")
    if not pd.api.types.is_numeric_dtype(targets.dtype) or pd.api.types.is_bool_dtype(targets.dtype):
        raise ScoringError(f"{name} must be numeric, got dtype {targets.dtype}")
    _check_unique_index(targets, name)
    targets = targets.astype(np.float64)
    if np.isinf(targets.to_numpy()).any():
        raise ScoringError(f"{name} has infinite values")
    return targets


def _check_eras(eras, index: pd.Index, name: str = "eras") -> pd.Series:
    """The era of each id of ``index`` (eras may be indexed by more ids)."""
    if not isinstance(eras, pd.Series):
        raise ScoringError(f"{name} must be a pandas Series indexed by id, got {type(eras).__name__}")
    _check_unique_index(eras, name)
    missing = index.difference(eras.index)
    if len(missing):
        raise ScoringError(
            f"{name} has no era for {len(missing)} of {len(index)} prediction ids, e.g. "
            f"{_examples(missing)} (is {name} indexed by id like the predictions?)"
        )
    out = eras.reindex(index)
    if out.isna().any():
        raise ScoringError(f"{name} is NaN for {int(out.isna().sum())} prediction ids")
    return out


def _check_on_constant(on_constant: str) -> None:
    if on_constant not in ("raise", "nan"):
        raise ScoringError(f"on_constant must be 'raise' or 'nan', got {on_constant!r}")


def _check_not_constant(predictions: pd.DataFrame, on_constant: str, name: str = "predictions") -> None:
    if on_constant != "raise":
        return
    values = predictions.to_numpy()
    constant = values.min(axis=0) == values.max(axis=0)
    if constant.any():
        raise ScoringError(
            f"{name} column(s) {_examples(predictions.columns[constant])} are constant: a constant "
            "prediction has no correlation (pass on_constant='nan' to score it NaN)"
        )


def _check_top_bottom(top_bottom) -> int | None:
    """None for every row (numerai-tools: None or <= 0), else the positive count."""
    if top_bottom is None:
        return None
    if isinstance(top_bottom, bool) or not isinstance(top_bottom, (int, np.integer)):
        raise ScoringError(f"top_bottom must be an integer or None, got {top_bottom!r}")
    return int(top_bottom) if top_bottom > 0 else None


def _check_coverage(
    other: pd.Series, predictions: pd.DataFrame, targets: pd.Series, eras: pd.Series,
    max_filtered_ratio: float | None, name: str,
) -> np.ndarray:
    """``other`` (a meta model, a benchmark) reindexed to the predictions' ids; raises when it
    covers fewer than ``1 - max_filtered_ratio`` of the ids with a target, overall or in an era,
    naming the column and the share covered."""
    values = other.reindex(predictions.index).to_numpy(dtype=np.float64)
    label = f"{name} {other.name!r}" if other.name is not None else name
    has_target = targets.reindex(predictions.index).notna().to_numpy()
    covered = ~np.isnan(values)
    if not (covered & has_target).any():
        raise ScoringError(
            f"{label} covers none of the {int(has_target.sum())} prediction ids with a target (misaligned index?)"
        )
    if max_filtered_ratio is None:
        return values
    need = 1.0 - max_filtered_ratio
    era_of = _check_eras(eras, predictions.index)[has_target]
    share = pd.Series(covered[has_target], index=era_of.index).groupby(era_of.to_numpy()).mean()
    # an era it does not cover at all scores NaN (Numerai's meta_model.parquet starts at a later
    # era than the validation data); a partly covered era is misaligned data
    share = share[share > 0]
    if share.min() < need:
        overall = covered[has_target].mean()
        raise ScoringError(
            f"{label} covers {overall:.1%} of the prediction ids with a target (worst era "
            f"{share.idxmin()!r}: {share.min():.1%}); at least {need:.0%} is needed in every era"
        )
    return values
