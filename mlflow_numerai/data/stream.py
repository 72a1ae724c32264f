"""Shuffled, prefetched `(x, y)` batches from an era-sharded cache, with Keras and torch adapters.

`BatchStream(cache, batch_size, shuffle=True, window=..., seed=0, prefetch=4, threads=2)`
yields, for one epoch, batches `x` float32 (rows x features, bins scaled by 1/4 to 0..1) and
`y` float32 (rows x targets):

- Order: every epoch visits the eras in a new random order; the rows of that sequence are
  shuffled within consecutive windows of `window` rows (a window mixes many eras), then cut into
  batches. Every row comes exactly once per epoch; the last batch may be short. The order
  depends only on `(seed, epoch)`, so a run is reproducible and can restart at any batch. Rows
  inside one batch come in cache order (a batch is a random draw of its window; the order within
  a batch does not change a gradient). `shuffle=False` streams the rows in cache order (eras
  sorted), which is how validation is read.
- Speed: `threads` background threads gather the rows of their batches from the memory-mapped
  int8 era files straight into float32 batches (numpy releases the GIL), each into a bounded
  queue; `prefetch` batches at most wait in all queues together. A batch buffer is reused only
  when nothing outside the stream still refers to it, so a consumer may keep any batch.
- Memory: only the era files of the windows being read are mapped; they are unmapped once no
  later batch of the epoch needs them, so the resident size stays about one or two windows
  (`window * n_features` bytes each) plus the queued batches, whatever the data size.
- Shutdown: `close()` (or leaving `with`, or an exception / Ctrl-C in the consumer, or garbage
  collection) stops and joins the threads; an exception in a thread is raised in the consumer.

Use::

    stream = BatchStream(cache, 4096, seed=1)
    for epoch in range(3):
        with stream.epoch(epoch) as batches:
            for x, y in batches:
                ...

Keras: `keras_dataset(stream)` is a `keras.utils.PyDataset` (`len` = steps per epoch) for
`model.fit(..., shuffle=False)`: the stream shuffles itself, and Keras' own `shuffle=True` would
ask for the batches in a random order, restarting the prefetch at every batch (it works, at
about half the speed, with a warning). Each fit epoch reads the next stream epoch (0, 1, ...).
The shuffled plan makes `__getitem__(i)` exact for any `i`; sequential access uses the
prefetching threads.

torch (for the Bayesian NN): `torch_dataset(stream, start_epoch=0)` is a
`torch.utils.data.IterableDataset` whose every `iter()` is the next epoch and yields
`(x, y)` as CPU float32 tensors sharing memory with the numpy batches. `len()` is the number of
batches per epoch. Use it directly (`for x, y in ds`) or as `DataLoader(ds, batch_size=None,
num_workers=0)`: batching and prefetching are already done, worker processes would only copy.
`torch_batches(stream, epoch)` is the same for one given epoch.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import warnings
from collections.abc import Iterator
from itertools import pairwise

import numpy as np

from mlflow_numerai.data.cache import EraCache

SCALE = np.float32(0.25)  # bins 0..4 -> 0..1
_BLOCK_ROWS = 64  # rows gathered and converted at a time (stays in the CPU cache)
_POLL_S = 0.1  # how often blocked threads look at the stop flag


class StreamError(RuntimeError):
    """A background thread of a BatchStream failed; the cause is chained."""


def epoch_order(counts: np.ndarray, epoch: int, seed: int, window: int, shuffle: bool = True) -> np.ndarray:
    """Cache row positions in the order one epoch visits them.

    Eras in a random order for `(seed, epoch)`, then rows shuffled within consecutive windows of
    `window` rows. A permutation of all rows; `arange` when not shuffling."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    era_perm = rng.permutation(len(counts))
    seq = np.empty(n, dtype=np.int64)
    pos = 0
    for e in era_perm:
        c = int(counts[e])
        seq[pos : pos + c] = np.arange(offsets[e], offsets[e] + c)
        pos += c
    for w0 in range(0, n, window):
        rng.shuffle(seq[w0 : w0 + window])
    return seq


