"""The `predict.pkl` file: its arity, writing and reading it, and checking what predict returns.

`predict_arity` (Numerai passes 1 or 2 arguments by position), `dumps_predict` / `save_predict`
(cloudpickle with this package pickled by value, so the file loads where `mlflow_numerai` is not
installed; atomic write), `load_predict`, and `check_numerai_output` (the output contract of
`contract.py`, raised as `OutputContractError`).
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pandas as pd

import mlflow_numerai
from mlflow_numerai.conventions import PREDICT_PKL
from mlflow_numerai.packaging.contract import check_predictions
from mlflow_numerai.packaging.errors import OutputContractError, PackagingError

PREDICT_FILENAME = PREDICT_PKL
PARAMS_ATTR = "with_params"  # the same name in pyfunc_model.py (which imports nothing of the package)


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


def check_numerai_output(predictions: Any, live_features: pd.DataFrame) -> None:
    """Raise OutputContractError unless `predictions` is a valid submission for `live_features`."""
    for failure in check_predictions(predictions, live_features):
        raise OutputContractError(failure.check, failure.message)
