"""Reading the tracking store for the dashboard: the client, the reachability check, artifacts.

Owns how the dashboard talks to MLflow: one `MlflowClient` per URI (tracking and registry), a
check that names the URI and the cause when the store cannot be read (HTTP stores fail fast), and
reads of a run's CSV and text artifacts (None when the run did not log them). Every other query
module reads through here.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import pandas as pd

from mlflow_numerai.tracking import sqlite_path


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or read."""



# ---------------------------------------------------------------------------------------------
# Connecting


@functools.lru_cache(maxsize=8)
def get_client(tracking_uri: str):
    """An MlflowClient bound to `tracking_uri` for both tracking and the registry (one per URI:
    building a SQL store costs a schema check)."""
    from mlflow.tracking import MlflowClient

    _quiet_downloads()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _fail_fast_http() -> None:
    """Unreachable HTTP servers fail in seconds instead of MLflow's minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def check_tracking(tracking_uri: str) -> bool:
    """True if the store answers; False if it is a SQLite file that does not exist yet (nothing
    logged, and we do not create it by looking). Raises TrackingUnavailable naming the URI and
    the cause when the store cannot be read."""
    if not tracking_uri or not isinstance(tracking_uri, str):
        raise TrackingUnavailable(f"tracking URI must be a non-empty string, got {tracking_uri!r}")
    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        if not db.parent.is_dir():
            raise TrackingUnavailable(
                f"cannot open tracking store {tracking_uri!r}: directory {str(db.parent)!r} does not exist"
            )
        return False
    _fail_fast_http()
    try:
        get_client(tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # any backend error becomes one clear message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingUnavailable(f"cannot reach tracking store {tracking_uri!r}: {first[:300]}") from exc
    return True


# ---------------------------------------------------------------------------------------------
# Artifacts


def read_artifact_csv(tracking_uri: str, run_id: str, path: str, **read_csv: object) -> pd.DataFrame | None:
    """A CSV artifact of a run as a DataFrame, or None when the run did not log it."""
    client = get_client(tracking_uri)
    parent = str(Path(path).parent) if "/" in path else None
    try:
        listed = {f.path for f in client.list_artifacts(run_id, parent)}
    except Exception:
        return None
    if path not in listed:
        return None
    with tempfile.TemporaryDirectory(prefix="mlflow_numerai_dash_") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return pd.read_csv(local, **read_csv)


def _quiet_downloads() -> None:
    """No tqdm bar per artifact read (the dashboard reads many small files)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def read_artifact_text(tracking_uri: str, run_id: str, path: str, max_chars: int = 200_000) -> str | None:
    """A text artifact (e.g. a validation log), or None when missing; long logs keep their tail."""
    client = get_client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mlflow_numerai_dash_") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:
            return None
        text = Path(local).read_text(errors="replace")
    return text if len(text) <= max_chars else "...\n" + text[-max_chars:]


def list_artifact_files(tracking_uri: str, run_id: str, path: str | None = None, depth: int = 3) -> list[str]:
    """Paths of every artifact file of a run (recursively, up to `depth` folders down)."""
    client = get_client(tracking_uri)
    out: list[str] = []
    try:
        entries = client.list_artifacts(run_id, path)
    except Exception:
        return out
    for entry in entries:
        if entry.is_dir:
            if depth > 0:
                out.extend(list_artifact_files(tracking_uri, run_id, entry.path, depth - 1))
        else:
            out.append(entry.path)
    return out


def find_log_artifacts(tracking_uri: str, run_id: str) -> list[str]:
    """A validation run's log artifacts (`*.log`, sorted: the sandbox writes `child_live.log`
    then `child_validation.log`); [] when it has none."""
    return sorted(p for p in list_artifact_files(tracking_uri, run_id) if p.endswith(".log"))