def _last_batch_of_eras(counts: np.ndarray, order: np.ndarray, batch_size: int) -> np.ndarray:
    """For each era, the index of the last batch of the epoch that reads one of its rows."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    era_of = np.searchsorted(offsets, order, side="right") - 1
    last = np.full(len(counts), -1, dtype=np.int64)
    np.maximum.at(last, era_of, np.arange(len(order), dtype=np.int64) // batch_size)
    return last


class _Plan:
    """One epoch's batches: their rows and when each era is last needed."""

    def __init__(self, cache: EraCache, epoch: int, seed: int, window: int, shuffle: bool, batch_size: int):
        self.order = epoch_order(cache.counts, epoch, seed, window, shuffle)
        self.batch_size = batch_size
        self.steps = math.ceil(len(self.order) / batch_size)
        self.last_batch = _last_batch_of_eras(cache.counts, self.order, batch_size)

    def rows(self, k: int) -> np.ndarray:
        return np.sort(self.order[k * self.batch_size : (k + 1) * self.batch_size])


class _EraMaps:
    """Era files mapped on demand, shared by the threads, unmapped when no longer needed."""

    def __init__(self, cache: EraCache, last_batch: np.ndarray, n_threads: int):
        self.cache = cache
        self.last_batch = last_batch
        self.maps: dict[int, np.ndarray] = {}
        self.current = [0] * n_threads  # batch each thread works on
        self.lock = threading.Lock()

    def get(self, era: int) -> np.ndarray:
        with self.lock:
            mm = self.maps.get(era)
            if mm is None:
                mm = self.maps[era] = self.cache.era_x(era, populate=True)
            return mm

    def advance(self, thread: int, k: int) -> None:
        with self.lock:
            self.current[thread] = k
            low = min(self.current)
            for era in [e for e in self.maps if self.last_batch[e] < low]:
                del self.maps[era]  # the last reference: unmaps the file

    def clear(self) -> None:
        with self.lock:
            self.maps.clear()


def aligned_empty(shape: tuple[int, ...], dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an `align`-byte boundary.

    TensorFlow wraps a 64-byte aligned numpy batch without copying it (numpy's own large
    allocations are 16-byte aligned, which costs a copy into fresh memory per batch)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + nbytes].view(dtype).reshape(shape)


class _Buffers:
    """A thread's batch buffers; one is reused only when nobody else refers to it.

    A batch handed out is a view of a pool buffer; every view (and anything that keeps one, e.g.
    a tensor wrapping it) holds a reference to the buffer's memory owner, so the owner's
    reference count tells whether the buffer is free."""

    def __init__(self, batch_size: int, n_features: int, n_targets: int, size: int):
        self.shape_x = (batch_size, n_features)
        self.shape_y = (batch_size, n_targets)
        self.size = size
        self.pool: list[tuple[np.ndarray, np.ndarray, int, int]] = []  # x, y, free refcounts

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        for x, y, free_x, free_y in self.pool:
            if sys.getrefcount(x.base) == free_x and sys.getrefcount(y.base) == free_y:
                return x, y
        x, y = aligned_empty(self.shape_x, np.float32), aligned_empty(self.shape_y, np.float32)
        if len(self.pool) < self.size:
            self.pool.append((x, y, sys.getrefcount(x.base), sys.getrefcount(y.base)))
        return x, y


def gather_batch(
    maps: _EraMaps, offsets: np.ndarray, targets: np.ndarray, rows: np.ndarray, x_out: np.ndarray, y_out: np.ndarray
) -> None:
    """Write the scaled features and targets of the sorted cache `rows` into x_out / y_out."""
    n = len(rows)
    era_of = np.searchsorted(offsets, rows, side="right") - 1
    cuts = [0, *(np.flatnonzero(np.diff(era_of)) + 1).tolist(), n]
    tmp = np.empty((_BLOCK_ROWS, x_out.shape[1]), dtype=np.int8)
    for a, b in pairwise(cuts):
        era = int(era_of[a])
        mm = maps.get(era)
        local = rows[a:b] - offsets[era]
        for s in range(a, b, _BLOCK_ROWS):
            t = min(s + _BLOCK_ROWS, b)
            block = tmp[: t - s]
            np.take(mm, local[s - a : t - a], axis=0, out=block)
            out = x_out[s:t]
            np.copyto(out, block, casting="unsafe")
            np.multiply(out, SCALE, out=out)
    np.take(targets, rows, axis=0, out=y_out)


