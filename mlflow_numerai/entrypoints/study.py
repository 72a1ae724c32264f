"""`mlflow-numerai study FAMILY` (MLproject entry point `study`): a hyper-parameter study on
Optuna that many workers share.

The Optuna study store (`--storage`, default `optuna.db` beside a SQLite tracking store) holds the
trials; any number of workers (`--workers K` local processes, or the same command on several
machines with one `postgresql://` storage) ask it for trials until `--trials N` are complete. Each
trial is an MLflow run nested under the study's run: the family's own training command runs in
it unchanged (`--registered-model-name none`), then the trial's parameters are added. A worker
beats a heartbeat while it trains; a trial whose worker died is failed by the next worker that
looks and retried with the same parameters (`RetryHeartbeatStaleTrialCallback`). The worker that created
the study registers the best trial's model and logs the trials table and plots on the study run.

Exactly N: a worker that gets a trial checks its rank among the running and complete trials; a
trial beyond the N-th (two workers asked at once) is dropped before any run is made.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

DEFAULT_OBJECTIVE = "numerai_corr_mean"  # the evaluator's validation corr mean
STUDY_RUN_ATTR = "mlflow_run_id"
TRIAL_RUN_ATTR = "mlflow_run_id"
SURPLUS_ATTR = "surplus"
POLL_SECONDS = 1.0
MAX_FAILURES_IN_A_ROW = 3


@dataclass(frozen=True)
class Param:
    """One search-space dimension: a float/int range (optionally log) or a list of choices."""

    kind: str  # "float", "int" or "categorical"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial, name: str):
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class Family:
    """A family's search space and how a trial's parameters become its training command's options."""

    command: str  # "module:attribute" of the click command
    space: dict[str, Param]
    options: Callable[[dict[str, Any]], list[str]]
    grid: bool = False  # exhaustive grid (GridSampler) instead of TPE


def _baseline_options(p: dict[str, Any]) -> list[str]:
    return ["--alpha", repr(float(p["alpha"]))]


def _keras_options(p: dict[str, Any]) -> list[str]:
    return ["--hidden", str(p["hidden"]), "--dropout", repr(float(p["dropout"])), "--noise",
            repr(float(p["noise"])), "--learning-rate", repr(float(p["learning_rate"])),
            "--epochs", str(int(p["epochs"]))]


def _bnn_options(p: dict[str, Any]) -> list[str]:
    return ["--prior", str(p["prior"]), "--hidden", str(p["hidden"]), "--target-model", str(p["target_model"])]


FAMILIES: dict[str, Family] = {
    "baseline": Family("mlflow_numerai.entrypoints.baseline:baseline",
                       {"alpha": Param("float", 1e-4, 1e3, log=True)}, _baseline_options),
    "keras": Family("mlflow_numerai.entrypoints.keras_stream:keras_stream",
                    {"hidden": Param("categorical", choices=("64", "128,64", "128,64,64", "256,128")),
                     "dropout": Param("float", 0.0, 0.5),
                     "noise": Param("float", 0.0, 0.2),
                     "learning_rate": Param("float", 1e-4, 1e-2, log=True),
                     "epochs": Param("int", 2, 10)},
                    _keras_options),
    # The seed's grid (= `train bnn-study` without the deterministic baselines), every point once.
    "bnn": Family("mlflow_numerai.entrypoints.bayes_nn:bayes_nn",
                  {"prior": Param("categorical", choices=("uniform", "normal", "laplace")),
                   "hidden": Param("categorical", choices=("none", "128", "128-64", "128-64-64")),
                   "target_model": Param("categorical", choices=("single",))},
                  _bnn_options, grid=True),
}


def grid_size(space: dict[str, Param]) -> int:
    size = 1
    for p in space.values():
        size *= len(p.choices)
    return size


