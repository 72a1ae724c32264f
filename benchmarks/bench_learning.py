"""Families that learn (issue 17): validation corr reached versus wall seconds, per family and
configuration, on one synthetic set, ridge measured in the same run as the yardstick.

    nice .venv/bin/python benchmarks/bench_learning.py                       # defaults of each family
    nice .venv/bin/python benchmarks/bench_learning.py --keras "lr=0.003,batch=1024" --keras "..."
    nice .venv/bin/python benchmarks/bench_learning.py --families ridge,bnn --bnn "lr=0.01,init_scale=0.05"

Maths only (the families' own functions, no MLflow): corr is the mean per-era numerai_corr of
the first target on validation, as the `numerai` evaluator's `numerai_corr_mean`. A Keras or BNN
configuration is a comma list of key=value overriding that family's defaults (keys below).
Prints one markdown table row per run, and the machine load (`uptime`) before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np
import pandas as pd

KERAS_KEYS = {"hidden": str, "epochs": int, "batch": int, "lr": float, "schedule": str, "warmup": float,
              "patience": int, "wd": float, "dropout": float, "noise": float, "seed": int}
BNN_KEYS = {"hidden": str, "prior": str, "epochs": int, "batch": int, "lr": float, "init_scale": float,
            "prior_scale": float, "final_lr": float, "n_samples": int, "seed": int}


def parse_config(text: str, keys: dict) -> dict:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if key not in keys:
            raise SystemExit(f"unknown key {key!r}; choose from {sorted(keys)}")
        out[key] = keys[key](value)
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def ridge(path, features) -> dict:
    from mlflow_numerai.data import io as data_io
    from mlflow_numerai.families.baseline import train_baseline
    from mlflow_numerai.scoring import per_era_numerai_corr

    start, cpu = time.perf_counter(), time.process_time()
    train = data_io.read_split(path, "train", columns=[*features, "target"])
    predict, _ = train_baseline(train, features)
    valid = data_io.read_split(path, "validation", columns=[*features, "target"])
    valid = valid[valid["target"].notna()]
    corr = per_era_numerai_corr(predict(valid[features]), valid["target"], valid["era"], on_constant="nan")
    return {"corr": float(corr["prediction"].mean()), "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def keras(path, features, overrides: dict) -> dict:
    from mlflow_numerai.data.cache import build_cache, cache_dirs
    from mlflow_numerai.data.io import split_path
    from mlflow_numerai.families.keras_stream import KerasStreamConfig, train_keras_stream

    names = {"batch": "batch_size", "lr": "learning_rate", "schedule": "lr_schedule", "warmup": "warmup_epochs", "wd": "weight_decay"}
    kwargs = {names.get(k, k): v for k, v in overrides.items()}
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(int(h) for h in kwargs["hidden"].split("-") if h)
    config = KerasStreamConfig(**kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    train_dir, val_dir = cache_dirs(path, features, ["target"])
    train = build_cache(split_path(path, "train"), train_dir, features, ["target"])
    valid = build_cache(split_path(path, "validation"), val_dir, features, ["target"])
    result = train_keras_stream(train, valid, config)
    return {"corr": float(result.val_per_era.mean()), "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
            "epochs": len(result.history), "best_epoch": result.best_epoch + 1}


def bnn(path, features, overrides: dict) -> dict:
    from mlflow_numerai.data import io as data_io
    from mlflow_numerai.data.cache import build_cache, cache_dirs
    from mlflow_numerai.data.stream import BatchStream
    from mlflow_numerai.families import bayes_nn as b
    from mlflow_numerai.studies.bnn import study_posterior

    o = {**{"hidden": "128-64-64", "prior": "normal", "batch": 1024, "n_samples": 1000, "seed": 0}, **overrides}
    fit_kwargs = {k: o[k] for k in ("epochs", "lr", "init_scale") if k in o}
    if "final_lr" in o:
        fit_kwargs["final_lr_fraction"] = o["final_lr"]
    start, cpu = time.perf_counter(), time.process_time()
    train_dir, _ = cache_dirs(path, features, ["target"])
    cache = build_cache(data_io.split_path(path, "train"), train_dir, features, ["target"])
    batches = b.stream_batches(BatchStream(cache, o["batch"], seed=o["seed"], threads=1))
    valid = data_io.read_split(path, "validation", columns=[*features, "target"])
    valid, _ = b.drop_nan_targets(valid, ["target"])
    spec = b.BNNSpec(n_features=len(features), hidden=o["hidden"], prior=o["prior"],
                     prior_scale=o.get("prior_scale", 1.0))
    fit = b.fit_svi(batches, spec, seed=o["seed"], progress=False, zero_output=True, **fit_kwargs)
    samples = b.sample_posterior(fit, o["n_samples"], seed=o["seed"])
    study = study_posterior(samples, b.feature_matrix(valid, features), valid["target"].astype("float64"),
                            valid["era"])
    m = study.metrics
    return {"corr": m["ensemble_corr_mean"], "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
            "member_mean": m["member_corr_mean_mean"], "member_std": m["member_corr_mean_std"],
            "epochs": len(fit.losses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="synthetic")
    parser.add_argument("--feature-set", default="small")
    parser.add_argument("--families", default="ridge,keras,bnn")
    parser.add_argument("--keras", action="append", default=None, help="a Keras configuration (repeatable)")
    parser.add_argument("--bnn", action="append", default=None, help="a BNN configuration (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from mlflow_numerai.data import io as data_io

    path = data_io.resolve_data_dir(args.data_dir)
    features = data_io.feature_columns(path, args.feature_set)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    print(f"data {path} ({args.feature_set}: {len(features)} features)\nload before: {uptime()}")
    print("| family | configuration | validation corr mean | wall s | CPU s | epochs (best) | members mean +- std |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for family in families:
        configs = {"keras": args.keras, "bnn": args.bnn}.get(family) or [""]
        for text in configs:
            if family == "ridge":
                r = ridge(path, features)
            elif family == "keras":
                r = keras(path, features, parse_config(text, KERAS_KEYS))
            elif family == "bnn":
                r = bnn(path, features, parse_config(text, BNN_KEYS))
            else:
                raise SystemExit(f"unknown family {family!r}")
            epochs = f"{r['epochs']} ({r['best_epoch']})" if "best_epoch" in r else str(r.get("epochs", ""))
            members = f"{r['member_mean']:.4f} +- {r['member_std']:.4f}" if "member_mean" in r else ""
            print(f"| {family} | {text or 'defaults'} | {r['corr']:.4f} | {r['seconds']:.0f} | {r['cpu']:.0f} | {epochs} | {members} |",
                  flush=True)
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    pd.options.mode.copy_on_write = True
    np.seterr(all="ignore")
    main()
