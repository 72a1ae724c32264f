"""The prefetching batch stream: epoch coverage, shuffling, determinism, shutdown, adapters."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlflow_numerai.data.stream as stream_module
from mlflow_numerai.data.cache import build_cache
from mlflow_numerai.data.stream import BatchStream, StreamError, epoch_order, keras_dataset, torch_dataset

N_DIGITS = 6  # features = base-5 digits of the row number: x identifies its row


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A cache whose rows can be identified from x: 12 eras of uneven size, 1_830 rows."""
    tmp = tmp_path_factory.mktemp("coded")
    counts = [100, 250, 40, 300, 1, 139, 200, 150, 180, 170, 150, 150]
    eras = np.repeat([f"{i + 1:04d}" for i in range(len(counts))], counts)
    n = len(eras)
    rows = np.arange(n)
    frame = pd.DataFrame({"id": [f"r{i}" for i in rows], "era": eras})
    for d in range(N_DIGITS):
        frame[f"feature_{d}"] = ((rows // 5**d) % 5).astype(np.int8)
    frame["target"] = (rows / n).astype(np.float32)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / "coded.parquet", row_group_size=256)
    features = [f"feature_{d}" for d in range(N_DIGITS)]
    return build_cache(tmp / "coded.parquet", tmp / "cache", features, ["target"], progress=False)


def row_ids(x: np.ndarray) -> np.ndarray:
    """The row number encoded in scaled features (cache order equals file order here)."""
    digits = np.rint(x * 4).astype(np.int64)
    return (digits * 5 ** np.arange(N_DIGITS)).sum(axis=1)


def epoch_rows(stream: BatchStream, epoch: int, start: int = 0) -> list[np.ndarray]:
    with stream.epoch(epoch, start) as batches:
        return [row_ids(x) for x, _ in batches]


def no_stream_threads() -> bool:
    return not any(t.name.startswith("batch-stream") and t.is_alive() for t in threading.enumerate())


def test_every_row_exactly_once_per_epoch(coded):
    stream = BatchStream(coded, 128, window=300, seed=3, threads=3, prefetch=2)
    assert len(stream) == stream.steps == int(np.ceil(coded.n_rows / 128))
    for epoch in range(3):
        batches = epoch_rows(stream, epoch)
        assert len(batches) == stream.steps
        assert [len(b) for b in batches[:-1]] == [128] * (stream.steps - 1)
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(coded.n_rows))
    assert no_stream_threads()


def test_targets_travel_with_their_rows(coded):
    stream = BatchStream(coded, 97, window=500, seed=1)
    with stream.epoch(0) as batches:
        for x, y in batches:
            assert y.dtype == np.float32 and x.dtype == np.float32
            assert np.allclose(y[:, 0], row_ids(x) / coded.n_rows)
            assert x.min() >= 0.0 and x.max() <= 1.0


