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

import importlib
import os
import subprocess
import sys
import tempfile
import warnings

import click
import mlflow
import pandas as pd

from mlflow_numerai.conventions import BNN_BEST_MODEL_TAG, FAMILY_TAG, RUN_ID_TAG, STUDY_STORAGE_ENV, STUDY_TAG
from mlflow_numerai.entrypoints.bayes_nn import ARTIFACT_DIR, plot_js
from mlflow_numerai.entrypoints.common import registered_name
from mlflow_numerai.studies.optuna import (
    DEFAULT_OBJECTIVE,
    FAMILIES,
    STUDY_RUN_ATTR,
    TRIAL_RUN_ATTR,
    StudyError,
    check_tracking,
    create_or_join,
    default_storage,
    experiment_for,
    make_sampler,
    open_storage,
    parse_space,
    worker_loop,
)
from mlflow_numerai.tracking import TRACKING_ENV, ensure_tracking_uri


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
    client.set_tag(parent, f"{STUDY_TAG}.best_run_id", best_run)
    client.set_tag(parent, f"{STUDY_TAG}.best_trial", str(best.number))
    if FAMILIES[family].grid and family == "bnn":
        bnn_study_level(complete, client, parent)
    version = None
    if registered_name:
        mv = mlflow.register_model(f"runs:/{best_run}/model", registered_name,
                                   tags={FAMILY_TAG: family, RUN_ID_TAG: best_run, STUDY_TAG: study.study_name})
        version = str(mv.version)
        client.set_tag(parent, f"{STUDY_TAG}.registered_version", version)
        click.echo(f"study: registered {registered_name} version {version} (trial {best.number})")
    client.set_terminated(parent, "FINISHED")
    click.echo(f"study: best trial {best.number} {objective}={best.value:.5f} params {best.params}")
    return version


def bnn_study_level(complete: list, client, parent: str) -> None:
    """What `train bnn-study` logs on its parent, from the trial runs: the ensemble-vs-members
    table, the Jensen-Shannon divergence matrix between the models and its heatmap."""
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
    client.set_tag(parent, BNN_BEST_MODEL_TAG, str(table["ensemble_corr_mean"].idxmax()))
    if len(members) > 1:
        js = js_divergence_matrix(members)
        client.log_text(parent, js.to_csv(), f"{ARTIFACT_DIR}/js_divergence.csv")
        fig = plot_js(js)
        client.log_figure(parent, fig, f"{ARTIFACT_DIR}/js_divergence.png")
        import matplotlib.pyplot as plt

        plt.close(fig)


@click.command("study", context_settings={"ignore_unknown_options": True})
@click.argument("family", type=click.Choice(sorted(FAMILIES)))
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Complete trials of the study, all workers together.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (more can join from other machines with the same --storage).")
@click.option("--storage", default=None, envvar=STUDY_STORAGE_ENV,
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
    try:
        space = parse_space(family, space_specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--space'") from None
    try:
        run_study(family, space, n_trials=n_trials, workers=workers, storage=storage, study_name=study_name,
                  objective=objective, direction=direction, space_specs=space_specs, seed=seed, heartbeat=heartbeat,
                  data_dir=data_dir, feature_set=feature_set, registered_model_name=registered_model_name,
                  tracking_uri=tracking_uri, worker_index=worker_index, family_args=family_args)
    except StudyError as exc:
        raise click.ClickException(str(exc)) from None


def trainer(family: str):
    """A function running FAMILY's training command (in this process) with the given options."""
    module, attr = FAMILIES[family].command.split(":")
    command = getattr(importlib.import_module(module), attr)

    def train(args: list[str]) -> None:
        command.main(args, prog_name=f"study {family}", standalone_mode=False)

    return train


def run_study(family, space, *, n_trials, workers, storage, study_name, objective, direction, space_specs, seed,
              heartbeat, data_dir, feature_set, registered_model_name, tracking_uri, worker_index,
              family_args) -> None:
    """One worker of the study (the first one also starts the local workers and finalizes)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats with ask/tell (not Study.optimize) are deliberate: each trial beats its own.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    tracking = tracking_uri or os.environ.get(TRACKING_ENV) or None
    if tracking:
        check_tracking(tracking)
    tracking = ensure_tracking_uri(tracking)
    storage_url = storage or default_storage(tracking)
    study_name = study_name.strip() if study_name and study_name.strip() else f"numerai-{family}"
    registered = registered_name(registered_model_name if registered_model_name is not None
                                 else f"numerai-{family}-study")
    rdb = open_storage(storage_url, heartbeat)
    client = mlflow.MlflowClient()
    outer_run = os.environ.pop("MLFLOW_RUN_ID", None)  # under `mlflow run`: the study's run
    experiment_id = experiment_for(client, outer_run)
    sampler, capped = make_sampler(family, space, n_trials, seed, worker_index)
    if capped < n_trials:
        click.echo(f"study: {family} is a grid of {capped} points; --trials {n_trials} capped")
        n_trials = capped
    the_study, created = create_or_join(rdb, study_name, direction, sampler, family=family, n_trials=n_trials,
                                        objective=objective, storage_url=storage_url, client=client,
                                        experiment_id=experiment_id, run_id=outer_run, say=click.echo)
    base_args = ["--data-dir", data_dir, "--feature-set", feature_set, *family_args]
    children = []
    for i in range(1, workers if created else 1):
        argv = [sys.executable, "-m", "mlflow_numerai.cli", "study", family, "--trials", str(n_trials),
                "--storage", storage_url, "--study-name", study_name, "--objective", objective,
                "--direction", direction, "--heartbeat", str(heartbeat), "--data-dir", data_dir,
                "--feature-set", feature_set, "--registered-model-name", "none", "--worker-index", str(i),
                *[a for s in space_specs for a in ("--space", s)],
                *(["--seed", str(seed)] if seed is not None else []), "--", *family_args]
        children.append(subprocess.Popen(argv, env={**os.environ, TRACKING_ENV: tracking}))
    try:
        ran = worker_loop(the_study, rdb, family=family, space=space, base_args=base_args, n_trials=n_trials,
                          objective=objective, heartbeat=heartbeat, client=client, train=trainer(family),
                          say=click.echo,
                          fatal=(StudyError, click.ClickException))
    finally:
        codes = [c.wait() for c in children]
    click.echo(f"study: worker {worker_index} ran {ran} trials")
    if any(codes):
        click.echo(f"study: local workers exited with {codes}", err=True)
    if created:
        finalize(the_study, client, family=family, objective=objective, registered_name=registered)
