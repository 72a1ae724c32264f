"""Reading a Numerai data directory (v5 layout), real or synthetic.

A data directory holds `train.parquet`, `validation.parquet`, `live.parquet`, `features.json`
and the benchmark-model parquet files; `metadata.json` (written by the synthetic generator and
the downloader) names its data version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

SPLITS = ("train", "validation", "live")
DEFAULT_SYNTHETIC = "synthetic"  # a data-dir spec meaning "the default synthetic set, made on demand"


class DataError(ValueError):
    """A data directory, file or column is missing or malformed."""


@contextmanager
def atomic_directory(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory of `out`; on success it is renamed to `out`.

    On an exception the temporary directory is removed and `out` is left untouched. An existing
    non-empty `out` raises DataError unless `overwrite`, in which case it is replaced at the end.
    """
    out = Path(out).expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise DataError(f"output path {str(out)!r} exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise DataError(f"output directory {str(out)!r} exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old)  # `old` is an empty directory, so rename may replace it
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Remove temporary siblings of `out` left by killed writers (their process is gone)."""
    import psutil

    out = Path(out).expanduser().absolute()
    removed = []
    if not out.parent.is_dir():
        return removed
    prefix = f".{out.name}.tmp-"
    for path in out.parent.iterdir():
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if path.name.startswith(prefix) and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def cache_root() -> Path:
    """Where generated data and caches go unless told otherwise (`MLFLOW_NUMERAI_CACHE`)."""
    return Path(os.environ.get("MLFLOW_NUMERAI_CACHE", Path.home() / ".cache" / "mlflow_numerai"))


def resolve_data_dir(spec: str | os.PathLike) -> Path:
    """A data directory from a user's spec: a path, or "synthetic" for the default synthetic set
    (generated once into the cache root and reused)."""
    if str(spec) == DEFAULT_SYNTHETIC:
        from mlflow_numerai.data.synthetic import SyntheticParams, generate_synthetic

        out = cache_root() / "synthetic-default"
        if data_version(out) != SyntheticParams().data_version:  # missing, or an older generator
            generate_synthetic(out, overwrite=True)
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
