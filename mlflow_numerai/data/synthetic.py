"""Writing a Numerai-like synthetic data directory (v5 layout): `generate_synthetic`.

Owns the files: the train/validation/live parquet files written era by era into row groups
(bounded memory), the benchmark and meta-model files, `features.json` and `metadata.json`, all
into a temporary directory renamed into place. What the rows hold (features, targets, burn eras,
the planted signal) is the generative model in `mlflow_numerai.data.synthetic_model`; its public
names are re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlflow_numerai.data.files import atomic_directory
from mlflow_numerai.data.synthetic_model import (
    AUX_TARGETS,
    BENCHMARK_COLUMNS,
    BUCKET_SHARES,
    GENERATOR_VERSION,
    META_MODEL_COLUMN,
    TARGETS,
    Era,
    Plan,
    SyntheticParams,
    equal_bins,
    era_label,
    generate_era,
    planted_signal,
    shares_bins,
)

__all__ = [
    "AUX_TARGETS",
    "BENCHMARK_COLUMNS",
    "BUCKET_SHARES",
    "META_MODEL_COLUMN",
    "TARGETS",
    "Plan",
    "SyntheticParams",
    "equal_bins",
    "generate_era",
    "generate_synthetic",
    "planted_signal",
    "shares_bins",
]

ROW_GROUP_BYTES = 128 * 2**20  # feature bytes per row group (bounded memory)
MAX_ERAS_PER_ROW_GROUP = 64


def _split_schema(features: list[str]) -> pa.Schema:
    """Arrow schema (with pandas metadata: index `id`) of a train/validation/live file."""
    template = pd.DataFrame(
        {
            "era": ["0001"],
            "data_type": ["train"],
            **{f: np.zeros(1, dtype=np.int8) for f in features},
            **{t: np.zeros(1, dtype=np.float32) for t in TARGETS},
        },
        index=pd.Index(["n0"], name="id"),
    )
    return pa.Schema.from_pandas(template, preserve_index=True)


def _benchmark_schema() -> pa.Schema:
    template = pd.DataFrame(
        {"era": ["0001"], **{c: np.zeros(1, dtype=np.float32) for c in BENCHMARK_COLUMNS}},
        index=pd.Index(["n0"], name="id"),
    )
    return pa.Schema.from_pandas(template, preserve_index=True)


class _SplitWriter:
    """Buffers whole eras and writes them as one parquet row group per batch of eras."""

    def __init__(self, path: Path, schema: pa.Schema, n_features: int, rows_per_era: int):
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema)
        self.n_features = n_features
        per_era = rows_per_era * (n_features + 4 * len(TARGETS))
        self.eras_per_group = int(max(1, min(MAX_ERAS_PER_ROW_GROUP, ROW_GROUP_BYTES // per_era)))
        self.rows_per_era = rows_per_era
        self.features = np.empty((n_features, self.eras_per_group * rows_per_era), dtype=np.int8)
        self.nan_mask: np.ndarray | None = None
        self.pending: list[Era] = []

    def add(self, era: Era) -> None:
        k = len(self.pending)
        self.features[:, k * self.rows_per_era : (k + 1) * self.rows_per_era] = era.features
        era.features = None  # the buffer holds them now
        if era.nan_mask is not None:
            if self.nan_mask is None:
                self.nan_mask = np.zeros(self.features.shape, dtype=bool)
            self.nan_mask[:, k * self.rows_per_era : (k + 1) * self.rows_per_era] = era.nan_mask
            era.nan_mask = None
        self.pending.append(era)
        if len(self.pending) == self.eras_per_group:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        n = len(self.pending) * self.rows_per_era
        columns: dict[str, pa.Array] = {
            "era": pa.array([e.label for e in self.pending for _ in range(self.rows_per_era)], pa.string()),
            "data_type": pa.array([e.split for e in self.pending for _ in range(self.rows_per_era)], pa.string()),
            "id": pa.array([i for e in self.pending for i in e.ids], pa.string()),
        }
        for t in TARGETS:
            columns[t] = pa.array(np.concatenate([e.targets[t] for e in self.pending]))
        arrays = []
        feature_pos = 0
        for field in self.schema:
            if field.name in columns:
                arrays.append(columns[field.name])
            else:
                mask = None if self.nan_mask is None else self.nan_mask[feature_pos, :n]
                arrays.append(pa.array(self.features[feature_pos, :n], mask=mask))  # int8 with nulls
                feature_pos += 1
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=n)
        self.pending = []

    def close(self, *, flush: bool = True) -> None:
        if flush:
            self.flush()
        self.writer.close()


def _write_benchmarks(path: Path, eras: list[tuple[list[str], str, dict[str, np.ndarray]]]) -> None:
    schema = _benchmark_schema()
    columns = {
        "era": pa.array([label for ids, label, _ in eras for _ in ids], pa.string()),
        "id": pa.array([i for ids, _, _ in eras for i in ids], pa.string()),
    }
    for col in BENCHMARK_COLUMNS:
        columns[col] = pa.array(np.concatenate([b[col] for _, _, b in eras]))
    table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    pq.write_table(table, path)


def _write_meta_model(path: Path, eras: list[tuple[list[str], str, np.ndarray]]) -> None:
    """`meta_model.parquet` as Numerai's: index id, `era`, `numerai_meta_model`."""
    template = pd.DataFrame({"era": ["0001"], META_MODEL_COLUMN: np.zeros(1, dtype=np.float32)},
                            index=pd.Index(["n0"], name="id"))
    schema = pa.Schema.from_pandas(template, preserve_index=True)
    columns = {
        "era": pa.array([label for ids, label, _ in eras for _ in ids], pa.string()),
        "id": pa.array([i for ids, _, _ in eras for i in ids], pa.string()),
        META_MODEL_COLUMN: pa.array(np.concatenate([m for _, _, m in eras]) if eras else np.zeros(0, np.float32)),
    }
    pq.write_table(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema), path)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def generate_synthetic(
    out_dir: str | os.PathLike,
    *,
    eras_train: int = SyntheticParams.eras_train,
    eras_validation: int = SyntheticParams.eras_validation,
    rows_per_era: int = SyntheticParams.rows_per_era,
    n_features: int = SyntheticParams.n_features,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    nan_percent: int = 0,
) -> Path:
    """Write a synthetic Numerai data directory (v5 layout + `metadata.json`) and return its path.

    Deterministic: the same parameters give byte-identical files. Written era by era into a
    temporary sibling directory that is renamed into place at the end; an existing non-empty
    `out_dir` is replaced only with `overwrite=True`.
    """
    params = SyntheticParams(eras_train, eras_validation, rows_per_era, n_features, seed, nan_percent)
    plan = Plan(params)
    schema = _split_schema(plan.features)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        from tqdm.auto import tqdm

        writers = {
            split: _SplitWriter(tmp / f"{split}.parquet", schema, n_features, rows_per_era)
            for split in ("train", "validation", "live")
        }
        bench: dict[str, list] = {"validation": [], "live": []}
        meta: list = []
        try:
            for era_index in tqdm(range(params.n_eras), desc="synthetic eras", unit="era", disable=not progress):
                era = generate_era(plan, era_index)
                if era.split != "train":
                    bench[era.split].append((era.ids, era.label, era.benchmarks))
                if era.meta_model is not None:
                    meta.append((era.ids, era.label, era.meta_model))
                writers[era.split].add(era)
        except BaseException:
            for writer in writers.values():
                writer.close(flush=False)
            raise
        for writer in writers.values():
            writer.close()
        for split, eras in bench.items():
            _write_benchmarks(tmp / f"{split}_benchmark_models.parquet", eras)
        _write_meta_model(tmp / "meta_model.parquet", meta)
        _write_json(tmp / "features.json", {"feature_sets": plan.feature_sets, "targets": list(TARGETS)})
        _write_json(tmp / "metadata.json", _metadata(plan))
    return Path(out_dir).expanduser().absolute()


def _metadata(plan: Plan) -> dict:
    p = plan.params
    labels = [era_label(i) for i in range(p.n_eras)]
    train, val = labels[: p.eras_train], labels[p.eras_train : -1]
    return {
        "data_version": p.data_version,
        "generator": "mlflow_numerai.synthetic",
        "generator_version": GENERATOR_VERSION,
        "parameters": p.to_dict(),
        "rows": {
            "train": p.eras_train * p.rows_per_era,
            "validation": p.eras_validation * p.rows_per_era,
            "live": p.rows_per_era,
        },
        "eras": {"train": [train[0], train[-1]], "validation": [val[0], val[-1]], "live": labels[-1]},
        "targets": list(TARGETS),
        "benchmark_models": list(BENCHMARK_COLUMNS),
        "meta_model": META_MODEL_COLUMN,
        "planted": {
            "signal_features": plan.signal_features,
            "burn_eras": [labels[i] for i in np.flatnonzero(plan.burn)],
            "burn_share": {
                "train": float(plan.burn[: p.eras_train].mean()),
                "validation": float(plan.burn[p.eras_train : -1].mean()),
            },
        },
    }


