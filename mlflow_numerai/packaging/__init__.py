"""`predict.pkl` in and out, and the MLflow pyfunc model that wraps it.

A Numerai model upload is `cloudpickle.dumps(predict)` where `predict(live_features)` or
`predict(live_features, live_benchmark_models)` returns a `pd.DataFrame` with one float column
`prediction`, indexed like `live_features`, values in [0, 1], no NaN, not constant.

Modules: `contract` (the output contract: every named check, standalone, also loaded by path by
the sandbox child), `errors` (`PackagingError`, `OutputContractError`), `predict_pkl` (the file:
arity, dumps/save/load, `check_numerai_output`), `requirements` (the modules and distributions a
pickle needs), `model` (log the pyfunc, download the raw file). The names below are re-exported
here; other modules import them from `mlflow_numerai.packaging`.

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

from mlflow_numerai.packaging.contract import NUMERAI_OUTPUT_CONTRACT, CheckFailure
from mlflow_numerai.packaging.errors import OutputContractError, PackagingError
from mlflow_numerai.packaging.model import (
    ARTIFACT_KEY,
    EXAMPLE_ROWS,
    PROFILES,
    PYFUNC_CODE,
    download_predict_pkl,
    log_numerai_model,
)
from mlflow_numerai.packaging.predict_pkl import (
    PARAMS_ATTR,
    PREDICT_FILENAME,
    check_numerai_output,
    dumps_predict,
    load_predict,
    predict_arity,
    save_predict,
    write_bytes_atomic,
)
from mlflow_numerai.packaging.requirements import (
    BASE_REQUIREMENTS,
    NOT_IN_NUMERAI_RUNNER,
    local_modules,
    pickled_modules,
    requirements_of,
)

__all__ = [
    "ARTIFACT_KEY", "BASE_REQUIREMENTS", "EXAMPLE_ROWS", "NOT_IN_NUMERAI_RUNNER", "NUMERAI_OUTPUT_CONTRACT",
    "PARAMS_ATTR", "PREDICT_FILENAME", "PROFILES", "PYFUNC_CODE", "CheckFailure", "OutputContractError",
    "PackagingError", "check_numerai_output", "download_predict_pkl", "dumps_predict", "load_predict",
    "local_modules", "log_numerai_model", "pickled_modules", "predict_arity", "requirements_of", "save_predict",
    "write_bytes_atomic",
]