class EpochIterator(Iterator):
    """The batches of one epoch from batch `start`, made by background threads."""

    def __init__(self, stream: BatchStream, epoch: int, start: int = 0):
        self.stream = stream
        self.epoch = epoch
        self.plan = _Plan(stream.cache, epoch, stream.seed, stream.window, stream.shuffle, stream.batch_size)
        if not 0 <= start <= self.plan.steps:
            raise IndexError(f"batch {start} out of range: an epoch has {self.plan.steps} batches")
        self.next_index = start
        self._start = start
        self._stop = threading.Event()
        n_threads = max(1, min(stream.threads, self.plan.steps - start))
        per_queue = max(1, math.ceil(stream.prefetch / n_threads))
        self._queues = [queue.Queue(maxsize=per_queue) for _ in range(n_threads)]
        self._maps = _EraMaps(stream.cache, self.plan.last_batch, n_threads)
        self._targets = stream.cache.targets_array()
        self._offsets = stream.cache.offsets
        self._threads = [
            threading.Thread(
                target=self._produce, args=(i, start + i, per_queue), daemon=True, name=f"batch-stream-{i}"
            )
            for i in range(n_threads)
        ]
        for th in self._threads:
            th.start()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, thread: int, first: int, per_queue: int) -> None:
        q = self._queues[thread]
        stride = len(self._queues)
        cache = self.stream.cache
        buffers = _Buffers(self.stream.batch_size, cache.n_features, len(cache.targets), per_queue + 6)
        try:
            for k in range(first, self.plan.steps, stride):
                if self._stop.is_set():
                    return
                self._maps.advance(thread, k)
                rows = self.plan.rows(k)
                x_buf, y_buf = buffers.take()
                x, y = x_buf[: len(rows)], y_buf[: len(rows)]
                gather_batch(self._maps, self._offsets, self._targets, rows, x, y)
                del x_buf, y_buf
                if not self._put(q, (k, x, y)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(q, (None, exc, None))

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        if self.next_index >= self.plan.steps or self._stop.is_set():
            self.close()
            raise StopIteration
        q = self._queues[(self.next_index - self._start) % len(self._queues)]
        try:
            while True:
                try:
                    k, x, y = q.get(timeout=_POLL_S)
                    break
                except queue.Empty:
                    if not any(th.is_alive() for th in self._threads) and q.empty():
                        raise StreamError("batch stream threads ended without producing a batch") from None
        except BaseException:
            self.close()
            raise
        if k is None:
            self.close()
            raise StreamError(f"reading batch {self.next_index} of epoch {self.epoch} failed: {x!r}") from x
        self.next_index += 1
        return x, y

    def close(self) -> None:
        """Stop the threads and wait for them; safe to call more than once."""
        self._stop.set()
        for q in self._queues:
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        for th in self._threads:
            if th is not threading.current_thread():
                th.join()
        self._maps.clear()

    def __enter__(self) -> EpochIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_threads"):
            self._stop.set()


class BatchStream:
    """Epochs of shuffled (or ordered), prefetched `(x, y)` float32 batches from an EraCache."""

    def __init__(
        self,
        cache: EraCache,
        batch_size: int = 4096,
        *,
        shuffle: bool = True,
        window: int = 131072,
        seed: int = 0,
        prefetch: int = 4,
        threads: int = 2,
    ):
        checks = (
            ("batch_size", batch_size, 1), ("window", window, 1), ("prefetch", prefetch, 1), ("threads", threads, 1)
        )
        for name, value, low in checks:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if cache.n_rows == 0:
            raise ValueError(f"cache {str(cache.path)!r} holds no rows")
        self.cache = cache
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.window = int(window)
        self.seed = int(seed)
        self.prefetch = int(prefetch)
        self.threads = int(threads)

    @property
    def n_rows(self) -> int:
        return self.cache.n_rows

    @property
    def steps(self) -> int:
        """Batches per epoch (the last one may be short)."""
        return math.ceil(self.cache.n_rows / self.batch_size)

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int = 0, start: int = 0) -> EpochIterator:
        """An iterator over the batches of `epoch` from batch `start` (use it with `with`)."""
        return EpochIterator(self, epoch, start)

    def targets(self) -> np.ndarray:
        """All targets in cache order (what `shuffle=False` yields as y), float32."""
        return np.asarray(self.cache.targets_array())

    def eras(self) -> np.ndarray:
        """The era of every row in cache order."""
        return self.cache.era_labels()


