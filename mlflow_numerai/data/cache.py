"""An era-sharded, row-major int8 cache of a Numerai parquet file.

`build_cache(parquet, out_dir, features, targets)` converts one split once into

```
out_dir/
  manifest.json          source fingerprint, features, targets, eras and their row counts
  x_00000.npy ...        one int8 array (rows x features) per era, row-major, `mmap_mode="r"`
  targets.npy            float32 (rows x targets), all eras in cache order
```

Cache order is era by era (eras sorted), rows of an era in file order. Rows whose selected
targets hold a NaN cannot be trained on and are left out (counted in the manifest). NaN features
become the middle bin 2 (counted too). The parquet is read in row-group batches, so the build's
memory is bounded by one batch, whatever the file size. The cache is built in a temporary
sibling directory renamed into place at the end, so a killed build never leaves anything that
`open_cache` accepts. It is reused while the source file (size, mtime, hash of its footer) and the
column lists are unchanged, rebuilt otherwise, and rebuilt when a file is missing, truncated or
altered (size, header and a hash of each file's first and last block are checked on open).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlflow_numerai.conventions import MIDDLE_BIN
from mlflow_numerai.data.files import DataError, cache_root

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
TARGETS_FILE = "targets.npy"
PROBE_BYTES = 1 << 16  # bytes hashed at each end of a cache file
FOOTER_BYTES = 1 << 16  # bytes of the parquet tail hashed into the source fingerprint
BATCH_BYTES = 32 << 20  # feature bytes per parquet read batch during a build


class CacheError(DataError):
    """A cache directory is missing, incomplete, corrupt or stale."""


@dataclass(frozen=True)
class EraCache:
    """An opened, validated cache: per-era int8 features and float32 targets, memory-mapped."""

    path: Path
    features: list[str]
    targets: list[str]
    eras: list[str]
    counts: np.ndarray  # rows per era, int64
    manifest: dict = field(repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.counts.sum())

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def offsets(self) -> np.ndarray:
        """Start row of each era in cache order (length n_eras + 1)."""
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def era_x(self, i: int, *, populate: bool = False) -> np.ndarray:
        """Features of era number `i` (0-based, cache order): a read-only int8 array (rows x
        features) on a memory map of its file; `populate` maps all its pages at once (far
        cheaper than one page fault per page when the whole era will be read)."""
        return map_npy(self.path / self.manifest["eras"][i]["file"], populate=populate)

    def targets_array(self) -> np.ndarray:
        """All targets in cache order: float32, rows x targets, memory-mapped."""
        return map_npy(self.path / TARGETS_FILE)

    def era_labels(self) -> np.ndarray:
        """The era label of every row in cache order."""
        return np.repeat(np.asarray(self.eras, dtype=object), self.counts)


def map_npy(path: str | os.PathLike, *, populate: bool = False) -> np.ndarray:
    """A read-only array on a shared memory map of a `.npy` file (like `np.load(mmap_mode="r")`);
    the file is unmapped when the array and its views are gone."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
        if fortran:
            raise CacheError(f"{str(path)!r} is not a row-major array")
        count = int(np.prod(shape))
        if count == 0:
            return np.empty(shape, dtype=dtype)
        flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate and hasattr(mmap, "MAP_POPULATE") else 0)
        mm = mmap.mmap(f.fileno(), offset + count * dtype.itemsize, flags=flags, prot=mmap.PROT_READ)
    return np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)


# ---------------------------------------------------------------------------------------------
# fingerprints and validation


def source_fingerprint(parquet: str | os.PathLike) -> dict:
    """Size, mtime and a SHA-256 of the footer (schema + row-group metadata) of a parquet file."""
    path = Path(parquet)
    stat = path.stat()
    with open(path, "rb") as f:
        f.seek(max(0, stat.st_size - FOOTER_BYTES))
        footer = f.read()
    return {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "footer_sha256": hashlib.sha256(footer).hexdigest(),
    }


