"""The files of a synthetic data set: its parameters, columns and parquet layout.

Owns what a synthetic data directory looks like on disk: `SyntheticParams` (the parameters that
determine a set, its data version and `metadata.json` round trip), the column names (targets,
benchmark models, meta model, features, era labels), one generated `Era` as written, and the
parquet writers (one row group per batch of eras, bounded memory). What the rows hold is the
generative model in `mlflow_numerai.data.synthetic`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlflow_numerai.data.files import DataError

GENERATOR_VERSION = 4  # 4: meta_model.parquet (issue 14)
TARGET_NAMES = ("nomi", "janet", "george")
HORIZONS = (20, 60)
AUX_TARGETS = tuple(f"target_{name}_{h}" for name in TARGET_NAMES for h in HORIZONS)
TARGETS = ("target",) + AUX_TARGETS
BENCHMARK_COLUMNS = ("bench_small_nomi20", "bench_all_nomi20", "bench_all_nomi60")
META_MODEL_COLUMN = "numerai_meta_model"  # as in Numerai's meta_model.parquet
ROW_GROUP_BYTES = 128 * 2**20  # feature bytes per row group (bounded memory)
MAX_ERAS_PER_ROW_GROUP = 64
MAX_ERAS = 9999  # eras are 4-digit strings


@dataclass(frozen=True)
class SyntheticParams:
    """The parameters that fully determine a synthetic data set."""

    eras_train: int = 200
    eras_validation: int = 60
    rows_per_era: int = 500
    n_features: int = 240
    seed: int = 0
    nan_percent: int = 0  # percent of feature cells left NaN (the NaN paths, end to end)

    def __post_init__(self) -> None:
        for name in ("eras_train", "eras_validation"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise DataError(f"{name} must be an integer >= 1, got {value!r}")
        if self.eras_train + self.eras_validation + 1 > MAX_ERAS:
            raise DataError(
                f"the number of eras (train + validation + 1 live) must be <= {MAX_ERAS} (eras are "
                f"4-digit strings), got {self.eras_train} + {self.eras_validation} + 1"
            )
        if not isinstance(self.rows_per_era, (int, np.integer)) or self.rows_per_era < 20:
            raise DataError(f"rows_per_era must be an integer >= 20 (5 % target buckets), got {self.rows_per_era!r}")
        if not isinstance(self.n_features, (int, np.integer)) or self.n_features < 5:
            raise DataError(f"n_features must be an integer >= 5, got {self.n_features!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.nan_percent, (int, np.integer)) or not 0 <= self.nan_percent <= 50:
            raise DataError(f"nan_percent must be an integer in [0, 50], got {self.nan_percent!r}")

    @property
    def n_eras(self) -> int:
        """Train + validation + the one live era."""
        return self.eras_train + self.eras_validation + 1

    @property
    def data_version(self) -> str:
        """"synthetic-<hash>": a short hash of the generator version and the parameters."""
        blob = json.dumps({"generator_version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return "synthetic-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        out = {k: int(v) for k, v in asdict(self).items()}
        if not out["nan_percent"]:  # recorded only when used: metadata as before otherwise
            del out["nan_percent"]
        return out

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike) -> SyntheticParams:
        """The parameters recorded in a synthetic data directory's `metadata.json`."""
        path = Path(data_dir) / "metadata.json"
        if not path.exists():
            raise DataError(f"{str(path)!r} does not exist")
        meta = json.loads(path.read_text())
        if meta.get("generator") != "mlflow_numerai.synthetic":
            raise DataError(f"{str(path)!r} does not describe a synthetic data set")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in meta["parameters"].items() if k in names})


def feature_names(n_features: int) -> list[str]:
    """Stable feature names `feature_0001` ... (the same for every seed)."""
    width = max(4, len(str(n_features)))
    return [f"feature_{i:0{width}d}" for i in range(1, n_features + 1)]


def era_label(era_index: int) -> str:
    """Era label of a 0-based era index: "0001", "0002", ..."""
    return f"{era_index + 1:04d}"


@dataclass
class Era:
    """One generated era: features as (F x n) int8, targets and benchmark columns as float32."""

    ids: list[str]
    label: str
    split: str
    features: np.ndarray
    targets: dict[str, np.ndarray]
    benchmarks: dict[str, np.ndarray]
    meta_model: np.ndarray | None = None  # validation eras only, as Numerai's meta_model.parquet
    nan_mask: np.ndarray | None = None  # (F x n) feature cells written as NaN




def split_schema(features: list[str]) -> pa.Schema:
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


class SplitWriter:
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


def write_benchmarks(path: Path, eras: list[tuple[list[str], str, dict[str, np.ndarray]]]) -> None:
    schema = _benchmark_schema()
    columns = {
        "era": pa.array([label for ids, label, _ in eras for _ in ids], pa.string()),
        "id": pa.array([i for ids, _, _ in eras for i in ids], pa.string()),
    }
    for col in BENCHMARK_COLUMNS:
        columns[col] = pa.array(np.concatenate([b[col] for _, _, b in eras]))
    table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    pq.write_table(table, path)


def write_meta_model(path: Path, eras: list[tuple[list[str], str, np.ndarray]]) -> None:
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


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
