"""`mlflow-numerai pipeline` (MLproject entry point `main`): the whole job, step by step.

Each step is its own MLflow Projects run (`mlflow.projects.run(<projects dir>, entry_point, ...)`)
nested under the pipeline's run: data -> baseline -> (other model families) -> each trains,
logs its predict.pkl pyfunc, evaluates it with the `numerai` evaluator and registers it. The
steps are the rows of `STEPS`; a model family adds one row.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import mlflow

from mlflow_numerai.conventions import PIPELINE_TAG, UPLOAD_REASON_TAG, UPLOAD_STATE_TAG
from mlflow_numerai.data.io import cache_root
from mlflow_numerai.entrypoints.common import log_new_params
from mlflow_numerai.tracking import ensure_tracking_uri

PIPELINE_DATA = "default"  # --data-dir value: synthetic data made by the `data` step
SUMMARY_METRICS = ("numerai_corr_mean", "numerai_corr_sharpe", "ensemble_corr_mean", "burn_auc",
                   "best_member_corr_mean")


@dataclass(frozen=True)
class Context:
    """What a step's parameters may depend on."""

    data_dir: Path  # absolute: MLflow runs each step inside the projects directory
    synthetic: bool  # True when the pipeline makes its own data (the `data` step may run)


@dataclass(frozen=True)
class Step:
    """One row of the pipeline: an MLproject entry point and its (short, demo) parameters."""

    name: str
    entry_point: str
    parameters: Callable[[Context], dict[str, Any]]
    help: str
    needs_synthetic: bool = False  # skipped when the user points --data-dir at existing data
    stop_on_failure: bool = False  # later steps depend on it: stop the pipeline if it fails


# Demo-sized synthetic data: big enough for a planted signal, small enough for minutes.
DEMO_DATA = {"eras_train": 120, "eras_validation": 40, "rows_per_era": 300, "features": 120, "seed": 0}

STEPS: tuple[Step, ...] = (
    Step("data", "data", lambda ctx: {"out": str(ctx.data_dir), **DEMO_DATA},
         "synthetic Numerai data", needs_synthetic=True, stop_on_failure=True),
    Step("baseline", "baseline",
         lambda ctx: {"data_dir": str(ctx.data_dir), "feature_set": "small", "alpha": 0.01,
                      "registered_model_name": "numerai-baseline"},
         "ridge regression: train, evaluate, register"),
    Step("keras_stream", "keras_stream",
         lambda ctx: {"data_dir": str(ctx.data_dir), "feature_set": "small", "hidden": "64,32",
                      "epochs": 5, "batch_size": 1024, "learning_rate": 0.001, "shuffle_window": 20000,
                      "registered_model_name": "numerai-keras-stream"},
         "Keras MLP streamed from the int8 cache (short run): train, evaluate, register"),
    Step("bayes_nn", "bayes_nn",
         lambda ctx: {"data_dir": str(ctx.data_dir), "feature_set": "small", "prior": "laplace",
                      "hidden": "32,16", "epochs": 4, "batch_size": 1024, "learning_rate": 0.01, "n_samples": 200,
                      "k_model_samples": 50, "registered_model_name": "numerai-bayes-nn"},
         "Pyro Bayesian NN (short run): posterior ensemble, burn AUC, evaluate, register"),
    Step("varmax", "varmax",
         lambda ctx: {"max_p": "2", "max_q": "1", "registered_model_name": "numerai-varmax"},
         "VARMAX on US macro data: order search, forecast model, sandbox validation, @champion"),
    # Keep these last: validate each Numerai model in the sandbox, then promote the baseline. The
    # baseline is judged in Numerai's runtime image (numpy/pandas pins: a small cached environment);
    # the TensorFlow and torch models in this environment, since their image installs take GBs
    # (`--param validate_keras_stream.image=py3.11` judges them there too).
    Step("validate", "validate",
         lambda ctx: {"model_uri": "models:/numerai-baseline/latest", "data_dir": str(ctx.data_dir)},
         "sandboxed upload validation (upload states, per-era diagnostics)"),
    Step("validate_keras_stream", "validate",
         lambda ctx: {"model_uri": "models:/numerai-keras-stream/latest", "data_dir": str(ctx.data_dir),
                      "image": "none"},
         "sandboxed upload validation of the streamed Keras model"),
    Step("validate_bayes_nn", "validate",
         lambda ctx: {"model_uri": "models:/numerai-bayes-nn/latest", "data_dir": str(ctx.data_dir),
                      "image": "none"},
         "sandboxed upload validation of the Bayesian NN"),
    # Blend the three Numerai models into one registered predict.pkl, then validate it like any model.
    Step("ensemble", "ensemble",
         lambda ctx: {"name": "numerai-ensemble", "data_dir": str(ctx.data_dir), "objective": "corr",
                      "members": "models:/numerai-baseline/latest,models:/numerai-keras-stream/latest,"
                                 "models:/numerai-bayes-nn/latest"},
         "blend of the registered models (weights fitted on validation): log, evaluate, register"),
    Step("validate_ensemble", "validate",
         lambda ctx: {"model_uri": "models:/numerai-ensemble/latest", "data_dir": str(ctx.data_dir),
                      "image": "none"},
         "sandboxed upload validation of the ensemble"),
    Step("promote", "promote",
         lambda ctx: {"name": "numerai-baseline", "version": "latest", "alias": "champion", "min_corr": 0.0},
         "move @champion to the validated version if its gates pass"),
)


