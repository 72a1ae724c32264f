"""No starvation: seconds per epoch training from the stream versus from in-memory numpy arrays.

Same data (fits in memory), same MLP (the seed's 128-64-64), same batch size, same epochs. The
in-memory run is `model.fit(x, y, batch_size=4096, shuffle=True)` on float32 arrays already
scaled; the streamed run is `model.fit(keras_dataset(BatchStream(cache)), shuffle=False)` (the
stream shuffles). The first epoch of
each (tracing) is left out; the figure is the median of the remaining epochs. The two alternate
epoch by epoch (one-epoch fits of two models) so that load changes on a shared machine hit both
alike. Target: streamed / in-memory <= 1.15.

    .venv/bin/python benchmarks/bench_starvation.py --data /tmp/bench_loader_data --eras 25
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow_numerai.data.cache import build_cache
from mlflow_numerai.data.io import feature_columns
from mlflow_numerai.data.stream import BatchStream, keras_dataset
from mlflow_numerai.families.keras_stream import KerasStreamConfig, build_mlp

BATCH = 4096


def epoch_seconds(fit) -> list[float]:
    """Run `fit(callbacks)` and return the wall seconds of each epoch."""
    import keras

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    fit([Timer()])
    return times


def subset_parquet(parquet: Path, eras: int, out: Path) -> Path:
    """The rows of the first `eras` eras (read in row groups, written to `out`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(parquet)
    labels = sorted(set(pq.read_table(parquet, columns=["era"]).column(0).to_pylist()))[:eras]
    value_set = pa.array(labels)
    with pq.ParquetWriter(out, pf.schema_arrow) as writer:
        for i in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(i)
            table = table.filter(pc.is_in(table.column("era"), value_set=value_set))
            if table.num_rows:
                writer.write_table(table)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench_loader_data")
    parser.add_argument("--eras", type=int, default=25, help="use the first N train eras")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each (the first is left out)")
    parser.add_argument("--threads", type=int, default=1, help="loader threads (the Keras default)")
    args = parser.parse_args()
    if not (args.data / "train.parquet").exists():
        raise SystemExit(f"no data at {args.data}: run benchmarks/bench_loader.py first (it generates it)")
    features = feature_columns(args.data, "all")
    work = Path(tempfile.mkdtemp(prefix="bench_starvation_", dir=args.data.parent))
    try:
        parquet = subset_parquet(args.data / "train.parquet", args.eras, work / "train.parquet")
        cache = build_cache(parquet, work / "cache", features, ["target"], progress=False)
        config = KerasStreamConfig(batch_size=BATCH, seed=0)

        # in memory: the same rows, already scaled to float32
        x = np.concatenate([np.asarray(cache.era_x(i), dtype=np.float32) for i in range(len(cache.eras))])
        x *= np.float32(0.25)
        y = np.asarray(cache.targets_array()).copy()
        mem_model = build_mlp(len(features), 1, config)
        stream_model = build_mlp(len(features), 1, config)
        stream = BatchStream(cache, BATCH, seed=0, threads=args.threads, prefetch=4)
        dataset = keras_dataset(stream)
        mem: list[float] = []
        streamed: list[float] = []
        try:
            # alternate one-epoch fits so that load changes on a shared machine hit both alike
            for _ in range(args.epochs):
                mem += epoch_seconds(lambda cb: mem_model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=True,
                                                              callbacks=cb, verbose=0))
                streamed += epoch_seconds(lambda cb: stream_model.fit(dataset, epochs=1, shuffle=False, callbacks=cb,
                                                                      verbose=0))
        finally:
            dataset.close()
        rows = cache.n_rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m, s = float(np.median(mem[1:])), float(np.median(streamed[1:]))
    print(f"data         : {rows:,} rows x {len(features)} features, batch {BATCH}, MLP {config.hidden}, "
          f"{args.threads} loader threads, load average {os.getloadavg()[0]:.2f}")
    print(f"in-memory    : {m:7.2f} s/epoch  ({rows / m:,.0f} rows/s)  epochs {[round(t, 2) for t in mem]}")
    print(f"streamed     : {s:7.2f} s/epoch  ({rows / s:,.0f} rows/s)  epochs {[round(t, 2) for t in streamed]}")
    paired = float(np.median([b / a for a, b in zip(mem[1:], streamed[1:])]))
    print(f"ratio        : {s / m:.3f}  (median streamed / median in-memory; target <= 1.15: "
          f"{'met' if s / m <= 1.15 else 'NOT met'}); median of per-round ratios {paired:.3f}")


if __name__ == "__main__":
    main()
