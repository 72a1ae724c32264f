"""Where data goes and how it is written: the data error, the cache root, atomic directories.

The bottom of `mlflow_numerai.data`: `DataError` (a bad data directory, file or column), the cache
root every generated file defaults to, and `atomic_directory` (write into a temporary sibling,
rename into place) used by the synthetic generator, the downloader and the readers. Imports
nothing of `data` itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow_numerai.conventions import CACHE_ENV
from mlflow_numerai.errors import InputError


class DataError(InputError):
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
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mlflow_numerai"))
