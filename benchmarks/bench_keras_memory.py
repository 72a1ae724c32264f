"""Peak memory of one streamed Keras epoch on the full-size synthetic set, cache build included.

Full size: 2.7M train rows x 2376 features (6.4 GB of int8, 26 GB as float32). In one process:
build the train and validation caches from the parquet files, then train the 128-64-64 MLP for
one epoch from the stream (with the end-of-epoch validation scoring). Peak RSS is the kernel's
high-water mark (`ru_maxrss`, which counts memory-mapped file pages too) and a 0.2 s psutil
sampler per phase. Target: under 3 GiB.

Make the data first (bounded memory, several minutes), e.g.

    .venv/bin/python benchmarks/bench_synthetic.py --keep /tmp/full   # or generate_synthetic(
        out, eras_train=574, eras_validation=20, rows_per_era=4704, n_features=2376)
    .venv/bin/python benchmarks/bench_keras_memory.py --data /tmp/full
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow_numerai.data.cache import build_cache
from mlflow_numerai.data.io import feature_columns, split_path

GIB = 2**30
TARGET_GIB = 3.0


class PeakSampler:
    """Samples this process's RSS every `interval` seconds; `peak` since the last `reset`."""

    def __init__(self, interval: float = 0.2):
        self.proc = psutil.Process()
        self.peak = 0
        self.interval = interval
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def reset(self) -> int:
        peak, self.peak = max(self.peak, self.proc.memory_info().rss), 0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._th.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="full-size synthetic (or real) data dir")
    parser.add_argument("--cache", type=Path, default=None, help="cache dir (default: a temporary dir, removed)")
    parser.add_argument("--feature-set", default="all")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    features = feature_columns(args.data, args.feature_set)
    cache_dir = args.cache or Path(tempfile.mkdtemp(prefix="bench_keras_memory_", dir=tempfile.gettempdir()))
    sampler = PeakSampler()
    phases: dict[str, tuple[float, int]] = {}
    try:
        t = time.perf_counter()
        train = build_cache(split_path(args.data, "train"), cache_dir / "train", features, ["target"])
        validation = build_cache(split_path(args.data, "validation"), cache_dir / "validation", features, ["target"])
        phases["cache build"] = (time.perf_counter() - t, sampler.reset())
        print(f"cache: {train.n_rows:,} train rows, {validation.n_rows:,} validation rows, "
              f"{train.n_features} features, {phases['cache build'][0]:.0f} s", flush=True)

        from mlflow_numerai.families.keras_stream import KerasStreamConfig, train_keras_stream

        t = time.perf_counter()
        config = KerasStreamConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0)
        result = train_keras_stream(train, validation, config, verbose=2,
                                    on_epoch_end=lambda e, m: print(f"epoch {e}: {m}", flush=True))
        phases["training"] = (time.perf_counter() - t, sampler.reset())
    finally:
        sampler.stop()
        if args.cache is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for name, (seconds, peak) in phases.items():
        print(f"{name:12s}: {seconds:8.0f} s, peak RSS (sampled) {peak / GIB:.2f} GiB")
    print(f"rows/s       : {result.history['rows_per_sec'].iloc[-1]:,.0f} (training, last epoch)")
    print(f"peak RSS     : {maxrss / GIB:.2f} GiB (ru_maxrss, whole process; target < {TARGET_GIB} GiB: "
          f"{'met' if maxrss < TARGET_GIB * GIB else 'NOT met'}); float32 train set would be "
          f"{train.n_rows * train.n_features * 4 / GIB:.2f} GiB")


if __name__ == "__main__":
    main()
