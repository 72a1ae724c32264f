"""Era layout shared by the per-era metrics: which prediction rows each era scores.

:class:`_EraLayout` matches predictions, targets and eras once (centering the target per era,
applying ``max_filtered_ratio``, warning about eras without a target) and yields the rows of each
era; the helpers here slice an era's block of values, show progress and warn about eras too small
for ``top_bottom``. Private to ``mlflow_numerai.scoring``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from mlflow_numerai.scoring.checks import ScoringError, _check_eras, _examples


class _EraLayout:
    """Which prediction rows each era scores, and the centered target of those rows."""

    def __init__(
        self,
        predictions: pd.DataFrame,
        targets: pd.Series,
        eras: pd.Series,
        max_filtered_ratio: float | None,
        extra_keep: np.ndarray | None = None,
        by_id: bool = False,
    ):
        if max_filtered_ratio is not None and not (
            isinstance(max_filtered_ratio, (int, float)) and 0 <= max_filtered_ratio <= 1
        ):
            raise ScoringError(f"max_filtered_ratio must be in [0, 1] or None, got {max_filtered_ratio!r}")
        pred_eras = _check_eras(eras, predictions.index)
        # Center the target on its era's mean over every id with a known era and a target
        # (numerai-tools centers on the whole target passed in, before intersecting ids).
        target_eras = eras.reindex(targets.index)
        known = target_eras.notna() & targets.notna()
        centered = targets[known] - targets[known].groupby(target_eras[known]).transform("mean")
        target = centered.reindex(predictions.index).to_numpy()
        keep = ~np.isnan(target)
        if extra_keep is not None:
            keep &= extra_keep
        if not keep.any():
            raise ScoringError(
                "no prediction id has a target: the predictions and targets indexes share no id "
                f"(predictions e.g. {_examples(predictions.index)}, targets e.g. {_examples(targets.index)})"
            )
        codes, labels = pd.factorize(pred_eras, sort=True)
        self.labels = pd.Index(labels, name="era")
        n_eras = len(labels)
        n_rows = np.bincount(codes, minlength=n_eras)
        n_kept = np.bincount(codes[keep], minlength=n_eras)
        target_codes = self.labels.get_indexer(target_eras[known])
        n_targets = np.bincount(target_codes[target_codes >= 0], minlength=n_eras)
        self.unresolved = n_kept == 0
        if self.unresolved.any():
            warnings.warn(
                f"{int(self.unresolved.sum())} era(s) have no target (e.g. "
                f"{_examples(self.labels[self.unresolved])}) and score NaN",
                RuntimeWarning,
                stacklevel=3,
            )
        if max_filtered_ratio is not None:
            scored = ~self.unresolved
            kept_share = np.minimum(n_kept / n_rows, np.where(n_targets > 0, n_kept / np.maximum(n_targets, 1), 1.0))
            too_few = scored & (kept_share < 1.0 - max_filtered_ratio)
            if too_few.any():
                raise ScoringError(
                    f"{int(too_few.sum())} era(s) (e.g. {_examples(self.labels[too_few])}) keep fewer than "
                    f"{1 - max_filtered_ratio:.0%} of their ids once predictions and targets are matched "
                    "(misaligned index or targets missing?); raise max_filtered_ratio to accept it"
                )
        # by_id: rows of an era in id order, so that ties break as numerai-tools' stable argsort
        # on a sorted index does (top_bottom, churn); else in the order of the predictions
        tiebreak = np.argsort(np.argsort(predictions.index, kind="stable")) if by_id else np.arange(len(keep))
        kept_rows = np.flatnonzero(keep)
        self.order = kept_rows[np.lexsort((tiebreak[kept_rows], codes[kept_rows]))]
        self.bounds = np.concatenate([[0], np.cumsum(n_kept)])
        self.all_order = np.lexsort((tiebreak, codes))
        self.all_bounds = np.concatenate([[0], np.cumsum(n_rows)])
        self.keep = keep
        self.target = target

    def all_rows(self, e: int) -> np.ndarray:
        """Every prediction row of era ``e``, with or without a target."""
        return self.all_order[self.all_bounds[e] : self.all_bounds[e + 1]]

    def __iter__(self):
        """(era position, rows of the predictions) for each era with rows to score."""
        for e in range(len(self.labels)):
            rows = self.order[self.bounds[e] : self.bounds[e + 1]]
            if len(rows):
                yield e, rows


def _progress(iterable, enabled: bool, total: int, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="era")


def _era_block(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of one era (rows, columns): a view when they are contiguous (data sorted by
    era, the usual layout), else a copy."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return values[rows[0] : rows[-1] + 1]
    return values[rows]


def _float_values(predictions: pd.DataFrame) -> np.ndarray:
    """Prediction values as float32 or float64 (no copy when already one of them)."""
    values = predictions.to_numpy()
    return values if values.dtype in (np.float32, np.float64) else values.astype(np.float64)


def _warn_small_eras(labels: pd.Index, small: list, tb: int) -> None:
    if small:
        warnings.warn(
            f"{len(small)} era(s) (e.g. {_examples(labels[small])}) have fewer than 2 * top_bottom = "
            f"{2 * tb} rows and score NaN",
            RuntimeWarning,
            stacklevel=3,
        )
