"""Full-size synthetic generation: rows/s and peak RSS of the generating process (< 2 GiB).

Numerai's full size: ~2.7M rows x 2376 features (here 480 train + 94 validation eras of 4700
rows, plus one live era). The generator runs in a child process; its peak RSS comes from
`getrusage(RUSAGE_CHILDREN)` (kernel high-water mark) and is cross-checked by psutil sampling.
Output goes to a temporary directory under /tmp that is deleted afterwards, unless `--keep DIR`
(e.g. for the Keras streaming memory benchmark).

    .venv/bin/python benchmarks/bench_synthetic.py [--keep /tmp/numerai_full] [--rows-per-era N ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

GIB = 2**30

CHILD = """
import sys, json
from mlflow_numerai.data.synthetic import generate_synthetic
kw = json.loads(sys.argv[1])
generate_synthetic(kw.pop("out"), overwrite=True, progress=True, **kw)
"""


def sample_rss(proc: psutil.Process, stop: threading.Event, peak: list[int]) -> None:
    """Poll the child's RSS (plus its children's) until `stop`; keep the maximum in peak[0]."""
    while not stop.is_set():
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak[0] = max(peak[0], rss)
        except psutil.Error:
            break
        stop.wait(0.2)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras-train", type=int, default=480)
    parser.add_argument("--eras-validation", type=int, default=94)
    parser.add_argument("--rows-per-era", type=int, default=4700)
    parser.add_argument("--features", type=int, default=2376)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-gib", type=float, default=2.0, help="peak RSS budget (default 2 GiB)")
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep the output")
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"), help="parent of the temporary output")
    args = parser.parse_args()

    scratch = None
    if args.keep is not None:
        out = args.keep.expanduser().absolute()
    else:
        scratch = Path(tempfile.mkdtemp(prefix="bench_synthetic-", dir=args.tmp))
        out = scratch / "data"
    kwargs = dict(
        out=str(out),
        eras_train=args.eras_train,
        eras_validation=args.eras_validation,
        rows_per_era=args.rows_per_era,
        n_features=args.features,
        seed=args.seed,
    )
    rows = (args.eras_train + args.eras_validation + 1) * args.rows_per_era
    in_memory = rows * args.features  # bytes of the int8 feature matrix alone
    print(f"generating {rows:,} rows x {args.features} features into {out}", flush=True)

    try:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(kwargs)])
        stop, peak_sampled = threading.Event(), [0]
        sampler = threading.Thread(target=sample_rss, args=(psutil.Process(child.pid), stop, peak_sampled))
        sampler.start()
        code = child.wait()
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        if code != 0:
            print(f"generator failed with exit status {code}", file=sys.stderr)
            return 1
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = usage.ru_maxrss * 1024  # KiB on Linux
        cpu = usage.ru_utime + usage.ru_stime
        on_disk = dir_size(out)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    limit = args.limit_gib * GIB
    ok = peak < limit
    print()
    print(f"rows                 {rows:,} ({args.eras_train}+{args.eras_validation}+1 eras x {args.rows_per_era})")
    print(f"features             {args.features}")
    print(f"wall time            {seconds:,.1f} s")
    print(f"throughput           {rows / seconds:,.0f} rows/s ({in_memory / seconds / 2**20:,.1f} MiB/s of int8 features)")
    print(f"CPU time             {cpu:,.1f} s ({rows / cpu:,.0f} rows per CPU-second; load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs)")
    print(f"peak RSS (rusage)    {peak / GIB:.2f} GiB")
    print(f"peak RSS (sampled)   {peak_sampled[0] / GIB:.2f} GiB")
    print(f"int8 features in RAM {in_memory / GIB:.2f} GiB (what loading it all at once would need, at least)")
    print(f"written              {on_disk / GIB:.2f} GiB parquet")
    verdict = "PASS" if ok else "FAIL"
    print(
        f"{verdict}: peak RSS {peak / GIB:.2f} GiB vs budget {args.limit_gib:.2f} GiB "
        f"({peak / in_memory:.1%} of the in-memory feature matrix)"
    )
    if args.keep is not None:
        print(f"kept the data set in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
