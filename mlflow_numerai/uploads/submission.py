"""What an upload validation runs on: the submission (a local predict.pkl and what is known of it)
and the frames it is run on (live features, live benchmark models, validation data).

`resolve_submission(spec, workdir)` turns a model URI (runs:/, models:/name/version,
models:/name@alias, any MLflow model URI) or a path to a `predict.pkl` into a `Submission`: the
pickle downloaded to `workdir`, the registered name and version when the URI is a registry one,
and the model's recorded metadata (profile, Python, output contract) and input example. Bad
arguments raise `ValidationArgumentError` before anything is run or recorded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlflow_numerai.data.io import resolve_data_dir
from mlflow_numerai.errors import InputError
from mlflow_numerai.packaging import PackagingError, download_predict_pkl
from mlflow_numerai.registry import RegistryError, resolve_model_version


class ValidationArgumentError(InputError):
    """Bad arguments to validate (exit code 2): nothing was run and nothing recorded."""


@dataclass
class Submission:
    """What is validated: a local predict.pkl, plus the registry version and metadata when known."""

    spec: str
    pickle_path: Path
    model_uri: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    metadata: dict = field(default_factory=dict)
    input_example: pd.DataFrame | None = None


def python_of_this() -> str:
    """This interpreter's major.minor, e.g. "3.11"."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


# ----------------------------------------------------------------------------- submissions
def resolve_submission(spec: str, workdir: Path) -> Submission:
    """A local predict.pkl for `spec` (a path or a model URI); ValidationArgumentError if not found."""
    path = Path(spec).expanduser()
    if "://" not in spec and not spec.startswith(("models:/", "runs:/")):
        if path.is_dir() and (path / "MLmodel").exists():
            return _model_submission(str(path.resolve()), workdir)
        if not path.is_file():
            raise ValidationArgumentError(f"TARGET {spec!r} is neither an existing predict.pkl nor a model URI")
        return Submission(spec, path.resolve())
    return _model_submission(spec, workdir)


@contextlib.contextmanager
def _quiet_downloads():
    """No artifact-download progress bars (they would interleave with the report)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _model_submission(uri: str, workdir: Path) -> Submission:
    try:
        resolved = resolve_model_version(uri)
    except RegistryError as exc:
        raise ValidationArgumentError(str(exc)) from exc
    with _quiet_downloads():
        try:
            pkl = download_predict_pkl(uri, workdir)
        except PackagingError as exc:
            raise ValidationArgumentError(str(exc)) from exc
        metadata, example = _model_metadata(uri)
    name, version = resolved if resolved else (None, None)
    return Submission(uri, pkl, uri, name, version, metadata, example)


def _model_metadata(uri: str) -> tuple[dict, pd.DataFrame | None]:
    """The MLmodel metadata (numerai_profile, python_version, output_contract, ...) and input example."""
    import mlflow

    info = mlflow.models.get_model_info(uri)
    metadata = dict(info.metadata or {})
    example = None
    if metadata.get("numerai_profile") == "forecast":
        try:
            model = mlflow.models.Model.load(uri)
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(uri, dst_path=tmp)
                example = model.load_input_example(local)
        except Exception:
            example = None
        if example is not None and not isinstance(example, pd.DataFrame):
            example = pd.DataFrame(example)
    return metadata, example


# ----------------------------------------------------------------------------- inputs
def default_live_path() -> Path:
    """live.parquet of the default data (the synthetic set, made on first use)."""
    return resolve_data_dir("synthetic") / "live.parquet"


def read_frame(path: Path, what: str) -> pd.DataFrame:
    """The parquet/CSV at `path` indexed by a string `id`; ValidationArgumentError naming `--what`."""
    if not path.is_file():
        raise ValidationArgumentError(f"--{what} {str(path)!r} does not exist")
    try:
        frame = pd.read_parquet(path) if path.suffix != ".csv" else pd.read_csv(path)
    except Exception as exc:
        raise ValidationArgumentError(f"--{what} {str(path)!r} is not a readable parquet/CSV file: {exc}") from exc
    if "id" in frame.columns:
        frame = frame.set_index("id")
    frame.index = frame.index.astype(str)
    frame.index.name = "id"
    if len(frame) == 0:
        raise ValidationArgumentError(f"--{what} {str(path)!r} has no rows")
    return frame


def features_only(frame: pd.DataFrame) -> pd.DataFrame:
    """What the model sees: everything but the targets (as Numerai's validation features)."""
    return frame[[c for c in frame.columns if not str(c).startswith("target")]]


def default_benchmarks(live_path: Path) -> Path | None:
    """live_benchmark_models.parquet next to a live.parquet, if there is one."""
    candidate = live_path.with_name("live_benchmark_models.parquet")
    return candidate if live_path.name == "live.parquet" and candidate.exists() else None


def forecast_input(submission: Submission, live_path: Path | None) -> pd.DataFrame:
    """The request a forecast model is run on: `--live` if given, else the model's input example."""
    if live_path is not None:
        return read_frame(live_path, "live")
    if submission.input_example is None:
        raise ValidationArgumentError(
            f"{submission.spec!r} has the forecast profile but no input example; pass --live with one"
        )
    return submission.input_example
