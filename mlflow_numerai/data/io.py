"""Reading a Numerai data directory (v5 layout), real or synthetic.

A data directory holds `train.parquet`, `validation.parquet`, `live.parquet`, `features.json`
and the benchmark-model parquet files; `metadata.json` (written by the synthetic generator and
the downloader) names its data version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from mlflow_numerai.data import synthetic
from mlflow_numerai.data.files import DataError, atomic_directory, cache_root, remove_stale_temporaries

# Re-exported: callers read these from `data.io` (the data directory's public face).
__all__ = [
    "DEFAULT_SYNTHETIC",
    "SPLITS",
    "DataError",
    "atomic_directory",
    "cache_root",
    "data_version",
    "feature_columns",
    "load_feature_metadata",
    "read_split",
    "remove_stale_temporaries",
    "resolve_data_dir",
    "split_path",
]

SPLITS = ("train", "validation", "live")
DEFAULT_SYNTHETIC = "synthetic"  # a data-dir spec meaning "the default synthetic set, made on demand"


def resolve_data_dir(spec: str | os.PathLike) -> Path:
    """A data directory from a user's spec: a path, or "synthetic" for the default synthetic set
    (generated once into the cache root and reused)."""
    if str(spec) == DEFAULT_SYNTHETIC:
        out = cache_root() / "synthetic-default"
        if data_version(out) != synthetic.SyntheticParams().data_version:  # missing, or an older generator
            synthetic.generate_synthetic(out, overwrite=True)
        return out
    path = Path(spec).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist")
    if not (path / "features.json").exists():
        raise DataError(f"data directory {str(path)!r} has no features.json (not a Numerai data dir)")
    return path


def load_feature_metadata(data_dir: str | os.PathLike) -> dict:
    """The parsed `features.json`: {"feature_sets": {...}, "targets": [...]}."""
    path = Path(data_dir) / "features.json"
    if not path.exists():
        raise DataError(f"{str(path)!r} does not exist")
    return json.loads(path.read_text())


def feature_columns(data_dir: str | os.PathLike, feature_set: str = "small") -> list[str]:
    """The feature names of `feature_set` ("small", "medium", "all", ...)."""
    sets = load_feature_metadata(data_dir)["feature_sets"]
    if feature_set not in sets:
        raise DataError(f"unknown feature set {feature_set!r}; choose one of {sorted(sets)}")
    return list(sets[feature_set])


def data_version(data_dir: str | os.PathLike) -> str:
    """The data version recorded in `metadata.json` (e.g. "v5.0" or "synthetic-<hash>")."""
    path = Path(data_dir) / "metadata.json"
    if path.exists():
        return str(json.loads(path.read_text()).get("data_version", "unknown"))
    return "unknown"


def split_path(data_dir: str | os.PathLike, split: str) -> Path:
    """Path of a split's parquet file; raises DataError naming it if missing."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    path = Path(data_dir) / f"{split}.parquet"
    if not path.exists():
        raise DataError(f"{str(path)!r} does not exist")
    return path


def read_split(
    data_dir: str | os.PathLike, split: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read one split indexed by `id`; `columns` (besides `era`/`data_type`) are checked to exist."""
    path = split_path(data_dir, split)
    if columns is not None:
        import pyarrow.parquet as pq

        available = set(pq.read_schema(path).names)
        missing = [c for c in columns if c not in available]
        if missing:
            raise DataError(f"{path.name} lacks column(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        wanted = [c for c in ("id", "era", "data_type") if c in available and c not in columns]
        frame = pd.read_parquet(path, columns=wanted + list(columns))
    else:
        frame = pd.read_parquet(path)
    if "id" in frame.columns:
        frame = frame.set_index("id")
    return frame
