"""Bayesian NN benchmarks (issue 6): batched posterior predictive vs this machine's matmul peak
and vs looping, peak memory of a 1000-sample x 1M-row predictive, SVI rows/s.

    .venv/bin/python benchmarks/bench_bnn.py                 # all parts
    .venv/bin/python benchmarks/bench_bnn.py --parts predictive,loops --rows 10000 --loop-rows 1000,10000

Weights are random draws of the right shapes (speed does not depend on their values); the
architecture is the seed's 128-64-64 on `--features` inputs. Every comparison is measured in the
same run. Prints one markdown table per part.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from mlflow_numerai.families import bayes_nn as bnn


def random_samples(n_samples: int, widths: list[int], seed: int = 0) -> bnn.PosteriorSamples:
    gen = torch.Generator().manual_seed(seed)
    shapes = list(zip(widths[:-1], widths[1:]))
    weights = [torch.randn(n_samples, a, b, generator=gen) * (2 / a) ** 0.5 for a, b in shapes]
    biases = [torch.randn(n_samples, b, generator=gen) * 0.01 for _, b in shapes]
    return bnn.PosteriorSamples(weights, biases)


def flops(n_rows: int, n_samples: int, widths: list[int]) -> float:
    """Multiply-adds x 2 of the forward pass of every sample on every row."""
    return 2.0 * n_rows * n_samples * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a square float32 torch.mm (this machine's practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2.0 * n**3 / best_of(lambda: torch.mm(a, b), repeats) / 1e9


def per_sample_loop(samples: bnn.PosteriorSamples, x: torch.Tensor) -> np.ndarray:
    """Mean over samples, one ordinary forward pass per sample."""
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for s in range(samples.n_samples):
            h = x
            for i, (w, b) in enumerate(zip(samples.weights, samples.biases)):
                h = torch.addmm(b[s], h, w[s])
                if i < len(samples.weights) - 1:
                    h = torch.relu(h)
            total += h[:, 0].double()
    return (total / samples.n_samples).numpy()


def pyro_predictive_loop(n_features: int, hidden: tuple[int, ...], x: torch.Tensor, n_samples: int) -> float:
    """Seconds for `pyro.infer.Predictive` (sequential: one model + guide trace per sample)."""
    import pyro
    from pyro.infer import Predictive

    spec = bnn.BNNSpec(n_features, hidden, "normal")
    fit = bnn.fit_svi(bnn.array_batches(np.zeros((8, n_features), np.float32), np.zeros((8, 1), np.float32)), spec,
                      epochs=1, progress=False)
    model = lambda x: bnn.bnn_model(x, spec=spec)  # noqa: E731
    pyro.set_rng_seed(0)
    predictive = Predictive(model, guide=fit.guide, num_samples=n_samples, parallel=False, return_sites=("_RETURN",))
    start = time.perf_counter()
    with torch.no_grad():
        predictive(x)["_RETURN"][..., 0].mean(0)
    return time.perf_counter() - start


MEMORY_CHILD = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from benchmarks.bench_bnn import random_samples, vm_hwm_mib
from mlflow_numerai.families import bayes_nn as bnn
torch.set_num_threads({threads})
widths = {widths}
x = torch.rand({rows}, widths[0]) - 0.5
samples = random_samples({samples}, widths)
base = vm_hwm_mib()
start = time.perf_counter()
mean, std = bnn.predictive_mean_std(samples, x, budget_bytes={budget})
seconds = time.perf_counter() - start
print(json.dumps({{"peak_mib": vm_hwm_mib(), "before_mib": base, "seconds": seconds,
                  "finite": bool(torch.isfinite(torch.as_tensor(mean)).all())}}))
"""


