"""A whole VARMAX training run: split by time, search the order, score the winner, refit, wrap.

`train_varmax` returns a `VarmaxOutcome` with everything the entry point logs (order search,
test forecast, metrics, the refitted results and the predict closure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlflow_numerai.families.varmax.config import VarmaxConfig
from mlflow_numerai.families.varmax.fit import fit_varmax, forecast_original_units
from mlflow_numerai.families.varmax.metrics import forecast_metrics, test_forecast_table
from mlflow_numerai.families.varmax.predict import make_predict
from mlflow_numerai.families.varmax.request import request_example
from mlflow_numerai.families.varmax.search import CandidateResult, search_orders, search_table, select_order
from mlflow_numerai.families.varmax.series import check_columns, model_data, split_by_time


@dataclass
class VarmaxOutcome:
    """Everything a training run produces, for the entry point to log."""

    config: VarmaxConfig
    candidates: list[CandidateResult]
    order: tuple[int, int]
    test_forecast: pd.DataFrame  # period x (actual, forecast, lower, upper) per variable
    metrics: pd.DataFrame  # variable x (rmse, mape, naive_rmse, naive_mape, rmse_vs_naive)
    results: Any  # winner refitted on the whole series: what `predict` forecasts from
    fit_warnings: list[str]
    predict: Callable[..., pd.DataFrame]
    input_example: pd.DataFrame

    @property
    def order_search(self) -> pd.DataFrame:
        return search_table(self.candidates)


def train_varmax(
    frame: pd.DataFrame,
    config: VarmaxConfig,
    *,
    workers: int | None = None,
    on_candidate: Callable[[CandidateResult], None] | None = None,
    progress: bool = True,
) -> VarmaxOutcome:
    """Split by time, search the order, score the winner on the test set, refit on everything."""
    check_columns(frame, config)
    train, test = split_by_time(frame, config.test_periods)
    candidates = search_orders(train, test, config, workers=workers, on_result=on_candidate, progress=progress)
    order = select_order(candidates, config.criterion)

    endog, exog = model_data(train, config)
    test_results, _ = fit_varmax(endog, exog, order, trend=config.trend, maxiter=config.maxiter)
    last_train = train[list(config.endog)].iloc[-1]
    forecast = forecast_original_units(
        test_results,
        len(test),
        test[list(config.exog)].astype("float64") if config.exog else None,
        transform=config.transform,
        last_level=last_train.to_numpy(dtype="float64"),
        endog_names=config.endog,
        alpha=config.alpha,
    )
    forecast.index = pd.Index(test.index.astype(str), name="period")
    metrics = forecast_metrics(test[list(config.endog)], forecast, last_train)
    test_forecast = test_forecast_table(test[list(config.endog)], forecast)

    endog_full, exog_full = model_data(frame, config)
    results, fit_warnings = fit_varmax(endog_full, exog_full, order, trend=config.trend, maxiter=config.maxiter)
    last_level = frame[list(config.endog)].iloc[-1].to_numpy(dtype="float64")
    predict = make_predict(
        results,
        endog_names=config.endog,
        exog_names=config.exog,
        transform=config.transform,
        last_level=last_level,
        max_horizon=config.max_horizon,
        alpha=config.alpha,
    )
    return VarmaxOutcome(
        config=config,
        candidates=candidates,
        order=order,
        test_forecast=test_forecast,
        metrics=metrics,
        results=results,
        fit_warnings=fit_warnings,
        predict=predict,
        input_example=request_example(frame, config, steps=min(4, config.max_horizon)),
    )