def parse_space(family: str, specs: tuple[str, ...]) -> dict[str, Param]:
    """The family's space with `KEY=LOW:HIGH[:log]` or `KEY=a|b|c` overrides applied."""
    space = dict(FAMILIES[family].space)
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise click.BadParameter(f"{spec!r}: expected KEY=LOW:HIGH[:log] or KEY=a|b|c", param_hint="'--space'")
        if key not in space:
            raise click.BadParameter(f"unknown search-space key {key!r} for {family}; choose from {sorted(space)}",
                                     param_hint="'--space'")
        base = space[key]
        if FAMILIES[family].grid and "|" not in value and base.kind == "categorical":
            value = value + "|"  # a one-point grid
        if "|" in value or base.kind == "categorical":
            space[key] = Param("categorical", choices=tuple(v.strip() for v in value.split("|") if v.strip()))
            continue
        parts = value.split(":")
        try:
            low, high = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            raise click.BadParameter(f"{spec!r}: expected {key}=LOW:HIGH[:log]", param_hint="'--space'") from None
        log = len(parts) > 2 and parts[2].strip() == "log"
        if not low <= high or (log and low <= 0):
            raise click.BadParameter(f"{spec!r}: need LOW <= HIGH (and LOW > 0 with log)", param_hint="'--space'")
        space[key] = Param(base.kind, low, high, log=log)
    return space


def redact(url: str) -> str:
    """`url` without its password (for logs and messages)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def default_storage(tracking_uri: str) -> str:
    """`optuna.db` beside a SQLite tracking store, else in the working directory."""
    from pathlib import Path

    from mlflow_numerai.tracking import sqlite_path

    db = sqlite_path(tracking_uri)
    folder = db.parent if db is not None else Path.cwd()
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def check_tracking(uri: str) -> None:
    """One clear line when a tracking server does not answer (MLflow would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=10).raise_for_status()
    except requests.RequestException as exc:
        raise click.ClickException(f"tracking server {redact(uri)} is unreachable: {type(exc).__name__}") from None


def open_storage(url: str, heartbeat: float):
    """Optuna's RDB storage with heartbeats and retry of a dead worker's trial; one clear line if
    it cannot be opened. A fresh SQLite file is created under a lock (schema creation races)."""
    import optuna
    from filelock import FileLock
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from mlflow_numerai.tracking import sqlite_path

    def make():
        return RDBStorage(url, heartbeat_interval=int(max(1, heartbeat)), grace_period=int(max(3, 3 * heartbeat)),
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                          engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)

    path = sqlite_path(url)
    last: Exception | None = None
    for attempt in range(5):  # workers started together race on a fresh database's tables
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with FileLock(str(path) + ".lock", timeout=600):
                    return make()
            return make()
        except (ValueError, ImportError, ModuleNotFoundError) as exc:
            raise click.ClickException(f"study storage {redact(url)} cannot be used: {exc}") from None
        except Exception as exc:  # sqlalchemy OperationalError, IntegrityError, ...
            last = exc
            if "could not connect" in str(exc).lower() or "connection refused" in str(exc).lower():
                break
            time.sleep(0.5 + attempt)
    reason = str(getattr(last, "orig", last) or type(last).__name__).strip().splitlines()[0]
    optuna.logging.get_logger("optuna")  # keep Optuna's own logger configured
    raise click.ClickException(f"study storage {redact(url)} is unreachable: {reason}")


class Heartbeat:
    """Records a trial's heartbeat in the storage every `interval` seconds while it trains."""

    def __init__(self, storage, trial_id: int, interval: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)

    def _beat(self, storage, trial_id: int, interval: float) -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a missed beat only makes the trial look older
                pass
            if self._stop.wait(interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _counts(study) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def _close_dead_runs(study, client) -> None:
    """The MLflow run of a trial that Optuna failed as stale (its worker died) is marked KILLED."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get(TRIAL_RUN_ATTR)
        if run_id and not t.user_attrs.get(SURPLUS_ATTR):
            try:
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, "KILLED")
            except Exception:
                pass


def _tell(study, trial, value=None, state=None) -> None:
    """`study.tell`; a grid sampler's `study.stop()` on the last grid point (meant for
    `Study.optimize`) is not an error here: the trial's state is stored before it raises."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def _is_surplus(study, trial, n_trials: int) -> bool:
    """Whether `trial` would be beyond the N-th: N trials with lower numbers already run or ran."""
    from optuna.trial import TrialState

    live = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
    return sum(t.number < trial.number for t in live) >= n_trials


