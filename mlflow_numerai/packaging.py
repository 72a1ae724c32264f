"""`predict.pkl` in and out, and the MLflow pyfunc model that wraps it.

A Numerai model upload is `cloudpickle.dumps(predict)` where `predict(live_features)` or
`predict(live_features, live_benchmark_models)` returns a `pd.DataFrame` with one float column
`prediction`, indexed like `live_features`, values in [0, 1], no NaN, not constant.

Contract (other modules code against it):

- `save_predict(predict, path)` / `load_predict(path)`: cloudpickle with this package's own
  modules pickled **by value** (the file loads where `mlflow_numerai` is not installed), atomic
  write. Refuses a function whose parameter count is not 1 or 2 (Numerai counts
  `inspect.signature(predict).parameters` and passes them by position) and anything that cannot
  be pickled (e.g. a closure over an open file), with an error naming the problem.
- `log_numerai_model(predict, name="model", *, data_dir=None, input_example=None, ...)` ->
  `ModelInfo`: checks predict on the example first (profile "numerai": the whole live frame of
  `data_dir`, or `input_example`, against the output contract; profile "forecast": no Numerai
  checks, `output_contract` recorded instead), then logs an MLflow pyfunc from code
  (`mlflow_numerai/pyfunc_model.py`) with the artifact `predict.pkl`, optionally registered.
  Nothing is logged or registered when a check fails.
- Optional inference params: attach `predict.with_params = fn` where
  `fn(live_features, *, name=default, ...)` (e.g. the Bayesian NN's `return_std=False`). The
  keyword defaults become the signature's params; the pyfunc calls `fn` only when a param differs
  from its default, so `predict(live)` — what Numerai runs — is unchanged.
- `download_predict_pkl(model_uri, dst_dir) -> Path`: the raw `predict.pkl` of such a model
  (`runs:/`, `models:/name/1`, `models:/name@alias`) for upload.
- `mlflow.pyfunc.load_model(uri).predict(df)` returns exactly what `predict(df)` returns.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import pickletools
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

PREDICT_FILENAME = "predict.pkl"
ARTIFACT_KEY = "predict_pkl"  # key of the artifact in the pyfunc flavor (see pyfunc_model.py)
PARAMS_ATTR = "with_params"
PROFILES = ("numerai", "forecast")
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
EXAMPLE_ROWS = 5

NUMERAI_OUTPUT_CONTRACT: dict[str, Any] = {
    "type": "pandas.DataFrame",
    "columns": ["prediction"],
    "dtype": "float",
    "index": "same as live_features (id)",
    "range": [0.0, 1.0],
    "nan": False,
    "constant": False,
}
# Modules a Numerai upload must not need: Numerai's runner does not have them.
NOT_IN_NUMERAI_RUNNER = ("mlflow", "mlflow_numerai", "pyro")
# Always needed to load a predict.pkl.
BASE_REQUIREMENTS = ("cloudpickle", "numpy", "pandas")


class PackagingError(ValueError):
    """A predict function or model cannot be packaged as a Numerai upload."""


class OutputContractError(PackagingError):
    """Predictions break the output contract; `check` names the failed check
    (type, empty, columns, dtype, index, nan, range, constant)."""

    def __init__(self, check: str, message: str):
        super().__init__(f"invalid predictions ({check}): {message}")
        self.check = check


# --------------------------------------------------------------------------- predict.pkl


def predict_arity(predict: Callable) -> int:
    """The number of arguments Numerai will pass to `predict` (1 or 2); PackagingError otherwise."""
    if not callable(predict):
        raise PackagingError(f"predict must be a callable, got {type(predict).__name__}")
    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError) as exc:
        raise PackagingError(f"cannot read the signature of predict {predict!r}: {exc}") from exc
    name = getattr(predict, "__name__", type(predict).__name__)
    shown = f"{name}({', '.join(str(p) for p in params.values())})"
    if len(params) not in (1, 2):
        raise PackagingError(
            f"predict must take 1 parameter (live_features) or 2 (live_features, "
            f"live_benchmark_models); {shown} takes {len(params)}"
        )
    by_keyword = [p.name for p in params.values() if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)]
    if by_keyword:
        raise PackagingError(
            f"Numerai passes predict's arguments by position; {shown} has keyword-only "
            f"parameter(s) {by_keyword} (put optional inference params on predict.{PARAMS_ATTR})"
        )
    return len(params)


def _unpicklable_parts(predict: Callable) -> list[str]:
    """Names of the globals/closure variables of `predict` that cloudpickle cannot pickle."""
    try:
        captured = inspect.getclosurevars(predict)
    except TypeError:
        return []
    bad = []
    for kind, values in (("closure variable", captured.nonlocals), ("global", captured.globals)):
        for var, value in values.items():
            try:
                cloudpickle.dumps(value)
            except Exception as exc:
                bad.append(f"{kind} {var!r} ({type(value).__name__}: {exc})")
    return bad


def dumps_predict(predict: Callable) -> bytes:
    """`cloudpickle.dumps(predict)` with `mlflow_numerai` pickled by value; checks the arity."""
    import mlflow_numerai

    predict_arity(predict)
    registered = "mlflow_numerai" in cloudpickle.list_registry_pickle_by_value()
    if not registered:
        cloudpickle.register_pickle_by_value(mlflow_numerai)
    try:
        return cloudpickle.dumps(predict)
    except Exception as exc:
        parts = _unpicklable_parts(predict)
        where = f" it captures {'; '.join(parts)}" if parts else ""
        raise PackagingError(f"predict cannot be pickled:{where or ' ' + str(exc)}") from exc
    finally:
        if not registered:
            cloudpickle.unregister_pickle_by_value(mlflow_numerai)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write `data` to `path` through a temporary file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_predict(predict: Callable, path: str | os.PathLike) -> Path:
    """Write `predict` as a Numerai `predict.pkl` at `path` (atomically); returns the path."""
    return write_bytes_atomic(dumps_predict(predict), path)


def load_predict(path: str | os.PathLike) -> Callable:
    """The predict function of a `predict.pkl` (runs the pickle: only load trusted files)."""
    path = Path(path)
    if not path.is_file():
        raise PackagingError(f"predict file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            predict = cloudpickle.load(f)
    except Exception as exc:
        raise PackagingError(f"cannot unpickle {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    predict_arity(predict)
    return predict


# --------------------------------------------------------------------------- requirements

_STRING_OPS = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
    "SHORT_BINSTRING", "BINSTRING", "STRING",
}  # fmt: skip
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_SUBIMPORTS = {"subimport", "dynamic_subimport"}


def pickled_modules(data: bytes) -> set[str]:
    """Names of the modules a pickle imports when loaded (globals and cloudpickle subimports)."""
    modules: set[str] = set()
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values pushed lately (str, or None for anything else)
    want_module = False
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
        elif name in _GET_OPS:
            value = memo.get(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
            continue
        elif name in _PUT_OPS:
            memo[arg] = recent[-1] if recent else None
            continue
        elif name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            modules.add(module)
            want_module = attr in _SUBIMPORTS
            recent.append(None)
            continue
        elif name == "STACK_GLOBAL":
            module, attr = (recent[-2:] + [None, None])[:2] if len(recent) >= 2 else (None, None)
            if isinstance(module, str):
                modules.add(module)
            want_module = attr in _SUBIMPORTS
            recent.append(None)
            continue
        else:
            recent.append(None)
            continue
        if want_module and isinstance(value, str):
            modules.add(value)
            want_module = False
        recent.append(value)
        del recent[:-4]
    return modules


# Top-level module -> distribution names to try, where they differ (the rest: the module name).
_DISTRIBUTIONS = {
    "sklearn": ("scikit-learn",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "pyro": ("pyro-ppl",),
    "yaml": ("PyYAML",),
    "PIL": ("pillow",),
    "cv2": ("opencv-python", "opencv-python-headless"),
}


@functools.lru_cache(maxsize=256)
def _distribution_version(top: str) -> tuple[str, str] | None:
    """(distribution, version) of the installed package providing module `top`, if any."""
    import importlib.metadata

    for dist in _DISTRIBUTIONS.get(top, (top,)):
        try:
            return dist.lower().replace("_", "-"), importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def requirements_of(modules: set[str]) -> dict[str, str]:
    """{distribution: version} of the installed third-party packages behind `modules`, plus
    cloudpickle, numpy and pandas."""
    tops = {m.split(".")[0] for m in modules} | set(BASE_REQUIREMENTS)
    tops -= set(sys.stdlib_module_names) | {"builtins", "__main__", "mlflow_numerai"}
    found = dict(filter(None, (_distribution_version(top) for top in sorted(tops))))
    return dict(sorted(found.items()))


def local_modules(modules: set[str]) -> list[str]:
    """The top-level modules among `modules` that are neither stdlib nor installed packages
    (e.g. a script next to the notebook): a pickle referring to them fails to load elsewhere."""
    import importlib.util
    import site
    import sysconfig

    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    roots |= set(site.getsitepackages())
    tops = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - set(sys.builtin_module_names)
    tops -= {"__main__", "mlflow_numerai"}  # __main__ and this package are pickled by value
    local = []
    for top in sorted(tops):
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        where = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), None))
        if not where or where in ("built-in", "frozen"):
            continue
        if not any(os.path.abspath(where).startswith(os.path.abspath(root) + os.sep) for root in roots):
            local.append(top)
    return local


# --------------------------------------------------------------------------- output contract


def check_numerai_output(predictions: Any, live_features: pd.DataFrame) -> None:
    """Raise OutputContractError unless `predictions` is a valid submission for `live_features`."""
    if type(predictions) is not pd.DataFrame:  # exactly that type, like Numerai's runner
        raise OutputContractError(
            "type", f"predict must return a pandas DataFrame, got {type(predictions).__module__}."
            f"{type(predictions).__name__}"
        )
    if len(predictions) == 0:
        raise OutputContractError("empty", "predict returned 0 rows")
    if list(predictions.columns) != ["prediction"]:
        raise OutputContractError(
            "columns", f"expected exactly one column 'prediction', got {list(predictions.columns)}"
        )
    column = predictions["prediction"]
    if not pd.api.types.is_float_dtype(column.dtype):
        raise OutputContractError("dtype", f"column 'prediction' must be float, got {column.dtype}")
    if not predictions.index.equals(live_features.index):
        missing = live_features.index.difference(predictions.index)
        raise OutputContractError(
            "index",
            f"the index must equal live_features' index ({len(live_features)} ids); got "
            f"{len(predictions)} rows, {len(missing)} live id(s) missing, "
            f"{int(predictions.index.duplicated().sum())} duplicated",
        )
    values = column.to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise OutputContractError("nan", f"{int(np.isnan(values).sum())} prediction(s) are NaN")
    if values.min() < 0 or values.max() > 1:
        raise OutputContractError(
            "range", f"predictions must lie in [0, 1], got [{values.min():g}, {values.max():g}]"
        )
    if values.std() == 0:
        raise OutputContractError("constant", f"all predictions equal {values[0]:g}")


# --------------------------------------------------------------------------- MLflow model


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

    from mlflow_numerai.data import io as data_io

    needed = {"era", *data_io.feature_columns(data_dir, feature_set)}
    return Schema([ColSpec(c.type, c.name, required=c.name in needed) for c in schema.inputs])


def log_numerai_model(
    predict: Callable,
    name: str = "model",
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
    `output_contract` (a dict, e.g. columns and max horizon) is recorded. The MLmodel metadata
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
        from mlflow_numerai.data import io as data_io

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