@dataclass
class StepResult:
    """What one step did."""

    name: str
    status: str  # FINISHED, FAILED, SKIPPED
    run_id: str | None = None
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)  # "name/version"
    note: str = ""


def step_names() -> list[str]:
    """The names of the pipeline steps, in order."""
    return [s.name for s in STEPS]


def parse_steps(spec: str) -> list[Step]:
    """The steps named in `spec` ("all" or a comma list), in pipeline order."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise click.BadParameter("give 'all' or a comma-separated list of steps", param_hint="'--steps'")
    if names == ["all"]:
        return list(STEPS)
    unknown = [n for n in names if n not in step_names()]
    if unknown:
        raise click.BadParameter(f"unknown step(s) {unknown}; choose from {step_names()} or 'all'",
                                 param_hint="'--steps'")
    return [s for s in STEPS if s.name in names]


def parse_overrides(items: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """`STEP.PARAM=VALUE` items as {step: {param: value}}."""
    overrides: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        step, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise click.BadParameter(f"{item!r} is not STEP.PARAM=VALUE", param_hint="'--param'")
        if step not in step_names():
            raise click.BadParameter(f"{item!r}: unknown step {step!r}; choose from {step_names()}",
                                     param_hint="'--param'")
        overrides.setdefault(step, {})[param] = value
    return overrides


def find_project_dir(explicit: str | None) -> Path:
    """The directory holding the MLproject: explicit, else the working directory (under
    `mlflow run`), else `projects/` of the source checkout."""
    candidates = [Path(explicit)] if explicit else [Path.cwd(), Path(__file__).resolve().parents[2] / "projects"]
    for candidate in candidates:
        if (candidate / "MLproject").is_file():
            return candidate.resolve()
    raise click.BadParameter(f"no MLproject in {[str(c) for c in candidates]}", param_hint="'--project-dir'")


def default_data_dir() -> Path:
    """Where the pipeline writes its synthetic data (under MLFLOW_NUMERAI_CACHE)."""
    return (cache_root() / "pipeline" / "synthetic").resolve()


def run_step(step: Step, params: dict[str, Any], project_dir: Path, experiment_id: str,
             parent_run_id: str | None) -> StepResult:
    """Run one step as an MLflow Projects run and collect its metrics and registered versions."""
    from mlflow.exceptions import ExecutionException

    client = mlflow.MlflowClient()
    started = time.perf_counter()
    try:
        submitted = mlflow.projects.run(
            uri=str(project_dir), entry_point=step.entry_point, parameters=params,
            env_manager="local", experiment_id=experiment_id, run_name=step.name, synchronous=False,
        )
    except ExecutionException as exc:  # refused before a run started (e.g. unknown parameter)
        return StepResult(step.name, "FAILED", seconds=time.perf_counter() - started, note=str(exc))
    finished = submitted.wait()
    result = StepResult(step.name, "FINISHED" if finished else "FAILED", submitted.run_id,
                        time.perf_counter() - started)
    if parent_run_id:
        client.set_tag(submitted.run_id, "mlflow.parentRunId", parent_run_id)
    if not finished:
        result.note = "the step's command failed: see its output above"
        return result
    run = client.get_run(submitted.run_id)
    result.metrics = {k: v for k, v in run.data.metrics.items() if k in SUMMARY_METRICS}
    result.versions = [
        f"{v.name}/{v.version}" for v in client.search_model_versions(f"run_id = '{submitted.run_id}'")
    ]
    return result


def registered_states(versions: list[str]) -> list[tuple[str, str, str, str]]:
    """(model, version, upload state, aliases) of "name/version" entries, read at the end (the
    validate and promote steps change them after the training steps)."""
    client = mlflow.MlflowClient()
    rows = []
    for entry in versions:
        name, _, version = entry.rpartition("/")
        mv = client.get_model_version(name, version)
        state = mv.tags.get(UPLOAD_STATE_TAG, "not validated")
        reason = mv.tags.get(UPLOAD_REASON_TAG)
        rows.append((name, version, f"{state} ({reason})" if reason else state, ", ".join(mv.aliases)))
    return rows


def corr_columns(results: list[StepResult], metric: str = "numerai_corr_mean") -> list[tuple[str, str]]:
    """Per step: (its validation corr, the baseline's next to it with the difference), blank
    for steps that score nothing (data, validate, ...)."""
    base = next((r.metrics.get(metric) for r in results if r.name == "baseline"), None)
    out = []
    for r in results:
        corr = r.metrics.get(metric)
        if corr is None:
            out.append(("", ""))
        elif base is None or r.name == "baseline":
            out.append((f"{corr:.4f}", ""))
        else:
            out.append((f"{corr:.4f}", f"{base:.4f} ({corr - base:+.4f})"))
    return out


def print_summary(results: list[StepResult], tracking_uri: str, data_dir: Path) -> None:
    """A table of the steps, then how to look at the results."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mlflow-numerai pipeline")
    for column in ("step", "status", "run", "seconds", "validation corr", "baseline corr", "scores", "registered"):
        table.add_column(column, overflow="fold")
    for r, (corr, baseline) in zip(results, corr_columns(results)):
        scores = ", ".join(f"{k}={v:.4f}" for k, v in sorted(r.metrics.items()))
        table.add_row(r.name, r.status, r.run_id or "", f"{r.seconds:.1f}", corr, baseline, scores or r.note[:60],
                      ", ".join(r.versions))
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs: do not truncate
    console.print(table)
    states = registered_states([v for r in results for v in r.versions])
    if states:
        registry = Table(title="registered versions (as the pipeline leaves them)")
        for column in ("model", "version", "upload state", "aliases"):
            registry.add_column(column, overflow="fold")
        for row in states:
            registry.add_row(*row)
        console.print(registry)
    console.print(f"data: {data_dir}\ntracking: {tracking_uri}")
    console.print("Look at it:\n"
                  f"  mlflow ui --backend-store-uri {tracking_uri}\n"
                  "  mlflow-numerai dashboard")