def _probe(path: Path) -> str:
    """A hash of a file's size and its first and last PROBE_BYTES (cheap corruption check)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(PROBE_BYTES))
        if size > PROBE_BYTES:
            f.seek(max(PROBE_BYTES, size - PROBE_BYTES))
            h.update(f.read())
    return h.hexdigest()


def _check_npy(path: Path, shape: tuple[int, ...], dtype: str) -> None:
    """Header, shape, dtype and exact file size of a cache `.npy` file; raises CacheError."""
    if not path.exists():
        raise CacheError(f"cache file {str(path)!r} is missing")
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as exc:  # malformed header, truncated below the header, ...
        raise CacheError(f"cache file {str(path)!r} is unreadable: {exc}") from exc
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise CacheError(f"cache file {str(path)!r} holds {arr.dtype}{arr.shape}, expected {dtype}{shape}")
    expected = arr.offset + arr.nbytes
    size = path.stat().st_size
    del arr
    if size != expected:
        raise CacheError(f"cache file {str(path)!r} has {size} bytes, expected {expected}")


def open_cache(out_dir: str | os.PathLike, *, verify: bool = True) -> EraCache:
    """Open a complete cache; with `verify`, check every file's shape, size and probe hash.

    Raises CacheError naming what is wrong when the cache is missing, incomplete or corrupt."""
    out = Path(out_dir)
    manifest_path = out / MANIFEST
    if not manifest_path.exists():
        raise CacheError(f"no cache at {str(out)!r} (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"cache manifest {str(manifest_path)!r} is unreadable: {exc}") from exc
    if manifest.get("format") != CACHE_FORMAT or not manifest.get("complete"):
        raise CacheError(f"cache at {str(out)!r} is incomplete or of another format")
    n_features = len(manifest["features"])
    if verify:
        for era in manifest["eras"]:
            path = out / era["file"]
            _check_npy(path, (era["rows"], n_features), "int8")
            if _probe(path) != era["probe"]:
                raise CacheError(f"cache file {str(path)!r} does not match its manifest hash")
        tpath = out / TARGETS_FILE
        _check_npy(tpath, (manifest["n_rows"], len(manifest["targets"])), "float32")
        if _probe(tpath) != manifest["targets_probe"]:
            raise CacheError(f"cache file {str(tpath)!r} does not match its manifest hash")
    return EraCache(
        path=out,
        features=list(manifest["features"]),
        targets=list(manifest["targets"]),
        eras=[e["era"] for e in manifest["eras"]],
        counts=np.array([e["rows"] for e in manifest["eras"]], dtype=np.int64),
        manifest=manifest,
    )


def _reusable(out: Path, source: dict, features: list[str], targets: list[str]) -> EraCache | None:
    """The existing cache when it is valid and was built from this source and these columns."""
    try:
        cache = open_cache(out)
    except CacheError as exc:
        if (out / MANIFEST).exists() or out.exists():
            logger.warning("rebuilding cache: %s", exc)
        return None
    if cache.manifest["source"] != source:
        logger.info("rebuilding cache %s: source file changed", out)
        return None
    if cache.features != features or cache.targets != targets:
        logger.info("rebuilding cache %s: other feature/target columns", out)
        return None
    return cache


# ---------------------------------------------------------------------------------------------
# build


def _check_columns(parquet: Path, names: list[str], features: list[str], targets: list[str]) -> None:
    if not features:
        raise DataError("features must name at least one feature column")
    if not targets:
        raise DataError("targets must name at least one target column")
    for kind, cols in (("feature", features), ("target", targets)):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise DataError(f"duplicate {kind} column(s) {dup[:10]}")
    available = set(names)
    for kind, cols in (("era", ["era"]), ("feature", features), ("target", targets)):
        missing = [c for c in cols if c not in available]
        if missing:
            more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
            raise DataError(f"{parquet.name} lacks {kind} column(s) {missing[:10]}{more}")


def _read_eras_and_targets(pf: pq.ParquetFile, targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Era labels (object) and targets (float32, rows x targets) of every row, in file order."""
    eras, ys = [], []
    for batch in pf.iter_batches(batch_size=1 << 18, columns=["era", *targets]):
        eras.append(batch.column(0).cast(pa.string()).to_numpy(zero_copy_only=False))
        cols = [batch.column(j + 1).cast(pa.float32()).to_numpy(zero_copy_only=False) for j in range(len(targets))]
        ys.append(np.stack(cols, axis=1) if cols else np.empty((len(batch), 0), np.float32))
    if not eras:
        return np.empty(0, dtype=object), np.empty((0, len(targets)), np.float32)
    return np.concatenate(eras), np.concatenate(ys).astype(np.float32, copy=False)


