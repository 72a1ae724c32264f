"""Benchmark: `per_era_numerai_corr` against a straightforward per-era, per-column pandas
implementation of the numerai-tools recipe, measured in the same run.

    .venv/bin/python benchmarks/bench_scoring.py                      # 1000 cols x 100 eras x 5000 rows
    .venv/bin/python benchmarks/bench_scoring.py --columns 100 --eras 20   # quick look

The vectorized function scores every column; the pandas baselines are timed on
`--baseline-columns` columns (all eras) and scaled linearly to all columns (their cost is one
independent call per era and column, so it is linear in the columns). Two baselines:

* `recipe`: numerai-tools' numerai_corr per column as written there (center target, intersect
  and sort ids, rank, ppf, power, pandas Pearson) — what one gets by looping numerai-tools;
* `lean`: only rank, ppf, power and Pearson per column (no id matching) — a lower bound.

Peak memory: the process RSS sampled every 5 ms while the vectorized function runs, minus the
RSS before it (the input frame itself is reported separately).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time

import numpy as np
import pandas as pd
import psutil
from scipy.stats import norm

from mlflow_numerai.scoring import per_era_numerai_corr


def pandas_numerai_corr(pred: pd.Series, target: pd.Series) -> float:
    """numerai-tools' numerai_corr for one column, in plain pandas."""
    target = target - target.mean()
    ids = pred.dropna().index.intersection(target.dropna().index)
    pred, target = pred.loc[ids].sort_index(), target.loc[ids].sort_index()
    ranked = (pred.rank(method="average") - 0.5) / pred.count()
    gauss = pd.Series(norm.ppf(ranked), index=ranked.index)
    return (np.sign(target) * np.abs(target) ** 1.5).corr(np.sign(gauss) * np.abs(gauss) ** 1.5)


def lean_numerai_corr(pred: pd.Series, target: pd.Series) -> float:
    """The same without id matching (aligned inputs assumed)."""
    ranked = (pred.rank(method="average") - 0.5) / pred.count()
    gauss = pd.Series(norm.ppf(ranked), index=ranked.index)
    target = target - target.mean()
    return (np.sign(target) * np.abs(target) ** 1.5).corr(np.sign(gauss) * np.abs(gauss) ** 1.5)


def pandas_per_era(preds: pd.DataFrame, target: pd.Series, eras: pd.Series, one=pandas_numerai_corr) -> pd.DataFrame:
    """Era by era, column by column."""
    rows = {}
    for era, ids in preds.groupby(eras).groups.items():
        p, t = preds.loc[ids], target.loc[ids]
        rows[era] = {c: one(p[c], t) for c in p.columns}
    return pd.DataFrame(rows).T.rename_axis("era")


class RssSampler:
    """Peak resident memory of this process while the block runs."""

    def __init__(self, every: float = 0.005):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._proc = psutil.Process()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self):
        self.before = self._proc.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def make_data(n_cols: int, n_eras: int, rows: int, dtype: str, shuffle: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_eras * rows
    ids = pd.Index([f"n{i:08d}" for i in range(n)], name="id")
    values = rng.random((n, n_cols), dtype=np.float32) if dtype == "float32" else rng.random((n, n_cols))
    preds = pd.DataFrame(values, index=ids, columns=[f"sample_{j:04d}" for j in range(n_cols)], copy=False)
    eras = pd.Series(np.repeat([f"{e:04d}" for e in range(1, n_eras + 1)], rows), index=ids, name="era")
    signal = values[:, 0].astype(np.float64) + rng.normal(0, 1, n)
    target = pd.Series(np.clip(np.round(signal + 1.5), 0, 4) / 4, index=ids, name="target")
    if shuffle:  # eras interleaved: each era's rows are gathered, not sliced
        order = rng.permutation(n)
        preds, eras, target = preds.iloc[order], eras.iloc[order], target.iloc[order]
    return preds, target, eras


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", type=int, default=1000)
    ap.add_argument("--eras", type=int, default=100)
    ap.add_argument("--rows", type=int, default=5000, help="rows per era")
    ap.add_argument("--baseline-columns", type=int, default=20)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--shuffle", action="store_true", help="interleave the eras' rows")
    args = ap.parse_args(argv)
    gib = 2.0**30

    started = time.perf_counter()
    preds, target, eras = make_data(args.columns, args.eras, args.rows, args.dtype, args.shuffle)
    print(f"data: {args.columns} columns x {args.eras} eras x {args.rows} rows, {args.dtype}"
          f"{', shuffled' if args.shuffle else ''}; predictions {preds.memory_usage(deep=False).sum() / gib:.2f} GiB"
          f" (made in {time.perf_counter() - started:.1f} s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    with RssSampler() as mem:
        started = time.perf_counter()
        ours = per_era_numerai_corr(preds, target, eras)
        ours_s = time.perf_counter() - started
    print(f"vectorized per_era_numerai_corr: {ours_s:.2f} s for all {args.columns} columns "
          f"({ours_s / args.eras * 1000:.0f} ms per era); peak extra RSS {(mem.peak - mem.before) / gib:.3f} GiB "
          f"(process peak {mem.peak / gib:.2f} GiB)")

    sub = preds.iloc[:, : args.baseline_columns]
    results = {}
    for name, one in (("recipe", pandas_numerai_corr), ("lean", lean_numerai_corr)):
        started = time.perf_counter()
        base = pandas_per_era(sub, target, eras, one)
        seconds = time.perf_counter() - started
        scaled = seconds * args.columns / args.baseline_columns
        diff = np.abs(ours[sub.columns].to_numpy() - base.loc[ours.index, sub.columns].to_numpy()).max()
        results[name] = scaled / ours_s
        print(f"pandas baseline ({name}): {seconds:.2f} s for {args.baseline_columns} columns -> "
              f"{scaled:.1f} s scaled to {args.columns} columns; speed-up {scaled / ours_s:.1f}x; "
              f"max |difference| {diff:.2e}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"process max RSS (getrusage): {peak_kib / 2**20:.2f} GiB; load average now {os.getloadavg()[0]:.1f}")
    ok = results["recipe"] >= 20
    print(f"target >= 20x against the numerai-tools recipe: {'met' if ok else 'NOT met'} ({results['recipe']:.1f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