@click.command("pipeline")
@click.option("--steps", "steps_spec", default="all", show_default=True,
              help=f"'all' or a comma-separated list of: {', '.join(s.name for s in STEPS)}.")
@click.option("--data-dir", default=PIPELINE_DATA, show_default=True,
              help="'default': synthetic data made by the data step (under MLFLOW_NUMERAI_CACHE); "
                   "or an existing Numerai data directory (absolute path; the data step is skipped).")
@click.option("--param", "overrides", multiple=True, metavar="STEP.PARAM=VALUE",
              help="Override one step parameter, e.g. baseline.alpha=0.1 (repeatable).")
@click.option("--project-dir", default=None, help="Directory of the MLproject (default: found).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
              "else sqlite:///<cwd>/mlflow.db).")
def pipeline(steps_spec: str, data_dir: str, overrides: tuple[str, ...], project_dir: str | None,
             tracking_uri: str | None) -> None:
    """Run the whole job: data, models, evaluation, registered models."""
    steps = parse_steps(steps_spec)
    step_overrides = parse_overrides(overrides)
    projects = find_project_dir(project_dir)
    synthetic = data_dir in (PIPELINE_DATA, "")
    if synthetic:
        data_path = default_data_dir()
    else:
        data_path = Path(data_dir).expanduser().resolve()
        if not data_path.is_dir():
            raise click.BadParameter(f"{str(data_path)!r} is not a directory", param_hint="'--data-dir'")
    if synthetic and "data" not in [s.name for s in steps] and not (data_path / "features.json").exists():
        raise click.BadParameter(f"no data in {str(data_path)!r} yet: include the 'data' step",
                                 param_hint="'--steps'")
    ctx = Context(data_path, synthetic)
    uri = ensure_tracking_uri(tracking_uri)
    # Steps run `mlflow-numerai` from PATH (--env-manager local): use this installation's.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    results: list[StepResult] = []
    with mlflow.start_run(run_name="pipeline", tags={PIPELINE_TAG: "main"}) as parent:
        # not "steps"/"data_dir": `mlflow run` already logged the entry point's own parameters
        log_new_params({"pipeline_steps": ",".join(s.name for s in steps), "pipeline_data_dir": str(data_path)})
        for step in steps:
            if step.needs_synthetic and not synthetic:
                results.append(StepResult(step.name, "SKIPPED", note="--data-dir given: using that data"))
                continue
            params = {**step.parameters(ctx), **step_overrides.get(step.name, {})}
            click.echo(f"pipeline: step {step.name} -> entry point {step.entry_point} {params}")
            result = run_step(step, params, projects, parent.info.experiment_id, parent.info.run_id)
            results.append(result)
            mlflow.log_metric(f"step_seconds_{step.name}", result.seconds)
            if result.status == "FAILED" and step.stop_on_failure:
                break
        mlflow.log_text(json.dumps([vars(r) for r in results], indent=2), "pipeline/summary.json")
        print_summary(results, uri, data_path)
        failed = [r for r in results if r.status == "FAILED"]
        if failed:  # raised inside the run: it ends FAILED
            raise click.ClickException(
                "failed step(s): " + ", ".join(f"{r.name} (run {r.run_id or '-'})" for r in failed))


if __name__ == "__main__":  # pragma: no cover
    pipeline()