def run_trial(family: str, params: dict[str, Any], base_args: list[str], parent_run_id: str,
              experiment_id: str, trial, study_name: str, objective: str, client) -> tuple[str, float]:
    """The family's training command in a new run nested under the study's run; (run id, objective)."""
    import importlib

    import mlflow

    fam = FAMILIES[family]
    run = client.create_run(experiment_id, run_name=f"{family}-trial-{trial.number}",
                            tags={"mlflow.parentRunId": parent_run_id, "numerai.study": study_name,
                                  "numerai.study_trial": str(trial.number)})
    run_id = run.info.run_id
    trial.set_user_attr(TRIAL_RUN_ATTR, run_id)  # at once: a dead worker's run is closed by this id
    module, attr = fam.command.split(":")
    command = getattr(importlib.import_module(module), attr)
    args = [*base_args, *fam.options(params), "--registered-model-name", "none"]
    os.environ["MLFLOW_RUN_ID"] = run_id  # the family's start_run continues this run
    try:
        command.main(args, prog_name=f"study {family}", standalone_mode=False)
    except BaseException:
        if mlflow.active_run():
            mlflow.end_run("FAILED")
        else:
            client.set_terminated(run_id, "FAILED")
        raise
    finally:
        os.environ.pop("MLFLOW_RUN_ID", None)
    logged = client.get_run(run_id).data
    client.log_batch(run_id, params=[mlflow.entities.Param(f"trial.{k}", str(v)) for k, v in params.items()])
    if objective not in logged.metrics:
        raise click.ClickException(f"objective {objective!r} was not logged by {family}; "
                                   f"choose from {sorted(logged.metrics)}")
    return run_id, float(logged.metrics[objective])


