"""The MLflow pyfunc model of a predict function: logging it, and getting its `predict.pkl` back.

`log_numerai_model` checks predict on an example (the output contract for profile "numerai"; a
declared `output_contract` for profile "forecast"), then logs an MLflow pyfunc from code
(`mlflow_numerai/pyfunc_model.py`) with the artifact `predict.pkl` and the metadata Numerai's
runner needs to be matched (Python, cloudpickle, requirements, feature set, data version).
`download_predict_pkl` copies the raw file of such a model out of MLflow for upload. MLflow is
imported only inside the functions that use it (a slow import).
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pandas as pd

from mlflow_numerai.conventions import MODEL_ARTIFACT
from mlflow_numerai.data import io as data_io
from mlflow_numerai.packaging.contract import NUMERAI_OUTPUT_CONTRACT
from mlflow_numerai.packaging.errors import PackagingError
from mlflow_numerai.packaging.predict_pkl import (
    PARAMS_ATTR,
    PREDICT_FILENAME,
    check_numerai_output,
    dumps_predict,
    predict_arity,
    write_bytes_atomic,
)
from mlflow_numerai.packaging.requirements import (
    NOT_IN_NUMERAI_RUNNER,
    local_modules,
    pickled_modules,
    requirements_of,
)

ARTIFACT_KEY = "predict_pkl"  # key of the artifact in the pyfunc flavor (the same in pyfunc_model.py)
PROFILES = ("numerai", "forecast")
PYFUNC_CODE = Path(__file__).parent.parent / "pyfunc_model.py"
EXAMPLE_ROWS = 5


def _call_predict(predict: Callable, frame: pd.DataFrame, benchmarks: pd.DataFrame | None) -> Any:
    """predict(frame) or predict(frame, benchmarks) as Numerai calls it; errors name the call."""
    try:
        if predict_arity(predict) == 2:
            if benchmarks is None:
                benchmarks = pd.DataFrame(index=frame.index)
            return predict(frame, benchmarks)
        return predict(frame)
    except PackagingError:
        raise
    except Exception as exc:
        raise PackagingError(
            f"predict raised {type(exc).__name__} on the example ({len(frame)} rows): {exc}"
        ) from exc


def _param_example(predict: Callable) -> dict[str, Any] | None:
    """The optional inference params (name -> default) of `predict.with_params`, if any."""
    fn = getattr(predict, PARAMS_ATTR, None)
    if fn is None:
        return None
    if not callable(fn):
        raise PackagingError(f"predict.{PARAMS_ATTR} must be callable, got {type(fn).__name__}")
    params = {}
    for p in list(inspect.signature(fn).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not isinstance(p.default, (bool, int, float, str)):
            raise PackagingError(
                f"predict.{PARAMS_ATTR} parameter {p.name!r} needs a bool/int/float/str default, "
                f"got {p.default!r}"
            )
        params[p.name] = p.default
    return params or None


def _signature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A few rows of `frame` without target columns (NaN in live), for the signature/example.

    Integer `feature*` columns become float64: an "integer" column in the signature makes MLflow
    refuse a request whose column holds a NaN (real Numerai features do) or arrives as float,
    while a "double" column takes int8 bins and NaN alike."""
    keep = [c for c in frame.columns if not str(c).startswith("target")]
    head = frame[keep].head(EXAMPLE_ROWS)
    ints = [c for c in head.columns
            if str(c).startswith("feature") and pd.api.types.is_integer_dtype(head[c].dtype)]
    return head.astype(dict.fromkeys(ints, "float64")) if ints else head


def _optional_outside(schema, data_dir, feature_set: str):
    """`schema` with only `era` and the features of `feature_set` required: a request may carry
    just what the model reads (the whole live frame still works)."""
    from mlflow.types.schema import ColSpec, Schema

    needed = {"era", *data_io.feature_columns(data_dir, feature_set)}
    return Schema([ColSpec(c.type, c.name, required=c.name in needed) for c in schema.inputs])


