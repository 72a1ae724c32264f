"""What the nets train on: feature matrices and minibatches, from arrays or from the era stream.

`feature_matrix` scales features to [-0.5, 0.5] (NaN as the middle bin), `drop_nan_targets`
drops unusable rows; `array_batches` (in-memory arrays) and `stream_batches` (a `BatchStream`
over an era-sharded cache) both give `TrainingBatches`, the `epoch(e)` iterator of `(x, y)`
tensors with the targets' mean and spread that `fit_svi` and `fit_baseline` consume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from mlflow_numerai.conventions import MIDDLE_BIN
from mlflow_numerai.data.stream import torch_batches


def feature_matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Features selected by name, int 0..4 (NaN -> MIDDLE_BIN) scaled to float32 in [-0.5, 0.5]."""
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise KeyError(f"feature column(s) missing from the input: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    values = frame[list(features)].to_numpy(dtype=np.float32, na_value=float(MIDDLE_BIN))
    return values / 4.0 - 0.5


def drop_nan_targets(frame: pd.DataFrame, targets: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """`frame` without rows where any of `targets` is NaN, and how many rows that dropped."""
    missing = [c for c in targets if c not in frame.columns]
    if missing:
        raise KeyError(f"target column(s) missing from the data: {missing}")
    keep = frame[list(targets)].notna().all(axis=1).to_numpy()
    return frame.loc[keep], int((~keep).sum())


@dataclass
class TrainingBatches:
    """Minibatches for `fit_svi` / `fit_baseline`: `epoch(e)` yields `(x, y)` float32 tensors,
    x in [-0.5, 0.5] (as `feature_matrix`), y the raw targets (rows x targets, no NaN); with
    the number of rows and the targets' mean (the nets learn centred targets) and std."""

    n_rows: int
    n_features: int
    y_mean: np.ndarray  # per target
    y_std: np.ndarray  # per target, of the centred targets
    y_std_pooled: float  # all centred targets together (H1's one sigma)
    epoch: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]] = field(repr=False)
    batch_size: int = 0  # rows per minibatch (0: unknown), for step-based learning-rate schedules


def _target_stats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, std, pooled std) of the targets (rows x targets), which must be NaN-free."""
    if np.isnan(y).any():
        raise ValueError("targets contain NaN: drop those rows first (drop_nan_targets)")
    mean = y.mean(axis=0, dtype=np.float64)
    centred = y - mean
    return mean.astype(np.float32), centred.std(axis=0).astype(np.float32), float(centred.std())


def array_batches(x: np.ndarray, y: np.ndarray, *, batch_size: int = 4096, seed: int = 0) -> TrainingBatches:
    """Shuffled minibatches of in-memory arrays (every row once per epoch, a new order each
    epoch, repeatable for a seed)."""
    y = np.asarray(y, dtype=np.float32)
    y = y[:, None] if y.ndim == 1 else y
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("no training rows")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mean, std, pooled = _target_stats(y)
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y)

    def epoch(e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + e)
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            yield xt[idx], yt[idx]

    return TrainingBatches(len(xt), xt.shape[1], mean, std, pooled, epoch, batch_size=int(batch_size))


def stream_batches(stream) -> TrainingBatches:
    """Minibatches from a `BatchStream` over an era-sharded cache (data/stream.py): shuffled,
    prefetched, never the whole training set in memory. The cache has already left out rows
    with a NaN target; its features (0..1) are shifted to [-0.5, 0.5]."""
    mean, std, pooled = _target_stats(np.asarray(stream.targets()))

    def epoch(e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in torch_batches(stream, e):
            yield x - 0.5, y

    return TrainingBatches(stream.n_rows, stream.cache.n_features, mean, std, pooled, epoch,
                           batch_size=int(stream.batch_size))