def _feature_block(batch: pa.RecordBatch, features: list[str], out: np.ndarray) -> int:
    """Write a record batch's feature columns row-major into `out` (int8); return the NaN count.

    Missing values become MIDDLE_BIN; any other value outside 0..4 raises DataError naming the
    column."""
    n_nan = 0
    for j, name in enumerate(features):
        col = batch.column(j)
        if pa.types.is_floating(col.type):
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
        if col.null_count:
            n_nan += col.null_count
            col = col.fill_null(MIDDLE_BIN)
        values = col.to_numpy(zero_copy_only=False)
        if values.dtype != np.int8:
            if values.size and (values.min() < 0 or values.max() > 4 or np.any(values != np.round(values))):
                raise DataError(f"feature column {name!r} holds values outside the bins 0..4")
            values = values.astype(np.int8)
        out[:, j] = values
    if out.size and (out.min() < 0 or out.max() > 4):
        bad = np.where((out.min(axis=0) < 0) | (out.max(axis=0) > 4))[0]
        raise DataError(f"feature column(s) {[features[j] for j in bad[:10]]} hold values outside the bins 0..4")
    return n_nan


def _row_group_batches(pf: pq.ParquetFile, columns: list[str], batch_rows: int):
    """Record batches of at most `batch_rows` rows, one row group decoded at a time.

    (`iter_batches` reads row groups ahead of a slow consumer, so its memory grows with the
    file; this keeps one row group of the selected columns in memory.)"""
    pool = pa.default_memory_pool()
    for i in range(pf.metadata.num_row_groups):
        table = pf.read_row_group(i, columns=columns)
        yield from table.to_batches(max_chunksize=batch_rows)
        del table
        pool.release_unused()