def log_numerai_model(
    predict: Callable,
    name: str = MODEL_ARTIFACT,
    *,
    data_dir: str | os.PathLike | None = None,
    input_example: pd.DataFrame | None = None,
    feature_set: str | None = None,
    data_version: str | None = None,
    registered_model_name: str | None = None,
    profile: str = "numerai",
    output_contract: dict | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict | None = None,
):
    """Check `predict`, then log it as an MLflow pyfunc (models from code) with `predict.pkl`.

    profile "numerai": predict is called on `input_example` or else the whole live frame of
    `data_dir` (with `live_benchmark_models.parquet` for a two-parameter predict) and must meet
    the output contract. profile "forecast": `input_example` is required, no Numerai checks,
    `output_contract` (a dict, e.g. columns and max horizon) is recorded, and the signature holds
    outputs and params only (no input schema: predict validates its own requests). The MLmodel metadata
    records numerai_profile, python_version, cloudpickle_version, requirements, feature_set,
    data_version and output_contract. Returns MLflow's ModelInfo; on any failure nothing is
    logged or registered.
    """
    import mlflow
    from mlflow.models import infer_signature

    if profile not in PROFILES:
        raise PackagingError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    if output_contract is not None and not isinstance(output_contract, dict):
        raise PackagingError(f"output_contract must be a dict, got {type(output_contract).__name__}")
    if input_example is not None and not isinstance(input_example, pd.DataFrame):
        raise PackagingError(f"input_example must be a pandas DataFrame, got {type(input_example).__name__}")
    data = None
    benchmarks = None
    if data_dir is not None:
        data_dir = data_io.resolve_data_dir(data_dir)
        data_version = data_version or data_io.data_version(data_dir)
    if profile == "numerai":
        if input_example is not None:
            data = input_example
        elif data_dir is not None:
            data = data_io.read_split(data_dir, "live")
            bench_path = Path(data_dir) / "live_benchmark_models.parquet"
            if predict_arity(predict) == 2 and bench_path.exists():
                benchmarks = pd.read_parquet(bench_path)
                if "id" in benchmarks.columns:
                    benchmarks = benchmarks.set_index("id")
        else:
            raise PackagingError("log_numerai_model needs data_dir or input_example to check predict")
        output_contract = output_contract or dict(NUMERAI_OUTPUT_CONTRACT)
    else:
        if input_example is None:
            raise PackagingError("profile 'forecast' needs an input_example to check predict")
        if output_contract is None:
            raise PackagingError("profile 'forecast' needs an output_contract (a dict)")
        data = input_example

    pickle_bytes = dumps_predict(predict)  # refuses bad arity / unpicklable before any call
    output = _call_predict(predict, data, benchmarks)
    if profile == "numerai":
        check_numerai_output(output, data)
        modules = pickled_modules(pickle_bytes)
        foreign = sorted({m for m in modules if m.split(".")[0] in NOT_IN_NUMERAI_RUNNER})
        if foreign:
            raise PackagingError(
                f"predict.pkl imports {foreign} when loaded, which Numerai's runner does not "
                "have; keep those out of the predict closure"
            )
        local = local_modules(modules)
        if local:
            warnings.warn(
                f"predict.pkl imports {local} by reference, which are not installed packages: "
                "Numerai's runner cannot import them (define that code where predict is defined, "
                "or cloudpickle.register_pickle_by_value the module)",
                stacklevel=2,
            )
    elif output is None:
        raise PackagingError("predict returned None on the example")

    requirements = requirements_of(pickled_modules(pickle_bytes))
    example = _signature_frame(data)
    example_output = output.head(EXAMPLE_ROWS) if isinstance(output, (pd.DataFrame, pd.Series)) else None
    signature = infer_signature(example, example_output, params=_param_example(predict))
    if profile == "numerai" and data_dir is not None and feature_set is not None:
        signature.inputs = _optional_outside(signature.inputs, data_dir, feature_set)
    if profile == "forecast":
        # A forecast predict checks its own request (naming a missing, non-numeric or NaN column);
        # with an input schema MLflow would also cast and check every column twice per request,
        # ~90 % of a served forecast's time. The input example and output_contract keep the columns.
        signature.inputs = None
    model_metadata = dict(metadata or {})
    model_metadata.update(
        numerai_profile=profile,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        cloudpickle_version=cloudpickle.__version__,
        requirements=requirements,
        feature_set=feature_set,
        data_version=data_version,
        output_contract=output_contract,
    )
    pip_requirements = [f"mlflow=={mlflow.__version__}"]
    pip_requirements += [f"{dist}=={version}" for dist, version in requirements.items()]
    pip_requirements += list(extra_pip_requirements or [])

    with tempfile.TemporaryDirectory(prefix="mlflow_numerai_") as tmp:
        pkl = write_bytes_atomic(pickle_bytes, Path(tmp) / PREDICT_FILENAME)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_CODE),
            artifacts={ARTIFACT_KEY: str(pkl)},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements,
            metadata=model_metadata,
            registered_model_name=registered_model_name,
        )


def download_predict_pkl(model_uri: str, dst_dir: str | os.PathLike) -> Path:
    """Copy the raw `predict.pkl` of a mlflow_numerai model (runs:/, models:/name/1,
    models:/name@alias, ...) to `dst_dir/predict.pkl` and return its path."""
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking.artifact_utils import _get_root_uri_and_artifact_path

    try:
        info = mlflow.models.get_model_info(model_uri)
    except Exception as exc:
        raise PackagingError(f"cannot read model {model_uri!r}: {exc}") from exc
    pyfunc = info.flavors.get("python_function", {})
    artifact = (pyfunc.get("artifacts") or {}).get(ARTIFACT_KEY)
    if not (info.metadata or {}).get("numerai_profile") or not artifact:
        raise PackagingError(f"{model_uri!r} is not a mlflow_numerai model (no {PREDICT_FILENAME} artifact)")
    root_uri, artifact_path = _get_root_uri_and_artifact_path(model_uri)
    rel = artifact["path"] if isinstance(artifact, dict) else str(artifact)
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst, prefix=".download-") as tmp:
        repo = get_artifact_repository(root_uri)
        src = "/".join(p for p in (artifact_path, rel) if p)
        local = repo.download_artifacts(src, dst_path=tmp)
        target = dst / PREDICT_FILENAME
        os.replace(local, target)
    return target