# ---------------------------------------------------------------------------------------------
# adapters

_KERAS_CLASS = None


def keras_dataset(stream: BatchStream, *, start_epoch: int = 0):
    """A `keras.utils.PyDataset` over `stream`: `len` = steps per epoch, fit epoch i reads
    stream epoch `start_epoch + i`."""
    global _KERAS_CLASS
    if _KERAS_CLASS is None:
        import keras

        class StreamPyDataset(keras.utils.PyDataset):
            """Batches of a BatchStream for `model.fit` (sequential reads are prefetched)."""

            def __init__(self, stream: BatchStream, start_epoch: int = 0):
                super().__init__(workers=1, use_multiprocessing=False)
                self.stream = stream
                self.current_epoch = start_epoch
                self._it: EpochIterator | None = None
                self._read_last = False  # the epoch's last batch was read: on_epoch_end moves on
                self._warned = False

            def __len__(self) -> int:
                return self.stream.steps

            def __getitem__(self, index: int):
                if index < 0:
                    index += len(self)
                if not 0 <= index < len(self):
                    raise IndexError(f"batch {index} out of range: an epoch has {len(self)} batches")
                if self._it is None or self._it.next_index != index or self._it.epoch != self.current_epoch:
                    out_of_order = self._it is not None and self._it.epoch == self.current_epoch and index > 0
                    if out_of_order and not self._warned:
                        self._warned = True
                        warnings.warn(
                            f"batch {index} requested after batch {self._it.next_index - 1}: out-of-order reads "
                            "restart the prefetching threads. Call model.fit(..., shuffle=False); the stream "
                            "shuffles itself.", RuntimeWarning, stacklevel=2,
                        )
                    self._close()
                    self._it = self.stream.epoch(self.current_epoch, start=index)
                self._read_last |= index == len(self) - 1
                return next(self._it)

            def _close(self) -> None:
                if self._it is not None:
                    self._it.close()
                    self._it = None

            def on_epoch_end(self) -> None:
                # Keras also calls this before training (after reading two batches for their
                # shapes): only an epoch whose batches were read counts
                self._close()
                if self._read_last:
                    self.current_epoch += 1
                    self._read_last = False

            def close(self) -> None:
                self._close()

        _KERAS_CLASS = StreamPyDataset
    return _KERAS_CLASS(stream, start_epoch)


def torch_batches(stream: BatchStream, epoch: int) -> Iterator:
    """The batches of one epoch as `(x, y)` torch float32 CPU tensors (sharing numpy memory)."""
    import torch

    with stream.epoch(epoch) as it:
        for x, y in it:
            yield torch.from_numpy(x), torch.from_numpy(y)


_TORCH_CLASS = None


def torch_dataset(stream: BatchStream, *, start_epoch: int = 0):
    """A `torch.utils.data.IterableDataset` over `stream`: each `iter()` is the next epoch."""
    global _TORCH_CLASS
    if _TORCH_CLASS is None:
        import torch.utils.data

        class StreamIterableDataset(torch.utils.data.IterableDataset):
            """Epochs of a BatchStream as torch tensors; use with batch_size=None, num_workers=0."""

            def __init__(self, stream: BatchStream, start_epoch: int = 0):
                self.stream = stream
                self.next_epoch = start_epoch

            def __len__(self) -> int:
                return self.stream.steps

            def __iter__(self):
                info = torch.utils.data.get_worker_info()
                if info is not None and info.num_workers > 1:
                    raise RuntimeError("use num_workers=0: the stream prefetches in threads itself")
                epoch = self.next_epoch
                self.next_epoch += 1
                return torch_batches(self.stream, epoch)

        _TORCH_CLASS = StreamIterableDataset
    return _TORCH_CLASS(stream, start_epoch)
