"""`mlflow-numerai train varmax` (MLproject entry point `varmax`): VARMAX order search and forecast model.

Loads a multivariate time series (statsmodels' US macro data by default, or a CSV/parquet file),
splits it by time, fits every candidate order (p, q) in parallel processes, each logged as a
nested run as soon as it finishes; logs the winner's test RMSE/MAPE against a naive forecast,
`varmax/order_search.csv`, `varmax/test_forecast.csv` and a forecast-vs-actual plot; logs the
forecast `predict` as a pyfunc (profile "forecast"), registers it, validates it in the sandbox
and moves the alias `champion` to it when validation succeeds.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import mlflow

from mlflow_numerai.conventions import MODEL_ARTIFACT, REGISTERED_VERSION_TAG
from mlflow_numerai.entrypoints import options
from mlflow_numerai.entrypoints.common import (
    export_data_env,
    log_new_params,
    register,
    registered_name,
    start_family_run,
)
from mlflow_numerai.families import varmax as fam
from mlflow_numerai.packaging import log_numerai_model
from mlflow_numerai.registry import promote
from mlflow_numerai.tracking import ensure_tracking_uri
from mlflow_numerai.uploads.validate import validate

FAMILY = "varmax"
DEFAULT_REGISTERED_NAME = "numerai-varmax"
DEFAULT_PRESET = "macrodata-seed"
MAX_TAG_CHARS = 5000


# --------------------------------------------------------------------------- options -> config


def split_names(value: str | None) -> tuple[str, ...] | None:
    """A comma list as a tuple; None for "" (keep the preset's); () for "none"."""
    if value is None or not value.strip():
        return None
    if value.strip().lower() == "none":
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_config(preset: str, **options: Any):
    """The VarmaxConfig of `preset` ("none": no preset) with the given options replacing its fields."""
    overrides = {k: v for k, v in options.items() if v is not None}
    if preset.lower() == "none":
        if not overrides.get("endog"):
            raise click.BadParameter("without a preset, give --endog (two or more columns)", param_hint="'--endog'")
        try:
            return fam.VarmaxConfig(**overrides)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    if preset not in fam.PRESETS:
        raise click.BadParameter(f"unknown preset {preset!r}; choose one of {sorted(fam.PRESETS)} or 'none'",
                                 param_hint="'--preset'")
    try:
        return fam.with_overrides(fam.PRESETS[preset], **overrides)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def data_version_of(source: str) -> str:
    """`statsmodels-macrodata-<version>`, or `file-<sha256 prefix>` of a data file."""
    if source == fam.MACRODATA:
        import statsmodels

        return f"statsmodels-macrodata-{statsmodels.__version__}"
    digest = hashlib.sha256(Path(source).expanduser().read_bytes()).hexdigest()[:12]
    return f"file-{digest}"


def output_contract(outcome, frame) -> dict:
    """The forecast output contract recorded on the model (checked by the sandbox)."""
    config = outcome.config
    columns = ["step"] + [f"{v}_{part}" for v in config.endog for part in ("forecast", "lower", "upper")]
    index = frame.index
    return {
        "columns": columns,
        "horizon": int(len(outcome.input_example)) if config.exog else int(outcome.input_example["steps"].iloc[0]),
        "max_horizon": config.max_horizon,
        "index": "period",
        "first_period": str(index[-1] + 1) if hasattr(index, "freq") else None,  # of the served forecasts
        "endog": list(config.endog),
        "exog": list(config.exog),
        "transform": config.transform,
        "alpha": config.alpha,
        "order": list(outcome.order),
    }


# --------------------------------------------------------------------------- plots and tables


def plot_test_forecast(history, test_forecast, endog: tuple[str, ...], order, path: Path) -> Path:
    """Forecast vs actual on the test periods with the interval, after the last training periods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(endog), 1, figsize=(9, 3 * len(endog)), squeeze=False)
    hist_x = [str(p) for p in history.index]
    test_x = list(test_forecast["period"])
    for ax, name in zip(axes[:, 0], endog):
        ax.plot(hist_x, history[name].to_numpy(), color="0.4", label="train (actual)")
        ax.plot(test_x, test_forecast[f"{name}_actual"], color="black", marker="o", ms=3, label="test (actual)")
        ax.plot(test_x, test_forecast[f"{name}_forecast"], color="tab:blue", label="forecast")
        ax.fill_between(test_x, test_forecast[f"{name}_lower"], test_forecast[f"{name}_upper"],
                        color="tab:blue", alpha=0.2, label="interval")
        ax.set_title(f"{name}: VARMAX{tuple(order)} forecast vs actual")
        ticks = (hist_x + test_x)[:: max(1, len(hist_x + test_x) // 8)]
        ax.set_xticks(ticks)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def log_candidate(result) -> None:
    """One candidate order as a nested run: its criteria, test RMSE, fit time and warnings."""
    import math

    with mlflow.start_run(run_name=f"VARMAX({result.p},{result.q})", nested=True,
                          tags={"numerai.varmax.candidate": "true"}):  # no family tag: not a model run
        log_new_params({"p": result.p, "q": result.q})
        metrics = {k: getattr(result, k) for k in ("aic", "bic", "hqic", "test_rmse", "fit_seconds")}
        metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
        metrics["converged"] = float(result.converged)
        metrics["n_warnings"] = float(len(result.warnings))
        mlflow.log_metrics(metrics)
        if result.warnings:
            mlflow.set_tag("numerai.varmax.warnings", " | ".join(result.warnings)[:MAX_TAG_CHARS])
        if result.error:
            mlflow.set_tag("numerai.varmax.error", result.error[:MAX_TAG_CHARS])


def log_winner(outcome) -> None:
    """The winner's order, criteria and per-variable test metrics on the parent run."""
    winner = next(c for c in outcome.candidates if (c.p, c.q) == outcome.order)
    log_new_params({"order_p": outcome.order[0], "order_q": outcome.order[1]})
    metrics = {"aic": winner.aic, "bic": winner.bic, "hqic": winner.hqic, "test_rmse": winner.test_rmse,
               "converged": float(winner.converged), "n_candidates": float(len(outcome.candidates))}
    for variable, row in outcome.metrics.iterrows():
        for column in ("rmse", "mape", "rmse_vs_naive"):
            metrics[f"test_{column}_{variable}"] = float(row[column])
        for column in ("naive_rmse", "naive_mape"):
            metrics[f"{column}_{variable}"] = float(row[column])
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
    if outcome.fit_warnings:
        mlflow.set_tag("numerai.varmax.final_fit_warnings", " | ".join(outcome.fit_warnings)[:MAX_TAG_CHARS])


def log_tables(outcome, frame, tmp: Path) -> None:
    """order_search.csv, test_forecast.csv, metrics.csv and the plot under `varmax/`."""
    out = tmp / "varmax"
    out.mkdir()
    outcome.order_search.to_csv(out / "order_search.csv", index=False)
    outcome.test_forecast.to_csv(out / "test_forecast.csv", index=False)
    outcome.metrics.to_csv(out / "metrics.csv")
    periods = outcome.config.test_periods
    history = frame[list(outcome.config.endog)].iloc[:-periods].tail(3 * periods)
    plot_test_forecast(history, outcome.test_forecast, outcome.config.endog, outcome.order,
                       out / "forecast_vs_actual.png")
    mlflow.log_artifacts(str(out), artifact_path="varmax")


# --------------------------------------------------------------------------- registry


def validate_and_promote(name: str, version: str, alias: str) -> str:
    """Validate the version in the sandbox (forecast profile), then move `alias` to it.

    Returns the upload state; raises click.ClickException when validation does not succeed
    (the version keeps its recorded Failed/Error state and no alias).
    """
    report = validate(f"models:/{name}/{version}", profile="forecast")
    click.echo(f"varmax: sandbox validation of {name} version {version}: {report.status}"
               + (f" ({report.reason}: {report.message})" if report.reason else ""))
    if report.status != "Success":
        raise click.ClickException(
            f"{name} version {version} failed sandbox validation ({report.reason}): {report.message}"
        )
    result = promote(name, version, alias)
    click.echo(f"varmax: @{alias} -> {name} version {version} (was {result.previous_version or 'unset'})")
    return report.status


# --------------------------------------------------------------------------- command


@click.command(FAMILY)
@click.option("--preset", default=DEFAULT_PRESET, show_default=True,
              help="Named configuration (the seed's: US macro data, endog realgdp,realcons, exog the other "
                   "ten series, log-diff); 'none' to give everything yourself.")
@click.option("--data", "source", default="macrodata", show_default=True,
              help="'macrodata' (statsmodels, no download) or a CSV/parquet file with a date/period column.")
@click.option("--date-column", default="", help="Date or period column of a data file.")
@click.option("--freq", default="", help="Period frequency of a data file (e.g. Q, M); default: inferred.")
@click.option("--endog", default="", help="Comma list of endogenous columns (default: the preset's).")
@click.option("--exog", default="", help="Comma list of exogenous columns; 'none' for none (default: the preset's).")
@click.option("--transform", type=click.Choice(["", "levels", "log", "diff", "log-diff"]), default="",
              help="Transform of the endogenous series (default: the preset's); forecasts come back in original units.")
@click.option("--test-periods", type=int, default=None, help="Last N periods held out as the test set.")
@click.option("--max-p", type=int, default=None, help="Largest AR order searched.")
@click.option("--max-q", type=int, default=None, help="Largest MA order searched.")
@click.option("--criterion", type=click.Choice(["", "aic", "bic", "hqic", "test_rmse"]), default="",
              help="Order selection criterion (default: the preset's).")
@click.option("--trend", type=click.Choice(["", "n", "c", "t", "ct"]), default="", help="Trend term.")
@click.option("--maxiter", type=int, default=None, help="Maximum optimizer iterations per fit.")
@click.option("--alpha", type=float, default=None, help="Interval level is 1 - alpha (default 0.05).")
@click.option("--max-horizon", type=int, default=None, help="Most periods one forecast request may ask for.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Processes for the order search (0: one per core; 1: sequential).")
@options.registered_model_name_option(DEFAULT_REGISTERED_NAME, 'Registry name; "" or "none" to skip registration, '
                                     "validation and promotion.")
@click.option("--alias", default="champion", show_default=True, help="Alias moved to the validated version.")
@click.option("--validate/--no-validate", "run_validation", default=True, show_default=True,
              help="Validate the registered version in the sandbox and promote it.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@options.tracking_uri_option()
def varmax(preset, source, date_column, freq, endog, exog, transform, test_periods, max_p, max_q, criterion,
           trend, maxiter, alpha, max_horizon, workers, registered_model_name, alias, run_validation, progress,
           tracking_uri) -> None:
    """statsmodels VARMAX: time split, parallel order search, forecast model served by MLflow."""
    if workers < 0:
        raise click.BadParameter(f"must be >= 0, got {workers}", param_hint="'--workers'")
    config = build_config(
        preset, endog=split_names(endog), exog=split_names(exog), transform=transform or None,
        test_periods=test_periods, max_p=max_p, max_q=max_q, criterion=criterion or None, trend=trend or None,
        maxiter=maxiter, alpha=alpha, max_horizon=max_horizon,
    )
    try:
        frame = fam.load_series(source, date_column=date_column or None, freq=freq or None)
        fam.check_columns(frame, config)
    except (ValueError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--data'") from exc
    version_label = data_version_of(source)
    ensure_tracking_uri(tracking_uri)
    export_data_env(version_label)
    register_as = registered_name(registered_model_name)
    candidates = fam.candidate_orders(config.max_p, config.max_q)
    n_workers = fam.default_workers(len(candidates)) if workers == 0 else workers

    with start_family_run(FAMILY) as run:
        # Under `mlflow run` the entry point's raw parameters are already logged under their own
        # names (e.g. endog=""), so the resolved configuration goes under `config.*`.
        log_new_params({f"config.{k}": ",".join(v) if isinstance(v, tuple) else v
                        for k, v in asdict(config).items()})
        log_new_params({"config.preset": preset, "config.data": source, "data_version": version_label,
                        "config.workers": n_workers, "periods": len(frame),
                        "first_period": str(frame.index[0]), "last_period": str(frame.index[-1])})
        click.echo(f"varmax: {len(candidates)} candidate orders on {len(frame)} periods "
                   f"({config.test_periods} held out), {n_workers} process(es)")
        started = time.perf_counter()
        outcome = fam.train_varmax(frame, config, workers=n_workers, on_candidate=log_candidate, progress=progress)
        mlflow.log_metric("search_and_fit_seconds", time.perf_counter() - started)
        log_winner(outcome)
        click.echo(f"varmax: winner VARMAX{outcome.order} by {config.criterion}\n"
                   f"{outcome.metrics.round(4).to_string()}")
        with tempfile.TemporaryDirectory(prefix="varmax-") as tmp:
            log_tables(outcome, frame, Path(tmp))

        info = log_numerai_model(
            outcome.predict, MODEL_ARTIFACT, input_example=outcome.input_example, profile="forecast",
            output_contract=output_contract(outcome, frame), data_version=version_label,
            metadata={"numerai_family": FAMILY},
        )
        click.echo(f"varmax: logged {info.model_uri}")
        if not register_as:
            return
        registered = register(info.model_uri, register_as, FAMILY, run.info.run_id)
        mlflow.set_tag(REGISTERED_VERSION_TAG, f"{register_as}/{registered.version}")
    if run_validation:  # after the training run ended: validation logs its own run
        validate_and_promote(register_as, str(registered.version), alias)


if __name__ == "__main__":  # pragma: no cover
    varmax()
