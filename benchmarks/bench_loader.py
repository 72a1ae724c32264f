"""Loader throughput: the era-sharded int8 cache + BatchStream versus the seed's approach.

The seed (document 001) splits the training parquet into 16 float32 parquet shards by
`era mod 16`, loads one shard at a time in a thread into a queue of 1 (shuffled with
`df.sample`, shard order shuffled every pass) and cuts it into 4096-row batches in a second
thread (queue of 3), crossing shard boundaries. That is re-implemented here as written, and both
loaders read the same data in the same run: rows/s over one epoch after a warm-up epoch, the
consumer doing nothing but taking batches.

    .venv/bin/python benchmarks/bench_loader.py --data /tmp/bench_loader_data
    (generates 50 eras x 4096 rows x 2376 features there if the directory is missing)
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow_numerai.data.cache import build_cache
from mlflow_numerai.data.io import feature_columns
from mlflow_numerai.data.stream import BatchStream

BATCH = 4096


# ------------------------------------------------------------------------------------------
# the seed's loader, as in document 001


def seed_divide(parquet: Path, out: Path, divnum: int = 16, batch_size: int = BATCH):
    """Split by era mod 16 into float32 (features / 4) parquet shards; rows cut to whole batches."""
    data = pd.read_parquet(parquet)
    feature_cols = [c for c in data.columns if c.startswith("feature")]
    n = len(data)
    amari = n % batch_size
    n -= amari
    names = []
    for idx in range(divnum):
        name = out / f"numerai_training_data_{idx}.parquet"
        names.append(name)
        df = data[pd.to_numeric(data["era"]) % divnum == idx].copy()
        if idx == 0 and amari > 0:
            df = df.head(len(df) - amari)
        df[feature_cols] = df[feature_cols] / 4.0
        df[feature_cols] = df[feature_cols].astype(np.float32)
        df.to_parquet(name)
    return n, names, feature_cols


class SeedFileLoader:
    def __init__(self, filenames, shuffle=True):
        self._filenames = filenames
        self._current = []
        self._shuffle = shuffle
        self._queue = queue.Queue(1)
        self._stop = False
        self._th = threading.Thread(target=self._load_thread, daemon=True)
        self._th.start()

    def _load_thread(self):
        while not self._stop:
            self._queue.put(self._load_next())

    def _load_next(self):
        if not self._current:
            self._current = random.sample(self._filenames, len(self._filenames)) if self._shuffle else list(self._filenames)
        name, self._current = self._current[0], self._current[1:]
        df = pd.read_parquet(name)
        if self._shuffle:
            df = df.sample(len(df))
        return df

    def load_next(self):
        return self._queue.get()

    def stop(self):
        while self._th.is_alive():
            self._stop = True
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._th.join(timeout=0.1)


class SeedGenerator:
    def __init__(self, n_rows, filenames, feature_cols, target, batch_size):
        self._loader = SeedFileLoader(filenames)
        self._features = feature_cols
        self._target = target
        self._batch_size = batch_size
        self.steps_per_epoch = n_rows // batch_size
        self._queue = queue.Queue(3)
        self._stop = False
        self._df = None
        self._index = 0
        self._change_file()
        self._th = threading.Thread(target=self._batch_thread, daemon=True)
        self._th.start()

    def _change_file(self):
        self._df = self._loader.load_next()
        self._index = 0

    def _next_df(self, length):
        df = self._df[self._index : self._index + length]
        self._index += length
        if len(df) != length:
            self._change_file()
            df = pd.concat([df, self._next_df(length - len(df))])
        return df

    def _batch_thread(self):
        while not self._stop:
            df = self._next_df(self._batch_size)
            self._queue.put((df[self._features].to_numpy(), df[self._target].to_numpy()))

    def batches(self):
        while True:
            yield self._queue.get()

    def stop(self):
        while self._th.is_alive():
            self._stop = True
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._th.join(timeout=0.1)
        self._loader.stop()


# ------------------------------------------------------------------------------------------


def time_seed(parquet: Path, work: Path) -> tuple[float, float, int]:
    """(prep seconds, rows/s of the timed epoch, rows per epoch) of the seed's loader."""
    t = time.perf_counter()
    n, names, features = seed_divide(parquet, work)
    prep = time.perf_counter() - t
    gen = SeedGenerator(n, names, features, "target", BATCH)
    it = gen.batches()
    try:
        for _ in range(gen.steps_per_epoch):  # warm-up epoch
            next(it)
        t = time.perf_counter()
        for _ in range(gen.steps_per_epoch):
            x, y = next(it)
        seconds = time.perf_counter() - t
    finally:
        gen.stop()
    assert x.dtype == np.float32 and x.shape == (BATCH, len(features))
    rows = gen.steps_per_epoch * BATCH
    return prep, rows / seconds, rows


def time_stream(parquet: Path, work: Path, features: list[str], threads: int, window: int) -> tuple[float, float, int]:
    """(cache build seconds, rows/s of the timed epoch, rows per epoch) of BatchStream."""
    t = time.perf_counter()
    cache = build_cache(parquet, work / "cache", features, ["target"], progress=False)
    prep = time.perf_counter() - t
    stream = BatchStream(cache, BATCH, window=window, seed=0, threads=threads, prefetch=4)
    for epoch in (0, 1):  # warm-up epoch, then the timed one
        t = time.perf_counter()
        with stream.epoch(epoch) as batches:
            for _ in batches:
                pass
        seconds = time.perf_counter() - t
    return prep, cache.n_rows / seconds, cache.n_rows


def ensure_data(path: Path, eras: int, rows_per_era: int, n_features: int) -> Path:
    if not (path / "metadata.json").exists():
        from mlflow_numerai.data.synthetic import generate_synthetic

        print(f"generating {eras} eras x {rows_per_era} rows x {n_features} features into {path}", flush=True)
        generate_synthetic(path, eras_train=eras, eras_validation=1, rows_per_era=rows_per_era,
                           n_features=n_features, seed=11, overwrite=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench_loader_data")
    parser.add_argument("--eras", type=int, default=50)
    parser.add_argument("--rows-per-era", type=int, default=4096)
    parser.add_argument("--features", type=int, default=2376)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=131072)
    args = parser.parse_args()
    data = ensure_data(args.data, args.eras, args.rows_per_era, args.features)
    parquet = data / "train.parquet"
    features = feature_columns(data, "all")
    work = Path(tempfile.mkdtemp(prefix="bench_loader_", dir=data.parent))
    try:
        (work / "seed").mkdir()
        seed_prep, seed_rate, seed_rows = time_seed(parquet, work / "seed")
        print(f"seed loader  : {seed_rate:12,.0f} rows/s  ({seed_rows:,} rows/epoch; 16-shard split {seed_prep:.1f} s)", flush=True)
        ours_prep, ours_rate, ours_rows = time_stream(parquet, work, features, args.threads, args.window)
        print(f"BatchStream  : {ours_rate:12,.0f} rows/s  ({ours_rows:,} rows/epoch; cache build {ours_prep:.1f} s, "
              f"{args.threads} threads)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = ours_rate / seed_rate
    print(f"ratio        : {ratio:.1f}x  ({len(features)} features, batch {BATCH}, cpu count {os.cpu_count()}; "
          f"target >= 10x: {'met' if ratio >= 10 else 'NOT met'})")


if __name__ == "__main__":
    main()