def worker_loop(study, storage, *, family: str, space: dict[str, Param], base_args: list[str], n_trials: int,
                objective: str, heartbeat: float, client) -> int:
    """Run trials until the study has `n_trials` complete ones; returns how many this worker ran."""
    import optuna
    from optuna.trial import TrialState

    parent = study.user_attrs[STUDY_RUN_ATTR]
    experiment_id = study.user_attrs["mlflow_experiment_id"]
    done_here = failures = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, re-enqueued
        _close_dead_runs(study, client)
        counts = _counts(study)
        if counts[TrialState.COMPLETE] >= n_trials:
            return done_here
        if counts[TrialState.COMPLETE] + counts[TrialState.RUNNING] >= n_trials and not counts[TrialState.WAITING]:
            time.sleep(POLL_SECONDS)  # the last trials run elsewhere; stay in case one dies
            continue
        trial = study.ask()
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("worker_host", socket.gethostname())
        if _is_surplus(study, trial, n_trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            _tell(study, trial, state=TrialState.FAIL)
            continue
        with Heartbeat(storage, trial._trial_id, heartbeat):
            params = {name: p.suggest(trial, name) for name, p in space.items()}
            click.echo(f"study: trial {trial.number} {params}")
            try:
                run_id, value = run_trial(family, params, base_args, parent, experiment_id, trial,
                                          study.study_name, objective, client)
            except click.ClickException:
                _tell(study, trial, state=TrialState.FAIL)
                raise
            except Exception as exc:
                click.echo(f"study: trial {trial.number} failed: {type(exc).__name__}: {exc}", err=True)
                _tell(study, trial, state=TrialState.FAIL)
                failures += 1
                if failures >= MAX_FAILURES_IN_A_ROW:  # the family fails whatever the parameters
                    raise click.ClickException(f"{failures} trials in a row failed; last: {exc}") from None
                continue
        _tell(study, trial, value)
        failures = 0
        done_here += 1
        n_complete = _counts(study)[TrialState.COMPLETE]
        click.echo(f"study: trial {trial.number} {objective}={value:.5f} ({n_complete}/{n_trials} complete)")
        client.log_metric(parent, "trials_complete", n_complete)


def trials_figure(table, objective: str):
    """Each parameter against the objective, one panel per parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = [c for c in table.columns if c.startswith("params_")]
    fig, axes = plt.subplots(1, max(1, len(params)), figsize=(4 * max(1, len(params)), 3.5), squeeze=False)
    for ax, col in zip(axes[0], params):
        x = table[col]
        if x.dtype == object:
            x = x.astype(str)
        ax.scatter(x, table["value"], s=18)
        ax.set_xlabel(col.removeprefix("params_"))
        if col.removeprefix("params_") in ("alpha", "learning_rate") and x.dtype != object:
            ax.set_xscale("log")
        ax.set_ylabel(objective)
    fig.suptitle("study trials: parameters vs objective")
    fig.tight_layout()
    return fig


def finalize(study, client, *, family: str, objective: str, registered_name: str | None) -> str | None:
    """On the study run: trials table, plot, best value; register the best trial's model."""
    import mlflow
    from optuna.trial import TrialState

    parent = study.user_attrs[STUDY_RUN_ATTR]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        client.set_terminated(parent, "FAILED")
        raise click.ClickException("no trial completed")
    table = study.trials_dataframe(attrs=("number", "value", "params", "state", "user_attrs"))
    table = table[table["state"] == "COMPLETE"]
    client.log_text(parent, table.to_csv(index=False), "study/trials.csv")
    fig = trials_figure(table, objective)
    client.log_figure(parent, fig, "study/params_vs_objective.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    best = study.best_trial
    best_run = best.user_attrs[TRIAL_RUN_ATTR]
    client.log_metric(parent, f"best_{objective}", float(best.value))
    client.log_metric(parent, "n_trials_complete", float(len(complete)))
    client.set_tag(parent, "numerai.study.best_run_id", best_run)
    client.set_tag(parent, "numerai.study.best_trial", str(best.number))
    if FAMILIES[family].grid and family == "bnn":
        bnn_study_level(complete, client, parent)
    version = None
    if registered_name:
        mv = mlflow.register_model(f"runs:/{best_run}/model", registered_name,
                                   tags={"numerai.family": family, "numerai.run_id": best_run,
                                         "numerai.study": study.study_name})
        version = str(mv.version)
        client.set_tag(parent, "numerai.study.registered_version", version)
        click.echo(f"study: registered {registered_name} version {version} (trial {best.number})")
    client.set_terminated(parent, "FINISHED")
    click.echo(f"study: best trial {best.number} {objective}={best.value:.5f} params {best.params}")
    return version


def bnn_study_level(complete: list, client, parent: str) -> None:
    """What `train bnn-study` logs on its parent, from the trial runs: the ensemble-vs-members
    table, the Jensen-Shannon divergence matrix between the models and its heatmap."""
    import tempfile

    import mlflow
    import pandas as pd

    from mlflow_numerai.entrypoints.bayes_nn import ARTIFACT_DIR, plot_js
    from mlflow_numerai.studies.bnn import js_divergence_matrix

    summary, members = [], {}
    for t in sorted(complete, key=lambda t: t.number):
        run = client.get_run(t.user_attrs[TRIAL_RUN_ATTR])
        label = f"{t.params['prior']}/{t.params['hidden']}"
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                       artifact_path=f"{ARTIFACT_DIR}/members.csv", dst_path=tmp)
            members[label] = pd.read_csv(path, index_col=0)
        keep = ("ensemble_corr_mean", "ensemble_sharpe", "member_corr_mean_mean", "member_corr_mean_std",
                "member_sharpe_mean", "member_sharpe_std", "ensemble_minus_member_corr",
                "frac_members_below_ensemble", "burn_auc", "n_burn_eras", "n_eras", "uncertainty_mean")
        summary.append({"model": label, "prior": t.params["prior"], "hidden": t.params["hidden"],
                        "target_model": t.params["target_model"],
                        **{k: run.data.metrics.get(k, float("nan")) for k in keep}})
    table = pd.DataFrame(summary).set_index("model")
    client.log_text(parent, table.to_csv(), f"{ARTIFACT_DIR}/study_summary.csv")
    client.log_metric(parent, "best_ensemble_corr_mean", float(table["ensemble_corr_mean"].max()))
    client.set_tag(parent, "bnn.best_model", str(table["ensemble_corr_mean"].idxmax()))
    if len(members) > 1:
        js = js_divergence_matrix(members)
        client.log_text(parent, js.to_csv(), f"{ARTIFACT_DIR}/js_divergence.csv")
        fig = plot_js(js)
        client.log_figure(parent, fig, f"{ARTIFACT_DIR}/js_divergence.png")
        import matplotlib.pyplot as plt

        plt.close(fig)


def create_or_join(storage, study_name: str, direction: str, sampler, *, family: str, n_trials: int,
                   objective: str, storage_url: str, client, experiment_id: str, run_id: str | None = None,
                   wait_s: float = 600.0):
    """(study, created): exactly one worker creates the study (and its MLflow run); the others wait
    for the run id it records."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        deadline = time.monotonic() + wait_s
        while STUDY_RUN_ATTR not in study.user_attrs:
            if time.monotonic() > deadline:
                raise click.ClickException(f"study {study_name!r} has no MLflow run after {wait_s:.0f} s") from None
            time.sleep(POLL_SECONDS)
        if study.user_attrs.get("family") != family:
            raise click.ClickException(f"study {study_name!r} is a {study.user_attrs.get('family')} study, "
                                       f"not {family}")
        return study, False
    tags = {"numerai.family": f"study_{family}", "numerai.study": study_name}
    if run_id:
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    else:
        run_id = client.create_run(experiment_id, run_name=f"study-{family}-{study_name}", tags=tags).info.run_id
    existing = client.get_run(run_id).data.params
    client.log_batch(run_id, params=[
        __import__("mlflow").entities.Param(k, str(v)) for k, v in
        {"family": family, "trials": n_trials, "objective": objective, "direction": direction,
         "study_name": study_name, "storage": redact(storage_url)}.items() if k not in existing])
    study.set_user_attr("family", family)
    study.set_user_attr("mlflow_experiment_id", experiment_id)
    study.set_user_attr(STUDY_RUN_ATTR, run_id)
    click.echo(f"study: created {study_name!r} (run {run_id}) in {redact(storage_url)}")
    return study, True


@click.command("study", context_settings={"ignore_unknown_options": True})
@click.argument("family", type=click.Choice(sorted(FAMILIES)))
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Complete trials of the study, all workers together.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (more can join from other machines with the same --storage).")
@click.option("--storage", default=None, envvar="MLFLOW_NUMERAI_STUDY_STORAGE",
              help="Optuna storage URL shared by the workers (default: sqlite optuna.db beside the tracking store).")
@click.option("--study-name", default=None, help="Study name (default: numerai-<family>).")
@click.option("--objective", default=DEFAULT_OBJECTIVE, show_default=True,
              help="Metric of the trial run to optimize (any metric the family logs).")
@click.option("--direction", type=click.Choice(["maximize", "minimize"]), default="maximize", show_default=True)
@click.option("--space", "space_specs", multiple=True,
              help="Search-space override KEY=LOW:HIGH[:log] or KEY=a|b|c (repeatable).")
@click.option("--seed", type=int, default=None, help="Sampler seed (worker i uses seed + i).")
@click.option("--heartbeat", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              help="Seconds between a running trial's heartbeats; a trial silent for 3 beats is retried.")
@click.option("--data-dir", default="synthetic", show_default=True)
@click.option("--feature-set", default="small", show_default=True)
@click.option("--registered-model-name", default=None,
              help='Registry name for the best model (default: numerai-<family>-study); "none" to skip.')
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db).")
@click.option("--worker-index", type=int, default=0, hidden=True)
@click.argument("family_args", nargs=-1, type=click.UNPROCESSED)
def study(family, n_trials, workers, storage, study_name, objective, direction, space_specs, seed, heartbeat,
          data_dir, feature_set, registered_model_name, tracking_uri, worker_index, family_args) -> None:
    """Hyper-parameter study of FAMILY on Optuna; arguments after `--` go to the family's command."""
    import optuna
    from mlflow import MlflowClient

    from mlflow_numerai.tracking import ensure_tracking_uri, get_or_create_experiment

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats with ask/tell (not Study.optimize) are deliberate: each trial beats its own.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    space = parse_space(family, space_specs)
    tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if tracking:
        check_tracking(tracking)
    tracking = ensure_tracking_uri(tracking)
    storage_url = storage or default_storage(tracking)
    study_name = study_name.strip() if study_name and study_name.strip() else f"numerai-{family}"
    registered = registered_model_name if registered_model_name is not None else f"numerai-{family}-study"
    registered = None if registered.strip().lower() in ("", "none") else registered
    rdb = open_storage(storage_url, heartbeat)
    client = MlflowClient()
    outer_run = os.environ.pop("MLFLOW_RUN_ID", None)  # under `mlflow run`: the study's run
    if outer_run:
        experiment_id = client.get_run(outer_run).info.experiment_id
    elif os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        experiment_id = get_or_create_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"], client)
    else:
        experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
    if FAMILIES[family].grid:
        grid = {k: list(p.choices) for k, p in space.items()}
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
        if n_trials > grid_size(space):
            click.echo(f"study: {family} is a grid of {grid_size(space)} points; --trials {n_trials} capped")
            n_trials = grid_size(space)
    else:
        sampler = optuna.samplers.TPESampler(seed=None if seed is None else seed + worker_index)
    the_study, created = create_or_join(rdb, study_name, direction, sampler, family=family, n_trials=n_trials,
                                        objective=objective, storage_url=storage_url, client=client,
                                        experiment_id=experiment_id, run_id=outer_run)
    base_args = ["--data-dir", data_dir, "--feature-set", feature_set, *family_args]
    children = []
    for i in range(1, workers if created else 1):
        argv = [sys.executable, "-m", "mlflow_numerai.cli", "study", family, "--trials", str(n_trials),
                "--storage", storage_url, "--study-name", study_name, "--objective", objective,
                "--direction", direction, "--heartbeat", str(heartbeat), "--data-dir", data_dir,
                "--feature-set", feature_set, "--registered-model-name", "none", "--worker-index", str(i),
                *[a for s in space_specs for a in ("--space", s)],
                *(["--seed", str(seed)] if seed is not None else []), "--", *family_args]
        children.append(subprocess.Popen(argv, env={**os.environ, "MLFLOW_TRACKING_URI": tracking}))
    try:
        ran = worker_loop(the_study, rdb, family=family, space=space, base_args=base_args, n_trials=n_trials,
                          objective=objective, heartbeat=heartbeat, client=client)
    finally:
        codes = [c.wait() for c in children]
    click.echo(f"study: worker {worker_index} ran {ran} trials")
    if any(codes):
        click.echo(f"study: local workers exited with {codes}", err=True)
    if created:
        finalize(the_study, client, family=family, objective=objective, registered_name=registered)