def test_deterministic_for_a_seed_and_independent_of_threads(coded):
    a = epoch_rows(BatchStream(coded, 100, window=400, seed=5, threads=1), 2)
    b = epoch_rows(BatchStream(coded, 100, window=400, seed=5, threads=4, prefetch=7), 2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    other_seed = epoch_rows(BatchStream(coded, 100, window=400, seed=6), 2)
    other_epoch = epoch_rows(BatchStream(coded, 100, window=400, seed=5), 3)
    assert not np.array_equal(np.concatenate(a), np.concatenate(other_seed))
    assert not np.array_equal(np.concatenate(a), np.concatenate(other_epoch))


def test_restart_at_a_batch_gives_the_same_tail(coded):
    stream = BatchStream(coded, 100, window=400, seed=5)
    full = epoch_rows(stream, 1)
    tail = epoch_rows(stream, 1, start=7)
    assert all(np.array_equal(u, v) for u, v in zip(full[7:], tail, strict=True))


def test_window_bounds_the_shuffle(coded):
    """Eras are visited in a shuffled order and rows only move within their window."""
    window = 256
    order = epoch_order(coded.counts, epoch=0, seed=2, window=window)
    eras = np.searchsorted(coded.offsets, order, side="right") - 1
    # era order changes between epochs, and is not the storage order
    orders = [epoch_order(coded.counts, e, 2, 10**9) for e in range(2)]
    assert not np.array_equal(orders[0], orders[1])
    # with window 1 nothing is shuffled within: each era is one contiguous run, in a shuffled order
    plain = epoch_order(coded.counts, epoch=0, seed=2, window=1)
    plain_eras = np.searchsorted(coded.offsets, plain, side="right") - 1
    runs = plain_eras[np.r_[True, np.diff(plain_eras) != 0]]
    assert sorted(runs) == list(range(len(coded.counts))) and list(runs) != sorted(runs)
    # with a window, each window holds exactly the rows of the same span of that era sequence
    for w0 in range(0, len(order), window):
        assert np.array_equal(np.sort(order[w0 : w0 + window]), np.sort(plain[w0 : w0 + window]))
    assert len(set(eras[:window])) > 1  # a window mixes eras
    assert not np.array_equal(order[:window], plain[:window])


def test_unshuffled_stream_is_cache_order(coded):
    stream = BatchStream(coded, 500, shuffle=False)
    batches = epoch_rows(stream, 0)
    assert np.array_equal(np.concatenate(batches), np.arange(coded.n_rows))
    assert np.array_equal(stream.targets()[:, 0], np.arange(coded.n_rows, dtype=np.float32) / coded.n_rows)
    assert len(stream.eras()) == coded.n_rows


def test_kept_batches_are_never_overwritten(coded):
    """Buffers are recycled only when no one holds them: keeping every batch stays correct."""
    stream = BatchStream(coded, 64, window=300, seed=0, prefetch=2, threads=2)
    with stream.epoch(0) as batches:
        kept = list(batches)
    ids = np.concatenate([row_ids(x) for x, _ in kept])
    assert np.array_equal(np.sort(ids), np.arange(coded.n_rows))
    assert len({id(x.base if x.base is not None else x) for x, _ in kept}) == len(kept)


def test_buffers_are_recycled_when_released(coded):
    stream = BatchStream(coded, 64, window=300, seed=0, prefetch=1, threads=1)
    bases = set()
    with stream.epoch(0) as batches:
        for x, _ in batches:
            bases.add(id(x.base))
            del x
    assert len(bases) <= 4  # the pool's few buffers, not one per batch


def test_exception_in_a_loader_thread_reaches_the_consumer(coded, monkeypatch):
    real = stream_module.gather_batch
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk went away")
        return real(*args)

    monkeypatch.setattr(stream_module, "gather_batch", failing)
    stream = BatchStream(coded, 50, seed=0, threads=2)
    with pytest.raises(StreamError, match="disk went away"), stream.epoch(0) as batches:
        for _ in batches:
            pass
    assert no_stream_threads()


def test_interrupt_and_early_exit_stop_the_threads(coded):
    stream = BatchStream(coded, 50, seed=0, threads=3, prefetch=6)
    with pytest.raises(KeyboardInterrupt), stream.epoch(0) as batches:
        for i, _ in enumerate(batches):
            if i == 2:
                raise KeyboardInterrupt
    assert no_stream_threads()
    batches = stream.epoch(1)
    next(batches)
    batches.close()
    batches.close()  # idempotent
    assert no_stream_threads()
    with pytest.raises(StopIteration):
        next(batches)


def test_eras_are_unmapped_once_passed(coded):
    stream = BatchStream(coded, 100, window=200, seed=4, threads=1, prefetch=1)
    mapped = []
    with stream.epoch(0) as batches:
        for _ in batches:
            mapped.append(len(batches._maps.maps))
        assert len(batches._maps.maps) == 0
    # a window of 200 rows touches few eras at a time, never all twelve
    assert max(mapped) <= 6


def test_bad_parameters_are_named(coded):
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(coded, 0)
    with pytest.raises(ValueError, match="window"):
        BatchStream(coded, 10, window=0)
    with pytest.raises(ValueError, match="seed"):
        BatchStream(coded, 10, seed=-1)
    with pytest.raises(IndexError, match="out of range"):
        BatchStream(coded, 100).epoch(0, start=10_000)


def test_keras_adapter(coded):
    stream = BatchStream(coded, 200, window=400, seed=9)
    ds = keras_dataset(stream)
    import keras

    assert isinstance(ds, keras.utils.PyDataset)
    assert len(ds) == stream.steps
    expected = [epoch_rows(stream, e) for e in (0, 1)]
    got0 = [row_ids(ds[i][0]) for i in range(len(ds))]
    ds.on_epoch_end()
    got1 = [row_ids(ds[i][0]) for i in range(len(ds))]
    assert all(np.array_equal(u, v) for u, v in zip(expected[0], got0, strict=True))
    assert all(np.array_equal(u, v) for u, v in zip(expected[1], got1, strict=True))
    assert np.array_equal(row_ids(ds[3][0]), expected[1][3])  # random access is exact
    assert np.array_equal(row_ids(ds[-1][0]), expected[1][-1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    ds.close()
    assert no_stream_threads()


def test_keras_fit_reads_each_epoch_in_one_pass(coded, monkeypatch):
    import keras

    reads = []
    epoch = BatchStream.epoch
    monkeypatch.setattr(
        BatchStream, "epoch", lambda self, e=0, start=0: reads.append((e, start)) or epoch(self, e, start)
    )
    stream = BatchStream(coded, 200, window=400, seed=9)
    model = keras.Sequential([keras.Input((N_DIGITS,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    ds = keras_dataset(stream)
    model.fit(ds, epochs=3, shuffle=False, verbose=0)
    # Keras first reads batches 0 and 1 for their shapes; that look does not use up an epoch
    assert reads == [(0, 0), (0, 0), (1, 0), (2, 0)]
    with pytest.warns(RuntimeWarning, match="shuffle=False"):
        model.fit(ds, epochs=1, shuffle=True, verbose=0)  # batches asked for in a random order
    ds.close()
    assert no_stream_threads()


def test_torch_adapter(coded):
    import torch

    stream = BatchStream(coded, 300, window=400, seed=9)
    ds = torch_dataset(stream)
    assert isinstance(ds, torch.utils.data.IterableDataset)
    assert len(ds) == stream.steps
    for epoch in (0, 1):
        batches = list(ds)  # each iteration is the next epoch
        assert all(isinstance(x, torch.Tensor) and x.dtype == torch.float32 for x, _ in batches)
        expected = epoch_rows(stream, epoch)
        assert all(np.array_equal(row_ids(x.numpy()), e) for (x, _), e in zip(batches, expected, strict=True))
    loader = torch.utils.data.DataLoader(torch_dataset(stream), batch_size=None, num_workers=0)
    assert sum(len(x) for x, _ in loader) == coded.n_rows
    assert no_stream_threads()


def test_batches_are_64_byte_aligned(coded):
    """TensorFlow wraps aligned batches without a copy (see aligned_empty)."""
    stream = BatchStream(coded, 100, seed=0)
    with stream.epoch(0) as batches:
        for x, y in batches:
            assert x.ctypes.data % 64 == 0 and y.ctypes.data % 64 == 0
