"""statsmodels VARMAX: time-ordered split, parallel order search, forecasts in original units.

Maths only (no MLflow, no click). The pipeline is the one of seed document 003 done right:

* the series is split **by time** (the last `test_periods` periods are the test set, never a
  random shuffle);
* every candidate order (p, q) is fitted on the training part and scored with aic/bic/hqic and
  with a real out-of-sample forecast of the test periods (never the in-sample `predict()`);
* the winner is refitted on the whole series and wrapped in a `predict(frame) -> frame` closure
  that forecasts the periods after the last observation.

Forecasts are computed in closed form from the fitted state space matrices
(:mod:`.forecast`, numpy only: a served request touches no statsmodels code); they equal
statsmodels' `get_forecast` (:func:`statsmodels_forecast_original_units`, kept as the reference).

Transforms and how forecasts come back to the original units (`transform`):

* ``levels``: the model's forecast and interval (mean ± z·sqrt(F_h)), as statsmodels gives them.
* ``log``: the model runs on ``log(y)``; forecast = ``exp(mean)`` (the median in original
  units), bounds = ``exp(lower)``, ``exp(upper)`` (exact quantiles: exp is monotone).
* ``diff``: the model runs on ``y_t - y_{t-1}``; the level forecast is the last observed level
  plus the cumulative sum of the forecast differences. Its interval is ``level ± z·sqrt(V_h)``
  where ``V_h`` is the variance of the *sum* of the first h forecast errors, computed exactly from
  the predicted state covariances including the covariances across horizons
  (`forecast.cumulative_variances`). Adding the per-step bounds would be wrong (too wide
  when errors cancel, too narrow when they persist).
* ``log-diff``: as ``diff`` on ``log(y)``, then ``exp`` of forecast and bounds (median and exact
  quantiles in original units).

Exogenous series enter the model as given (untransformed): callers send future exogenous rows
in their original units.

The modules, in the order a run uses them: `config` (VarmaxConfig, presets), `series` (loading,
checks, time split, transforms), `fit` (one fit and the forecasts read out of its results),
`forecast` (the closed-form forecaster, self-contained), `metrics`, `search` (the order search and
its process pool), `request` (parsing a forecast request), `predict` (the served closure) and
`train` (the whole run). Every name is re-exported here: `from mlflow_numerai.families import
varmax as fam; fam.train_varmax(...)`.
"""

from mlflow_numerai.families.varmax.config import (
    CRITERIA,
    PRESETS,
    TRANSFORMS,
    TRENDS,
    VarmaxConfig,
    validate_config,
    with_overrides,
)
from mlflow_numerai.families.varmax.fit import (
    FORECAST_METHODS,
    cumulative_forecast_variance,
    fit_varmax,
    forecast_labels,
    forecast_original_units,
    forecast_state,
    single_blas_thread,
    statsmodels_forecast_original_units,
)
from mlflow_numerai.families.varmax.forecast import forecast_frame
from mlflow_numerai.families.varmax.metrics import forecast_metrics, mape, rmse, test_forecast_table
from mlflow_numerai.families.varmax.predict import make_predict
from mlflow_numerai.families.varmax.request import (
    ForecastInputError,
    check_alpha,
    parse_forecast_request,
    request_example,
)
from mlflow_numerai.families.varmax.search import (
    CandidateResult,
    candidate_orders,
    default_workers,
    evaluate_candidate,
    pool_context,
    search_orders,
    search_table,
    select_order,
)
from mlflow_numerai.families.varmax.series import (
    MACRODATA,
    check_columns,
    load_macrodata,
    load_series,
    model_data,
    split_by_time,
    to_period_index,
    transform_endog,
)
from mlflow_numerai.families.varmax.train import VarmaxOutcome, train_varmax

__all__ = [
    "CRITERIA", "FORECAST_METHODS", "MACRODATA", "PRESETS", "TRANSFORMS", "TRENDS",
    "CandidateResult", "ForecastInputError", "VarmaxConfig", "VarmaxOutcome",
    "candidate_orders", "check_alpha", "check_columns", "cumulative_forecast_variance", "default_workers",
    "evaluate_candidate", "fit_varmax", "forecast_frame", "forecast_labels", "forecast_metrics",
    "forecast_original_units", "forecast_state", "load_macrodata", "load_series", "make_predict", "mape",
    "model_data", "parse_forecast_request", "pool_context", "request_example", "rmse", "search_orders",
    "search_table", "select_order", "single_blas_thread", "split_by_time", "statsmodels_forecast_original_units",
    "test_forecast_table", "to_period_index", "train_varmax", "transform_endog", "validate_config",
    "with_overrides",
]
