"""The order search: every candidate (p, q) fitted, forecast out of sample and scored, in processes.

`candidate_orders` lists the grid, `evaluate_candidate` fits and scores one order (never raising
on a bad fit), `search_orders` runs them sequentially or in a process pool (`pool_context` picks
the start method, `default_workers` the size), `search_table` is order_search.csv and
`select_order` picks the winner by the config's criterion.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_numerai.families.varmax.config import CRITERIA, VarmaxConfig
from mlflow_numerai.families.varmax.fit import fit_varmax, forecast_original_units
from mlflow_numerai.families.varmax.metrics import rmse
from mlflow_numerai.families.varmax.series import model_data


def candidate_orders(max_p: int, max_q: int) -> list[tuple[int, int]]:
    """Every (p, q) with 0 <= p <= max_p, 0 <= q <= max_q except (0, 0), in (p, q) order."""
    return [(p, q) for p in range(max_p + 1) for q in range(max_q + 1) if (p, q) != (0, 0)]


@dataclass
class CandidateResult:
    """One fitted candidate order: its criteria, test error, fit time and warnings."""

    p: int
    q: int
    aic: float = math.nan
    bic: float = math.nan
    hqic: float = math.nan
    test_rmse: float = math.nan
    fit_seconds: float = math.nan
    converged: bool = False
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """The order_search.csv row (warnings joined, error kept)."""
        out = asdict(self)
        out["n_warnings"] = len(self.warnings)
        out["warnings"] = " | ".join(self.warnings)
        out["error"] = self.error or ""
        return out


def evaluate_candidate(
    train: pd.DataFrame, test: pd.DataFrame, config: VarmaxConfig, order: tuple[int, int]
) -> CandidateResult:
    """Fit `order` on `train`, forecast the `test` periods, score both; never raises on a bad fit."""
    p, q = order
    started = time.perf_counter()
    try:
        endog, exog = model_data(train, config)
        results, messages = fit_varmax(endog, exog, order, trend=config.trend, maxiter=config.maxiter)
        fit_seconds = time.perf_counter() - started
        future_exog = test[list(config.exog)].astype("float64") if config.exog else None
        forecast = forecast_original_units(
            results,
            len(test),
            future_exog,
            transform=config.transform,
            last_level=train[list(config.endog)].iloc[-1].to_numpy(dtype="float64"),
            endog_names=config.endog,
            alpha=config.alpha,
        )
        errors = [
            rmse(test[name].to_numpy(), forecast[f"{name}_forecast"].to_numpy()) for name in config.endog
        ]
        return CandidateResult(
            p=p,
            q=q,
            aic=float(results.aic),
            bic=float(results.bic),
            hqic=float(results.hqic),
            test_rmse=float(np.mean(errors)),
            fit_seconds=fit_seconds,
            converged=bool(results.mle_retvals.get("converged", False)),
            warnings=messages,
        )
    except Exception as exc:  # a candidate that cannot be fitted loses; the search goes on
        return CandidateResult(
            p=p, q=q, fit_seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"
        )


def _evaluate_task(args: tuple) -> CandidateResult:
    """Process-pool entry point (top level so it pickles)."""
    return evaluate_candidate(*args)


def search_orders(
    train: pd.DataFrame,
    test: pd.DataFrame,
    config: VarmaxConfig,
    *,
    workers: int | None = None,
    on_result: Callable[[CandidateResult], None] | None = None,
    progress: bool = True,
    start_method: str | None = None,
) -> list[CandidateResult]:
    """Fit every candidate order; `workers` > 1 fits them in that many processes.

    `start_method` ("fork", "forkserver", "spawn") defaults to :func:`pool_context`'s choice.

    Results come back in (p, q) order whatever the worker count, and are the same numbers as a
    sequential search (each fit is deterministic and independent). `on_result` is called for each
    candidate as soon as it finishes (in completion order).
    """
    from tqdm.auto import tqdm

    orders = candidate_orders(config.max_p, config.max_q)
    workers = default_workers(len(orders)) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    found: dict[tuple[int, int], CandidateResult] = {}
    # no bar object at all when silent: tqdm starts a monitor thread even for a disabled bar
    bar = tqdm(total=len(orders), desc="VARMAX order search", unit="fit") if progress else _NoBar()
    try:
        if workers == 1:
            for order in orders:
                found[order] = evaluate_candidate(train, test, config, order)
                _report(found[order], on_result, bar)
        else:
            from concurrent.futures import as_completed

            context = pool_context(start_method)
            with ProcessPoolExecutor(max_workers=min(workers, len(orders)), mp_context=context) as pool:
                futures = {pool.submit(_evaluate_task, (train, test, config, o)): o for o in orders}
                for future in as_completed(futures):
                    found[futures[future]] = future.result()
                    _report(found[futures[future]], on_result, bar)
    finally:
        bar.close()
    return [found[order] for order in orders]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def pool_context(start_method: str | None = None) -> Any:
    """The process start method: `start_method` if given; else `fork` when this process runs a
    single thread (children start at once, with statsmodels already imported), else
    `forkserver` (forking a threaded process can deadlock a child on a lock another thread
    held), whose server imports statsmodels once for all children."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if start_method is not None and start_method not in methods:
        raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
    if start_method in ("fork", "spawn"):
        return multiprocessing.get_context(start_method)
    if start_method is None and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, "statsmodels.tsa.statespace.varmax"])
        return context
    return multiprocessing.get_context("spawn")


def _report(result: CandidateResult, on_result: Callable | None, bar: Any) -> None:
    bar.update(1)
    bar.set_postfix_str(f"last ({result.p},{result.q})")
    if on_result is not None:
        on_result(result)


def default_workers(n_tasks: int) -> int:
    """One process per core this process may use, at most one per task."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_tasks))


def search_table(results: list[CandidateResult]) -> pd.DataFrame:
    """The order_search.csv table: one row per candidate, in (p, q) order."""
    columns = [
        "p", "q", "aic", "bic", "hqic", "test_rmse", "fit_seconds", "converged", "n_warnings", "warnings", "error",
    ]
    return pd.DataFrame([r.row() for r in results], columns=columns)


def select_order(results: list[CandidateResult], criterion: str) -> tuple[int, int]:
    """The order with the smallest finite `criterion`; ties go to the smaller p + q, then p."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    usable = [r for r in results if r.error is None and np.isfinite(getattr(r, criterion))]
    if not usable:
        reasons = "; ".join(f"({r.p},{r.q}): {r.error or 'non-finite ' + criterion}" for r in results)
        raise RuntimeError(f"no candidate order could be fitted: {reasons}")
    best = min(usable, key=lambda r: (getattr(r, criterion), r.p + r.q, r.p))
    return best.p, best.q

