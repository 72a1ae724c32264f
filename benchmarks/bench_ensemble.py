"""Ensemble predict time at Numerai's live size versus the sum of its members', same run.

    .venv/bin/python benchmarks/bench_ensemble.py [--rows 5000] [--features 2376] [--repeats 5]

Members as the families build them (random weights, same code paths): the ridge baseline on
every feature, a streamed-Keras numpy MLP 2376-128-64-64-1, and the Bayesian NN's numpy predict
with K=100 posterior samples of 2376-32-16-1. Each is saved to a predict.pkl and loaded back, as
is the equal-weight ensemble of the three (through `save_predict`/`load_predict`, like Numerai).
Members and ensemble run back to back in each repeat (machine load hits both alike). Prints the
median seconds of each member, their sum, the ensemble's, the overhead (ensemble - sum) absolute
and relative, the blending step alone; also the ensemble with 50 % neutralization to
`--neutralize-features` features (a least-squares fit per era: its cost grows with rows x
features^2, so neutralizing to all 2376 features costs minutes on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mlflow_numerai import ensembles
from mlflow_numerai.families import baseline, bayes_nn, keras_stream
from mlflow_numerai.packaging import load_predict, save_predict


def live_frame(rows: int, n_features: int, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    features = [f"feature_{i:04d}" for i in range(n_features)]
    x = rng.integers(0, 5, size=(rows, n_features), dtype=np.int8)
    frame = pd.DataFrame(x, columns=features, index=pd.Index([f"id{i:06d}" for i in range(rows)], name="id"))
    frame.insert(0, "era", "X")
    frame.insert(1, "data_type", "live")
    return frame, features


def members(features: list[str], seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    f = len(features)
    ridge = baseline.make_predict(baseline.RidgeFit(features, rng.normal(size=f), 0.0, np.zeros(f)))
    widths = [f, 128, 64, 64, 1]
    layers = [(rng.normal(scale=0.05, size=(a, b)).astype(np.float32), np.zeros(b, np.float32))
              for a, b in zip(widths[:-1], widths[1:])]
    keras = keras_stream.make_predict(layers, features)
    k, bnn_widths = 100, [f, 32, 16, 1]
    samples = bayes_nn.PosteriorSamples(
        [torch.randn(k, a, b) * 0.05 for a, b in zip(bnn_widths[:-1], bnn_widths[1:])],
        [torch.zeros(k, b) for b in bnn_widths[1:]])
    bnn = bayes_nn.make_predict(features, samples, k=k)
    return {"ridge": ridge, "keras": keras, "bnn": bnn}


def interleaved(loaded: dict, ensemble, frame: pd.DataFrame, repeats: int) -> tuple[dict, list, list]:
    """Per repeat: each member, then the ensemble, back to back (so machine load hits both alike).
    Returns ({member: [seconds]}, [sum of members per repeat], [ensemble seconds per repeat])."""
    for fn in [*loaded.values(), ensemble]:
        fn(frame)  # warm-up (caches, first touch)
    per_member = {name: [] for name in loaded}
    sums, ens = [], []
    for _ in range(repeats):
        total = 0.0
        for name, fn in loaded.items():
            start = time.perf_counter()
            fn(frame)
            per_member[name].append(time.perf_counter() - start)
            total += per_member[name][-1]
        sums.append(total)
        start = time.perf_counter()
        ensemble(frame)
        ens.append(time.perf_counter() - start)
    return per_member, sums, ens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--features", type=int, default=2376)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--neutralize-features", type=int, default=200)
    args = ap.parse_args()
    live, features = live_frame(args.rows, args.features)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {name: load_predict(save_predict(fn, Path(tmp) / f"{name}.pkl")) for name, fn in members(features).items()}
        parts = [ensembles.Member(name, fn) for name, fn in loaded.items()]
        equal = np.full(len(parts), 1 / len(parts))
        ens = load_predict(save_predict(ensembles.make_ensemble_predict(parts, equal), Path(tmp) / "ensemble.pkl"))
        neutral = load_predict(save_predict(ensembles.make_ensemble_predict(parts, equal, features[:args.neutralize_features], 0.5),
                                            Path(tmp) / "neutral.pkl"))
        size = os.path.getsize(Path(tmp) / "ensemble.pkl") / 2**20
        member_sizes = sum(os.path.getsize(Path(tmp) / f"{n}.pkl") for n in loaded) / 2**20
        print(f"live frame: {args.rows} rows x {args.features} features; median of {args.repeats}; "
              f"load {os.getloadavg()[0]:.1f}")
        per_member, sums, ens_times = interleaved(loaded, ens, live, args.repeats)
        for name, times in per_member.items():
            print(f"  member {name:6s} {statistics.median(times):.3f} s")
        total, t_ens = statistics.median(sums), statistics.median(ens_times)
        ratios = [e / s - 1 for e, s in zip(ens_times, sums)]
        print(f"  sum of members   {total:.3f} s")
        print(f"  ensemble         {t_ens:.3f} s  overhead {t_ens - total:+.3f} s ({(t_ens / total - 1) * 100:+.1f} %); "
              f"per repeat {min(ratios) * 100:+.1f} % .. {max(ratios) * 100:+.1f} %")
        outputs = pd.DataFrame({name: fn(live)["prediction"] for name, fn in loaded.items()})
        blend_only = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ensembles.rank_blend(outputs, equal, live["era"])
            blend_only.append(time.perf_counter() - start)
        print(f"  blending alone (rank, weighted mean, rank) {statistics.median(blend_only) * 1000:.1f} ms")
        _, n_sums, n_times = interleaved(loaded, neutral, live, max(3, args.repeats // 2))
        t_neu = statistics.median(n_times)
        print(f"  ensemble + 50 % neutralization to {args.neutralize_features} features  {t_neu:.3f} s "
              f"({(t_neu / statistics.median(n_sums) - 1) * 100:+.1f} % over the members)")
        print(f"  predict.pkl: ensemble {size:.1f} MiB, members {member_sizes:.1f} MiB together")


if __name__ == "__main__":
    main()
