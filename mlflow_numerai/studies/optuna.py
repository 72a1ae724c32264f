"""The Optuna side of `mlflow-numerai study`: search spaces per family, the shared storage
(heartbeats, retry of a dead worker's trial), exactly-N trial accounting, the worker loop and
the creation of (or joining) a study and its MLflow run.

Free of click: a failure of the study (storage or tracking server unreachable, an objective the
family does not log, too many failed trials) is a `StudyError` with one line; the command
(`entrypoints/study.py`) turns it into the command-line convention. A bad search-space override
is a ValueError naming the override.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_numerai.conventions import FAMILY_TAG, STUDY_TAG, STUDY_TRIAL_TAG
from mlflow_numerai.tracking import get_or_create_experiment, sqlite_path

DEFAULT_OBJECTIVE = "numerai_corr_mean"  # the evaluator's validation corr mean
STUDY_RUN_ATTR = "mlflow_run_id"
TRIAL_RUN_ATTR = "mlflow_run_id"
SURPLUS_ATTR = "surplus"
POLL_SECONDS = 1.0
MAX_FAILURES_IN_A_ROW = 3


class StudyError(Exception):
    """The study cannot go on (storage, tracking server, objective, failing trials): one line."""


def echo(message: str, err: bool = False) -> None:
    """The default way the study reports progress (the command passes click.echo)."""
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


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

    command: str  # "module:attribute" of the training command (resolved by `entrypoints/study.py`)
    space: dict[str, Param]
    options: Callable[[dict[str, Any]], list[str]]
    grid: bool = False  # exhaustive grid (GridSampler) instead of TPE


def _baseline_options(p: dict[str, Any]) -> list[str]:
    return ["--alpha", repr(float(p["alpha"]))]


def _keras_options(p: dict[str, Any]) -> list[str]:
    return ["--hidden", str(p["hidden"]), "--dropout", repr(float(p["dropout"])), "--noise",
            repr(float(p["noise"])), "--learning-rate", repr(float(p["learning_rate"])),
            "--epochs", str(int(p["epochs"])), "--weight-decay", repr(float(p["weight_decay"]))]


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
                     "epochs": Param("int", 2, 10),
                     "weight_decay": Param("float", 0.0, 4.0)},
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
            raise ValueError(f"{spec!r}: expected KEY=LOW:HIGH[:log] or KEY=a|b|c")
        if key not in space:
            raise ValueError(f"unknown search-space key {key!r} for {family}; choose from {sorted(space)}")
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
            raise ValueError(f"{spec!r}: expected {key}=LOW:HIGH[:log]") from None
        log = len(parts) > 2 and parts[2].strip() == "log"
        if not low <= high or (log and low <= 0):
            raise ValueError(f"{spec!r}: need LOW <= HIGH (and LOW > 0 with log)")
        space[key] = Param(base.kind, low, high, log=log)
    return space


def redact(url: str) -> str:
    """`url` without its password (for logs and messages)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def default_storage(tracking_uri: str) -> str:
    """`optuna.db` beside a SQLite tracking store, else in the working directory."""
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
        raise StudyError(f"tracking server {redact(uri)} is unreachable: {type(exc).__name__}") from None


def open_storage(url: str, heartbeat: float):
    """Optuna's RDB storage with heartbeats and retry of a dead worker's trial; one clear line if
    it cannot be opened. A fresh SQLite file is created under a lock (schema creation races)."""
    import optuna
    from filelock import FileLock
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

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
            raise StudyError(f"study storage {redact(url)} cannot be used: {exc}") from None
        except Exception as exc:  # sqlalchemy OperationalError, IntegrityError, ...
            last = exc
            if "could not connect" in str(exc).lower() or "connection refused" in str(exc).lower():
                break
            time.sleep(0.5 + attempt)
    reason = str(getattr(last, "orig", last) or type(last).__name__).strip().splitlines()[0]
    optuna.logging.get_logger("optuna")  # keep Optuna's own logger configured
    raise StudyError(f"study storage {redact(url)} is unreachable: {reason}")


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
              experiment_id: str, trial, study_name: str, objective: str, client,
              train: Callable[[list[str]], Any]) -> tuple[str, float]:
    """The family's training command (`train(args)`) in a new run nested under the study's run;
    (run id, objective)."""
    import mlflow

    fam = FAMILIES[family]
    run = client.create_run(experiment_id, run_name=f"{family}-trial-{trial.number}",
                            tags={"mlflow.parentRunId": parent_run_id, STUDY_TAG: study_name,
                                  STUDY_TRIAL_TAG: str(trial.number)})
    run_id = run.info.run_id
    trial.set_user_attr(TRIAL_RUN_ATTR, run_id)  # at once: a dead worker's run is closed by this id
    args = [*base_args, *fam.options(params), "--registered-model-name", "none"]
    os.environ["MLFLOW_RUN_ID"] = run_id  # the family's start_run continues this run
    try:
        train(args)
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
        raise StudyError(f"objective {objective!r} was not logged by {family}; "
                         f"choose from {sorted(logged.metrics)}")
    return run_id, float(logged.metrics[objective])


