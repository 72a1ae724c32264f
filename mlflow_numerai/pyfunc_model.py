"""The pyfunc wrapper of a Numerai `predict.pkl` (MLflow "models from code").

`mlflow_numerai.packaging.log_numerai_model` logs this file as the model's code and the
cloudpickled `predict` function as the artifact `predict_pkl` (file `predict.pkl`). Nothing of the
wrapper is pickled: MLflow runs this file to build the model. It imports only MLflow, pandas and
cloudpickle (not `mlflow_numerai`), so a model loads wherever the pickle's own runtime exists.

Calling convention (the pyfunc returns exactly what the pickled function returns):
- no params: `predict(model_input)`, or, for a two-parameter predict,
  `predict(model_input, <empty frame indexed like model_input>)` (there are no benchmark models
  in a plain scoring request);
- params (e.g. `{"return_std": True}`): forwarded as keyword arguments to the function stored in
  the predict's `with_params` attribute when it has one (Numerai itself only ever calls
  `predict(live)`, so the submission is unchanged). Without that attribute params are refused.
- a ValueError raised by the predict (its own input validation) becomes an
  `MlflowException(INVALID_PARAMETER_VALUE)` with the same message: a 400 naming the problem when
  served by `mlflow models serve`.

Served, the loaded process is frozen out of the cyclic garbage collector (`gc.freeze()`): a scoring
server holds some 450,000 objects (MLflow, pandas, FastAPI), and a full collection over them takes
about 250 ms, paid by whichever request triggers it, which set the served p99
(`benchmarks/README.md`). `MLFLOW_NUMERAI_GC_FREEZE`: `auto` (default: only in MLflow's scoring
server), `1` (always, at load), `0` (never).
"""

from __future__ import annotations

import gc
import inspect
import os
from typing import Any

import cloudpickle
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

ARTIFACT_KEY = "predict_pkl"
PARAMS_ATTR = "with_params"
GC_FREEZE_ENV = "MLFLOW_NUMERAI_GC_FREEZE"
# set by `mlflow models serve` for its workers (mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH)
SCORING_SERVER_ENV = "__pyfunc_model_path__"


class NumeraiPredictModel(PythonModel):
    """Loads `predict.pkl` and calls it on the model input."""

    def load_context(self, context) -> None:
        path = context.artifacts[ARTIFACT_KEY]
        with open(path, "rb") as f:
            self.use(cloudpickle.load(f))
        if _should_freeze(os.environ):
            gc.collect()  # what is garbage now is freed, not frozen
            gc.freeze()

    def use(self, predict) -> None:
        """Wrap `predict`; what a request needs of its signature is read here, once (inspect is
        slow next to a forecast)."""
        self._predict = predict
        self._n_params = len(inspect.signature(predict).parameters)
        self._with_params = getattr(predict, PARAMS_ATTR, None)
        self._defaults = _defaults(self._with_params)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        """What the pickled predict returns for `model_input` (a DataFrame)."""
        if not isinstance(model_input, pd.DataFrame):
            # a 400 naming it (MLflow answers any other exception with a 400 that does not say why)
            raise mlflow.MlflowException.invalid_parameter_value(
                f"model_input must be a pandas DataFrame (dataframe_split or dataframe_records), "
                f"got {type(model_input).__name__}"
            )
        with_params = self._with_params
        params = _non_default(params, self._defaults) if params else None
        if params and with_params is None:
            raise mlflow.MlflowException.invalid_parameter_value(
                f"this model accepts no params, got {sorted(params)}"
            )
        try:
            if params:
                return with_params(model_input, **params)
            if self._n_params == 2:
                return self._predict(model_input, pd.DataFrame(index=model_input.index))
            return self._predict(model_input)
        except ValueError as exc:
            # A predict rejecting its input (missing column, NaN, too many rows) is the caller's
            # error: the scoring server answers an MlflowException with its code (400) and message,
            # but any other exception with a generic 400 that does not say what was wrong.
            raise mlflow.MlflowException.invalid_parameter_value(f"{type(exc).__name__}: {exc}") from exc


def _should_freeze(environ) -> bool:
    """Whether loading this model should freeze the process's objects out of the collector."""
    setting = environ.get(GC_FREEZE_ENV, "auto").strip().lower()
    if setting == "auto":
        return SCORING_SERVER_ENV in environ
    return setting in ("1", "true", "yes")


def _defaults(fn) -> dict[str, Any]:
    """Keyword defaults of `fn` (None: no params function)."""
    if fn is None:
        return {}
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _non_default(params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`params` without None values and without values equal to their defaults (MLflow fills
    every param of the signature with its default, which must not leave the plain path)."""
    return {k: v for k, v in params.items() if v is not None and not (k in defaults and defaults[k] == v)}


mlflow.models.set_model(NumeraiPredictModel())
