"""Study wall time with 1 vs 2 local workers, and the study machinery's per-trial overhead over a
plain `train baseline` run, measured in the same run on the same small synthetic set.

    .venv/bin/python benchmarks/bench_study.py --trials 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(args: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([str(BIN / "mlflow-numerai"), *args], env=env, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        data = tmp / "data"
        subprocess.run([str(BIN / "mlflow-numerai"), "data", "synth", "--out", str(data), "--eras-train", "40",
                        "--eras-validation", "12", "--rows-per-era", "200", "--features", "40", "--no-progress"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        common = ["--data-dir", str(data), "--feature-set", "all"]

        def store(name: str) -> dict:
            (tmp / name).mkdir()
            return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / name / 'mlflow.db'}",
                    "MLFLOW_NUMERAI_CACHE": str(tmp / "cache")}

        # Warm stores (migrations excluded: a fresh store's first use is the same for both).
        for name in ("plain", "w1", "w2"):
            timed(["train", "baseline", *common, "--registered-model-name", "none"], store(name), tmp / name)
        plain = [timed(["train", "baseline", *common, "--registered-model-name", "none"],
                       {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'plain' / 'mlflow.db'}",
                        "MLFLOW_NUMERAI_CACHE": str(tmp / "cache")}, tmp / "plain") for _ in range(2)]
        per_run = min(plain)
        walls = {}
        for workers in (1, 2):
            name = f"w{workers}"
            walls[workers] = timed(["study", "baseline", "--trials", str(opts.trials), "--workers", str(workers),
                                    "--seed", "0", "--heartbeat", "2", *common],
                                   {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / name / 'mlflow.db'}",
                                    "MLFLOW_NUMERAI_CACHE": str(tmp / "cache")}, tmp / name)
        print(f"plain `train baseline` run (process included): {per_run:.1f} s")
        print(f"study, {opts.trials} trials, 1 worker: {walls[1]:.1f} s; 2 workers: {walls[2]:.1f} s; "
              f"1/2 ratio {walls[1] / walls[2]:.2f}x")
        print(f"study per trial (1 worker): {walls[1] / opts.trials:.1f} s vs plain run {per_run:.1f} s: "
              f"overhead {walls[1] / opts.trials - per_run:+.1f} s per trial (one process for all trials "
              "saves the start-up a plain run pays each time)")
        print(os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
