"""Image-exact validation: overhead of `validate --image py3.11` (warm environment) over an
in-process predict and over `--image none`, and the cold build time of the image environment.

    .venv/bin/python benchmarks/bench_images.py [--repeats 5] [--rows 5000] [--cold-downloads]

Target (issue 12): warm `--image py3.11` overhead under 1.5 s over the in-process predict.
The environment in the cache root (`MLFLOW_NUMERAI_CACHE`) is reused when there; `--cold` also
times a build in a fresh root with uv's download cache as it is, `--cold-downloads` one with an
empty uv cache (every wheel downloaded from PyPI).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_sandbox import live_frame, small_model, timed

from mlflow_numerai.uploads import images
from mlflow_numerai.uploads.validate import validate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--image", default="py3.11")
    parser.add_argument("--cold", action="store_true", help="also time a build in a fresh cache root")
    parser.add_argument("--cold-downloads", action="store_true")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s); installer {images.installer()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        predict, features = small_model(200)
        pkl = tmp / "predict.pkl"
        pkl.write_bytes(cloudpickle.dumps(predict))
        live_path = tmp / "live.parquet"
        live_frame(features, args.rows).to_parquet(live_path)

        started = time.perf_counter()
        info = images.ImageEnv(args.image).ensure()  # the user's cache root: reused when there
        print(f"environment {info.path}: {'built' if info.built else 'reused'} in "
              f"{time.perf_counter() - started:.1f} s ({len(info.pins)} pins: "
              f"{', '.join(f'{k}=={v}' for k, v in info.pins.items())})")
        if args.cold:
            started = time.perf_counter()
            images.ImageEnv(args.image, root=tmp / "fresh").ensure()
            print(f"cold build of {args.image} (uv cache as is): {time.perf_counter() - started:.1f} s")
        if args.cold_downloads:
            os.environ["UV_CACHE_DIR"] = str(tmp / "uv-cache")
            started = time.perf_counter()
            images.ImageEnv(args.image, root=tmp / "cold").ensure()
            print(f"cold build of {args.image} with an empty uv cache (downloads): {time.perf_counter() - started:.1f} s")
            del os.environ["UV_CACHE_DIR"]

        def in_process():
            fn = pd.read_pickle(pkl)
            fn(pd.read_parquet(live_path))

        def flow(image):
            report = validate(str(pkl), live=live_path, image=image)
            assert report.status == "Success", report.message
            if image != "none":
                assert report.image["env_built"] is False

        flow(args.image)  # first child run in the environment
        base = timed(in_process, args.repeats)
        none = timed(lambda: flow("none"), args.repeats)
        warm = timed(lambda: flow(args.image), args.repeats)
        med = statistics.median
        print(f"in-process predict:           median {med(base):.3f} s  {[round(x, 2) for x in base]}")
        print(f"validate --image none:        median {med(none):.3f} s  overhead {med(none) - med(base):.3f} s")
        print(f"validate --image {args.image} warm: median {med(warm):.3f} s  overhead {med(warm) - med(base):.3f} s "
              f"(target < 1.5 s: {'met' if med(warm) - med(base) < 1.5 else 'NOT met'}; "
              f"{med(warm) - med(none):+.3f} s vs --image none)")


if __name__ == "__main__":
    main()