def _npy_header_file(path: Path, shape: tuple[int, int], dtype: str) -> tuple[int, int]:
    """Create a `.npy` file of the given shape (sparse, data zero) and return (fd, data offset)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
        )
        offset = f.tell()
        f.truncate(offset + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return os.open(path, os.O_WRONLY), offset


def _write_cache(parquet: Path, tmp: Path, features: list[str], targets: list[str], progress: bool) -> dict:
    """Write all cache files into `tmp` and return the manifest (not yet written)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    pf = pq.ParquetFile(parquet)
    _check_columns(parquet, pf.schema_arrow.names, features, targets)
    era_of_row, y = _read_eras_and_targets(pf, targets)
    keep = ~np.isnan(y).any(axis=1)
    n_dropped = int((~keep).sum())
    if n_dropped:
        logger.warning("%s: %d row(s) with a NaN target left out of the cache", parquet.name, n_dropped)
    labels, era_idx = np.unique(era_of_row, return_inverse=True)  # sorted era labels
    del era_of_row
    kept_rows = np.flatnonzero(keep)
    order = kept_rows[np.argsort(era_idx[kept_rows], kind="stable")]  # cache position -> file row
    counts_all = np.bincount(era_idx[kept_rows], minlength=len(labels)).astype(np.int64)
    present = np.flatnonzero(counts_all)  # eras with at least one kept row
    counts = counts_all[present]
    starts = np.zeros(len(labels), dtype=np.int64)
    starts[present] = np.concatenate([[0], np.cumsum(counts)[:-1]])
    dest = np.full(len(keep), -1, dtype=np.int64)  # file row -> cache position (-1: left out)
    dest[order] = np.arange(len(order), dtype=np.int64)

    np.save(tmp / TARGETS_FILE, np.ascontiguousarray(y[order]))
    del y, order
    n_features = len(features)
    fds: dict[int, tuple[int, int]] = {}
    files = {int(e): f"x_{k:05d}.npy" for k, e in enumerate(present)}
    n_nan = 0
    try:
        for e, k in zip(present, range(len(present))):
            fds[int(e)] = _npy_header_file(tmp / files[int(e)], (int(counts[k]), n_features), "int8")
        batch_rows = max(1, BATCH_BYTES // max(1, n_features))
        block = np.empty((batch_rows, n_features), dtype=np.int8)
        row0 = 0
        with tqdm(
            total=len(keep), desc=f"cache {parquet.name}", unit="row", unit_scale=True, disable=not progress
        ) as bar:
            for batch in _row_group_batches(pf, features, batch_rows):
                n = len(batch)
                view = block[:n]
                n_nan += _feature_block(batch, features, view)
                d = dest[row0 : row0 + n]
                eidx = era_idx[row0 : row0 + n]
                for e in np.unique(eidx[d >= 0]):
                    sel = np.flatnonzero((eidx == e) & (d >= 0))
                    # rows of one era in one batch are consecutive in that era's file
                    local0 = int(d[sel[0]] - starts[e])
                    fd, offset = fds[int(e)]
                    data = view[sel] if len(sel) != n else view
                    buf = np.ascontiguousarray(data)
                    if os.pwrite(fd, buf.data, offset + local0 * n_features) != buf.nbytes:
                        raise OSError(f"short write to {files[int(e)]}")
                row0 += n
                bar.update(n)
        for fd, _ in fds.values():
            os.fsync(fd)
    finally:
        for fd, _ in fds.values():
            os.close(fd)
    if n_nan:
        logger.warning("%s: %d NaN feature value(s) filled with the middle bin %d", parquet.name, n_nan, MIDDLE_BIN)
    return {
        "format": CACHE_FORMAT,
        "complete": True,
        "features": list(features),
        "targets": list(targets),
        "n_rows": int(counts.sum()),
        "eras": [
            {"era": str(labels[e]), "rows": int(c), "file": files[int(e)], "probe": _probe(tmp / files[int(e)])}
            for e, c in zip(present, counts)
        ],
        "targets_probe": _probe(tmp / TARGETS_FILE),
        "nan_features_filled": int(n_nan),
        "rows_dropped_nan_target": n_dropped,
        "build_seconds": round(time.perf_counter() - start, 3),
    }


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary build directories of `out` left by killed builds (we hold the lock)."""
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for tmp in out.parent.glob(pattern):
            shutil.rmtree(tmp, ignore_errors=True)


def build_cache(
    parquet: str | os.PathLike,
    out_dir: str | os.PathLike,
    features: list[str],
    targets: list[str],
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> EraCache:
    """Build (or reuse) the era-sharded int8 cache of `parquet` in `out_dir` and open it.

    Reused when a valid cache of the same source fingerprint and columns is there, unless
    `rebuild`; otherwise rebuilt atomically. Raises DataError naming missing columns or bad
    values. A file lock serialises concurrent builds of the same directory."""
    parquet = Path(parquet)
    if not parquet.exists():
        raise DataError(f"parquet file {str(parquet)!r} does not exist")
    features, targets = list(features), list(targets)
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise DataError(f"cache path {str(out)!r} exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        source = source_fingerprint(parquet)
        if not rebuild:
            cache = _reusable(out, source, features, targets)
            if cache is not None:
                return cache
        _remove_stale_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            manifest = _write_cache(parquet, tmp, features, targets, progress)
            if source_fingerprint(parquet) != source:
                raise DataError(f"{str(parquet)!r} changed while its cache was being built")
            manifest["source"] = source
            with open(tmp / MANIFEST, "w") as f:  # the manifest last: it marks the cache complete
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("built cache %s: %d rows in %.1f s", out, manifest["n_rows"], manifest["build_seconds"])
        return open_cache(out, verify=False)


def cache_dirs(data_dir: Path, features: list[str], targets: list[str], root: str | os.PathLike | None = None
               ) -> tuple[Path, Path]:
    """Cache directories of train and validation for one data dir and these columns, under
    `root` (default `<MLFLOW_NUMERAI_CACHE>/era_cache`); every family asking for the same
    columns shares them."""
    base = Path(root).expanduser() if root else cache_root() / "era_cache"
    key = hashlib.sha256(repr((str(data_dir), list(features), list(targets))).encode()).hexdigest()[:16]
    return base / key / "train", base / key / "validation"
