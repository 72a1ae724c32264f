"""Numpy kernels behind the per-era metrics: one era, every prediction column at once.

Per era, 64 columns at a time are ranked together in numpy (one ``np.sort`` of packed
``(value, row)`` integers) and the rank -> gauss -> power transform is a table lookup, because a
tie-kept rank can only take the ``2 n - 1`` half-integer values ``1, 1.5, ..., n``; Pearson gathers
the target into each column's sorted order. The Python loops are over eras and column blocks,
never over single columns. Results equal the pandas reference transforms (``transforms``) to
~1e-15. Private to ``mlflow_numerai.scoring``.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
from scipy.stats import norm

from mlflow_numerai.scoring.transforms import power


@functools.lru_cache(maxsize=16)
def _rank_table(n: int, p: float | str | None) -> np.ndarray:
    """Transformed value for each possible tie-kept rank index ``2 * rank - 2`` (0 .. 2n - 2).

    Computed as numerai-tools does element-wise: ``norm.ppf((rank - 0.5) / n)``, then the signed
    power ``p`` (skipped when ``p`` is None; ``p="rank"``: the plain rank, for Spearman).
    Cached: every era of the same size shares it."""
    ranks = np.arange(2 * n - 1) / 2.0 + 1.0
    if p == "rank":
        ranks.flags.writeable = False
        return ranks
    table = norm.ppf((ranks - 0.5) / n)
    table = table if p is None else power(table, p)
    table.flags.writeable = False
    return table


def _float32_order_keys(x: np.ndarray) -> np.ndarray:
    """Unsigned integers that sort like the float32 values ``x`` (``-0.0`` equal to ``0.0``)."""
    bits = (x + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    if not (bits >> np.uint32(31)).any():
        return bits  # no negative value: the IEEE bits already sort like the values
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def _sort_columns(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each column of ``block`` (rows, columns) of finite values.

    Returns ``(order, continues)``, both (columns, rows): ``order[c]`` lists the rows of column
    ``c`` by ascending value; ``continues[c, i]`` says the value at sorted position ``i`` equals
    the one at ``i - 1`` (ties).

    Speed without giving up exactness: the values rounded to float32 (a monotone map) are packed
    with their row number into 64-bit integers (value in the high word, row in the low word) and
    sorted with one ``np.sort``, several times faster than ``argsort``; the two words are read
    back as strided views. For float32 input that is the answer. For float64 input, distinct
    values can round to the same float32: only those runs are re-sorted by their float64 values
    (``np.lexsort`` on the few positions involved)."""
    n = block.shape[0]
    b32 = block if block.dtype == np.float32 else block.astype(np.float32)
    if n >= 2**32 or (b32 is not block and not np.isfinite(b32).all()):  # float32 overflow
        x = np.ascontiguousarray(block.T, dtype=np.float64)
        order = np.argsort(x, axis=1)
        keys = np.take_along_axis(x, order, axis=1)
        continues = np.zeros(keys.shape, dtype=bool)
        np.equal(keys[:, 1:], keys[:, :-1], out=continues[:, 1:])
        return order, continues
    packed = _float32_order_keys(b32).T.astype(np.uint64, order="C")
    packed <<= np.uint64(32)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort(axis=1)
    words = packed.view(np.uint32)  # (k, 2n); little-endian: low word (row) first
    low, high = (0, 1) if sys.byteorder == "little" else (1, 0)
    order, keys32 = words[:, low::2], words[:, high::2]
    continues = np.zeros(order.shape, dtype=bool)
    np.equal(keys32[:, 1:], keys32[:, :-1], out=continues[:, 1:])
    if b32 is block or not continues.any():
        return order, continues
    # float64 input: settle each run of equal float32 keys by the float64 values
    order = np.ascontiguousarray(order)
    flat_order, flat_cont = order.reshape(-1), continues.reshape(-1)
    in_run = flat_cont.copy()
    in_run[:-1] |= flat_cont[1:]
    positions = np.flatnonzero(in_run)
    run = np.cumsum(~flat_cont[positions]) - 1
    rows = flat_order[positions]
    values = block[rows, positions // n]
    perm = np.lexsort((values, run))
    flat_order[positions] = rows[perm]
    values = values[perm]
    flat_cont[positions] = np.r_[False, (values[1:] == values[:-1]) & (run[1:] == run[:-1])]
    return order, continues


class _SortedTransform:
    """Tie-kept rank -> gaussianize (-> signed power) of sorted columns, kept sparse.

    Without ties, the value at sorted position ``i`` of every column is ``base[i]`` (rank
    ``i + 1``). A tie group starting at ``s`` with ``m`` members has average rank
    ``s + 1 + (m - 1) / 2``; only the flat positions inside tie groups (``positions``, as
    ``column * n + i``) carry their own ``values``. Column sums and dot products are the base
    row's plus the corrections, so a dense (columns, rows) array is never needed."""

    def __init__(self, continues: np.ndarray, p: float | str | None):
        k, n = continues.shape
        self.k, self.n = k, n
        table = _rank_table(n, p)
        self.base = table[::2]
        self.constant = continues[:, 1:].all(axis=1)
        continues = continues.reshape(-1)
        in_tie = continues.copy()
        in_tie[:-1] |= continues[1:]  # a group's first member: the next position continues it
        self.positions = np.flatnonzero(in_tie)
        first = ~continues[self.positions]
        group = np.cumsum(first) - 1
        sizes = np.bincount(group)
        self.values = table[2 * (self.positions[first] % n) + sizes - 1][group]
        self.delta = self.values - self.base[self.positions % n]
        self.columns = self.positions // n

    def _per_column(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.columns, weights=weights, minlength=self.k)

    def sums(self) -> np.ndarray:
        """Sum of each column's values."""
        return self.base.sum() + self._per_column(self.delta)

    def squared_sums(self) -> np.ndarray:
        """Sum of each column's squared values."""
        return (self.base @ self.base) + self._per_column(self.values**2 - (self.values - self.delta) ** 2)

    def dot(self, v: np.ndarray) -> np.ndarray:
        """Dot product of each column with the matching row of ``v`` (columns, rows; sorted)."""
        v = np.ascontiguousarray(v, dtype=np.float64)
        return v @ self.base + self._per_column(self.delta * v.reshape(-1)[self.positions])

    def dense(self) -> np.ndarray:
        """The values as a (columns, rows) array in sorted order."""
        out = np.tile(self.base, (self.k, 1))
        out.reshape(-1)[self.positions] = self.values
        return out


def _pearson_sorted(g: _SortedTransform, order: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pearson correlation of each transformed column with ``t`` (in row order), gathering ``t``
    into each column's sorted order instead of un-sorting the columns. Uses
    ``sum((g - mean g) t_c) = g . t_c - mean(g) sum(t_c)`` with ``t_c`` centered."""
    tc = t - t.mean()
    mean_g = g.sums() / g.n
    num = g.dot(tc[order]) - mean_g * tc.sum()
    ss_g = np.maximum(g.squared_sums() - g.n * mean_g**2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.sqrt(ss_g * (tc @ tc))


def _unsort(g: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Values of ``g`` (sorted order) put back in row order."""
    out = np.empty(order.shape, dtype=np.float64)
    np.put_along_axis(out, order.astype(np.intp, copy=False), g, axis=1)
    return out


_CHUNK_COLUMNS = 64  # columns sorted together: big enough for numpy, small enough for the cache


def _column_chunks(k: int) -> list[slice]:
    return [slice(i, min(i + _CHUNK_COLUMNS, k)) for i in range(0, k, _CHUNK_COLUMNS)]


def _gauss_rows(values: np.ndarray, p: float | None) -> np.ndarray:
    """Tie-kept rank -> gaussianize (-> power ``p``) of each column of ``values`` (rows,
    columns), returned (columns, rows) in row order."""
    order, continues = _sort_columns(values)
    return _unsort(_SortedTransform(continues, p).dense(), order)


def _tb_positions(n: int, tb: int) -> np.ndarray:
    """Sorted positions of the bottom ``tb`` and top ``tb`` rows."""
    return np.r_[0:tb, n - tb : n]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ac * bc).sum(axis=1) / np.sqrt((ac * ac).sum(axis=1) * (bc * bc).sum(axis=1))


def _corr_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with each column of ``b`` (a-cols x b-cols);
    NaN where a column is constant."""
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.outer(np.sqrt((ac * ac).sum(axis=0)), np.sqrt((bc * bc).sum(axis=0)))
        out = (ac.T @ bc) / scale
    out[scale == 0] = np.nan
    return out
