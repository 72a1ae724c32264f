"""Download the real Numerai data set (v5 layout) through numerapi.

The client is injectable (`client=`): anything with numerapi's `list_datasets()` and
`download_dataset(filename, dest_path)`; tests pass a fake one and never touch the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

from mlflow_numerai.data.files import DataError, atomic_directory

REQUIRED_FILES = ("train.parquet", "validation.parquet", "live.parquet", "features.json")
# Downloaded when the version has them (older versions name their benchmark files differently).
OPTIONAL_FILES = (
    "validation_benchmark_models.parquet",
    "live_benchmark_models.parquet",
    "train_benchmark_models.parquet",
)
_VERSION = re.compile(r"^v\d+(\.\d+)*$")


class DownloadError(DataError):
    """A file came back missing, empty or malformed (not the user's argument's fault)."""


class DatasetClient(Protocol):
    """The part of `numerapi.NumerAPI` the downloader uses."""

    def list_datasets(self) -> list[str]: ...

    def download_dataset(self, filename: str, dest_path: str | None = None) -> str: ...


def default_client() -> DatasetClient:
    """A public (no credentials needed) numerapi client."""
    try:
        import numerapi
    except ImportError as exc:  # optional extra
        raise DataError("numerapi is not installed: pip install 'mlflow-numerai[numerai]'") from exc
    return numerapi.NumerAPI()


def available_versions(datasets: list[str]) -> list[str]:
    """Data versions ("v5.0", ...) present in a numerapi dataset listing."""
    return sorted({name.split("/", 1)[0] for name in datasets if "/" in name})


def files_to_download(version: str, datasets: list[str]) -> list[str]:
    """The file names (without version prefix) to fetch for `version`; raises DataError if the
    version is unknown or lacks a required file."""
    if not _VERSION.match(version):
        raise DataError(f"version must look like 'v5.0', got {version!r}")
    listed = {name.split("/", 1)[1] for name in datasets if name.startswith(version + "/")}
    if not listed:
        raise DataError(f"unknown Numerai data version {version!r}; available: {available_versions(datasets)}")
    missing = [f for f in REQUIRED_FILES if f not in listed]
    if missing:
        raise DataError(f"Numerai data version {version!r} lacks required file(s) {missing}")
    return list(REQUIRED_FILES) + [f for f in OPTIONAL_FILES if f in listed]


def _current_round(client: Any) -> int | None:
    """The tournament round the live data is for, when the client can tell (else None)."""
    get_round = getattr(client, "get_current_round", None)
    if get_round is None:
        return None
    try:
        return int(get_round())
    except Exception:  # informational only: never fail a finished download over it
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_downloaded(directory: Path) -> None:
    """Fail with a message naming the file if a download is empty or not what it should be."""
    import pyarrow.parquet as pq

    for path in sorted(directory.iterdir()):
        if path.stat().st_size == 0:
            raise DownloadError(f"downloaded file {path.name!r} is empty")
        if path.suffix == ".parquet":
            try:
                names = set(pq.read_schema(path).names)
            except Exception as exc:  # pyarrow raises several types for a non-parquet file
                raise DownloadError(f"downloaded file {path.name!r} is not a readable parquet file: {exc}") from exc
            if path.name in ("train.parquet", "validation.parquet", "live.parquet") and "era" not in names:
                raise DownloadError(f"downloaded file {path.name!r} has no 'era' column")
    try:
        meta = json.loads((directory / "features.json").read_text())
    except json.JSONDecodeError as exc:
        raise DownloadError(f"downloaded features.json is not valid JSON: {exc}") from exc
    if "feature_sets" not in meta:
        raise DownloadError("downloaded features.json has no 'feature_sets'")


def download_numerai(
    version: str,
    out: str | os.PathLike,
    *,
    client: DatasetClient | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Download Numerai data `version` (e.g. "v5.0") into `out` and write `metadata.json`.

    All files go to a temporary sibling directory first, renamed to `out` only once every file
    arrived and checks out; an existing non-empty `out` is replaced only with `overwrite`.
    """
    client = client if client is not None else default_client()
    from tqdm.auto import tqdm

    # `out` is checked (and its temporary sibling made) before the network is touched.
    with atomic_directory(out, overwrite=overwrite) as tmp:
        try:
            datasets = list(client.list_datasets())
        except Exception as exc:  # network or API errors from numerapi
            raise ConnectionError(f"could not list Numerai datasets: {exc}") from exc
        names = files_to_download(version, datasets)
        for name in tqdm(names, desc=f"numerai {version}", unit="file", disable=not progress):
            dest = tmp / name
            try:
                client.download_dataset(f"{version}/{name}", dest_path=str(dest))
            except Exception as exc:  # network or API errors from numerapi
                raise DownloadError(f"download of {version}/{name} failed: {exc}") from exc
            if not dest.exists():
                raise DownloadError(f"download of {version}/{name} produced no file")
        check_downloaded(tmp)
        metadata: dict[str, Any] = {
            "data_version": version,
            "source": "numerai",
            "round": _current_round(client),  # live.parquet belongs to this round
            "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in names},
        }
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return Path(out).expanduser().absolute()