def worker_loop(study, storage, *, family: str, space: dict[str, Param], base_args: list[str], n_trials: int,
                objective: str, heartbeat: float, client, train: Callable[[list[str]], Any],
                say: Callable[..., None] = echo,
                fatal: tuple[type[BaseException], ...] = (StudyError,)) -> int:
    """Run trials until the study has `n_trials` complete ones; returns how many this worker ran.
    `train(args)` runs the family's training command with the trial's options.
    A trial failing with one of `fatal` (a bad option of the family, a missing objective) ends
    the worker; other failures are counted, and MAX_FAILURES_IN_A_ROW of them end it."""
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
            say(f"study: trial {trial.number} {params}")
            try:
                run_id, value = run_trial(family, params, base_args, parent, experiment_id, trial,
                                          study.study_name, objective, client, train)
            except fatal:
                _tell(study, trial, state=TrialState.FAIL)
                raise
            except Exception as exc:
                say(f"study: trial {trial.number} failed: {type(exc).__name__}: {exc}", err=True)
                _tell(study, trial, state=TrialState.FAIL)
                failures += 1
                if failures >= MAX_FAILURES_IN_A_ROW:  # the family fails whatever the parameters
                    raise StudyError(f"{failures} trials in a row failed; last: {exc}") from None
                continue
        _tell(study, trial, value)
        failures = 0
        done_here += 1
        n_complete = _counts(study)[TrialState.COMPLETE]
        say(f"study: trial {trial.number} {objective}={value:.5f} ({n_complete}/{n_trials} complete)")
        client.log_metric(parent, "trials_complete", n_complete)


def create_or_join(storage, study_name: str, direction: str, sampler, *, family: str, n_trials: int,
                   objective: str, storage_url: str, client, experiment_id: str, run_id: str | None = None,
                   wait_s: float = 600.0, say: Callable[..., None] = echo):
    """(study, created): exactly one worker creates the study (and its MLflow run); the others wait
    for the run id it records."""
    import mlflow
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        deadline = time.monotonic() + wait_s
        while STUDY_RUN_ATTR not in study.user_attrs:
            if time.monotonic() > deadline:
                raise StudyError(f"study {study_name!r} has no MLflow run after {wait_s:.0f} s") from None
            time.sleep(POLL_SECONDS)
        if study.user_attrs.get("family") != family:
            kind = study.user_attrs.get("family")
            raise StudyError(f"study {study_name!r} is a {kind} study, not {family}") from None
        return study, False
    tags = {FAMILY_TAG: f"study_{family}", STUDY_TAG: study_name}
    if run_id:
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    else:
        run_id = client.create_run(experiment_id, run_name=f"study-{family}-{study_name}", tags=tags).info.run_id
    existing = client.get_run(run_id).data.params
    client.log_batch(run_id, params=[
        mlflow.entities.Param(k, str(v)) for k, v in
        {"family": family, "trials": n_trials, "objective": objective, "direction": direction,
         "study_name": study_name, "storage": redact(storage_url)}.items() if k not in existing])
    study.set_user_attr("family", family)
    study.set_user_attr("mlflow_experiment_id", experiment_id)
    study.set_user_attr(STUDY_RUN_ATTR, run_id)
    say(f"study: created {study_name!r} (run {run_id}) in {redact(storage_url)}")
    return study, True




def make_sampler(family: str, space: dict[str, Param], n_trials: int, seed: int | None, worker_index: int = 0):
    """(sampler, trials): an exhaustive grid for a grid family (trials capped at the grid's
    size), else TPE seeded per worker (seed + worker index)."""
    import optuna

    if FAMILIES[family].grid:
        grid = {k: list(p.choices) for k, p in space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed), min(n_trials, grid_size(space))
    return optuna.samplers.TPESampler(seed=None if seed is None else seed + worker_index), n_trials


def experiment_for(client, outer_run: str | None) -> str:
    """The experiment of the study: the outer run's (under `mlflow run`), else MLFLOW_EXPERIMENT_NAME
    (created if missing), else MLFLOW_EXPERIMENT_ID, else the default experiment."""
    if outer_run:
        return client.get_run(outer_run).info.experiment_id
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return get_or_create_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"], client)
    return os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