def vm_hwm_mib() -> float:
    """This process's peak RSS (`VmHWM`: unlike `ru_maxrss`, not inherited from the parent
    across fork + exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_run(rows: int, samples: int, widths: list[int], budget: int, threads: int) -> dict:
    """Peak RSS of a fresh process running the chunked predictive on rows x samples."""
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = MEMORY_CHILD.format(root=root, rows=rows, samples=samples, widths=widths, budget=budget,
                               threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="predictive,loops,memory,svi")
    parser.add_argument("--rows", type=int, default=30_000, help="validation rows (default synthetic set: 30k)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--hidden", default="128-64-64")
    parser.add_argument("--budget-mb", type=float, default=512)
    parser.add_argument("--loop-samples", type=int, default=200, help="samples timed in the pyro Predictive loop")
    parser.add_argument("--loop-rows", default="1000,3000,10000,30000", help="row counts compared with the loops")
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--memory-hidden", default="128-64-64")
    parser.add_argument("--svi-rows", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    parts = set(args.parts.split(","))
    hidden = bnn.parse_hidden(args.hidden)
    widths = [args.features, *hidden, 1]
    budget = int(args.budget_mb * 2**20)
    x = torch.rand(args.rows, args.features) - 0.5
    samples = random_samples(args.samples, widths)
    work = flops(args.rows, args.samples, widths)
    print(f"torch {torch.__version__}, {threads} thread(s); net {widths}; {args.rows} rows x {args.samples} samples "
          f"= {work / 1e9:.1f} GFLOP")

    if "predictive" in parts:
        peak_before = matmul_peak()
        bnn.predictive_mean_std(samples.head(10), x[:1000], budget_bytes=budget)  # warm-up
        batched_s = best_of(lambda: bnn.predictive_mean_std(samples, x, budget_bytes=budget), 2)
        peak = max(peak_before, matmul_peak())  # before and after: the higher one (clock speeds drift)
        rate = work / batched_s / 1e9
        print("\n| what | seconds | GFLOP/s | % of matmul peak |\n| --- | --- | --- | --- |")
        print(f"| torch.mm 2048x2048 (peak: the higher of before / after) | | {peak:.1f} | 100 % |")
        print(f"| batched predictive (mean+std, {args.budget_mb:g} MiB blocks) | {batched_s:.2f} | {rate:.1f} | "
              f"{100 * rate / peak:.0f} % |")

    if "loops" in parts:
        k = min(args.loop_samples, args.samples)
        note = "" if k == args.samples else f"; Predictive: {k} samples measured, scaled x{args.samples / k:g}"
        print(f"\n{args.samples} samples, same rows, same run{note}:\n")
        print("| rows | batched s | GFLOP/s | per-sample torch loop s | GFLOP/s | batched faster by | "
              "`Predictive` loop s | batched faster by |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for rows in [int(r) for r in args.loop_rows.split(",")]:
            xr = torch.rand(rows, args.features) - 0.5
            work_r = flops(rows, args.samples, widths)
            b_s = best_of(lambda xr=xr: bnn.predictive_mean_std(samples, xr, budget_bytes=budget), 2)
            loop_s = best_of(lambda xr=xr: per_sample_loop(samples, xr), 2)
            pyro_s = pyro_predictive_loop(args.features, hidden, xr, k) * args.samples / k
            print(f"| {rows:,} | {b_s:.2f} | {work_r / b_s / 1e9:.0f} | {loop_s:.2f} | {work_r / loop_s / 1e9:.0f} | "
                  f"{loop_s / b_s:.1f}x | {pyro_s:.2f} | {pyro_s / b_s:.1f}x |")

    if "memory" in parts:
        mem_widths = [args.features, *bnn.parse_hidden(args.memory_hidden), 1]
        result = memory_run(args.memory_rows, args.samples, mem_widths, budget, threads)
        full = args.memory_rows * args.samples * 4 / 2**20
        print(f"\n| predictive mean+std, {args.memory_rows} rows x {args.samples} samples, net {mem_widths} | value |")
        print("| --- | --- |")
        print(f"| peak RSS (fresh process, inputs + weights + blocks) | {result['peak_mib']:.0f} MiB |")
        print(f"| RSS before the predictive (inputs + weights) | {result['before_mib']:.0f} MiB |")
        print(f"| S x N float32 predictions if materialised | {full:.0f} MiB |")
        print(f"| block budget | {args.budget_mb:g} MiB |")
        print(f"| seconds | {result['seconds']:.1f} |")

    if "svi" in parts:
        rng = np.random.default_rng(0)
        xs = (rng.integers(0, 5, (args.svi_rows, args.features)) / 4 - 0.5).astype(np.float32)
        ys = (0.5 + 0.1 * xs[:, 0] + 0.2 * rng.standard_normal(args.svi_rows)).astype(np.float32)
        batches = bnn.array_batches(xs, ys, batch_size=4096)
        print(f"\n| training, {args.svi_rows} rows, net {widths}, batch 4096, 2 epochs | rows/s |\n| --- | --- |")
        for prior in bnn.PRIORS:
            fit = bnn.fit_svi(batches, bnn.BNNSpec(args.features, hidden, prior), epochs=2, progress=False)
            print(f"| SVI (Trace_ELBO, AutoNormal), prior {prior} | {fit.rows_per_sec:,.0f} |")
        base = bnn.fit_baseline(batches, hidden, epochs=2, progress=False)
        print(f"| deterministic baseline (MSE, Adam) | {base.rows_per_sec:,.0f} |")


if __name__ == "__main__":
    main()
