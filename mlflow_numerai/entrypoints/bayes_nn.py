"""`mlflow-numerai train bayes-nn` and `train bnn-study` (MLproject entry points `bayes_nn`,
`bnn_study`): the Pyro Bayesian NN of seed 002 and its posterior study.

Training reads minibatches from the int8 era cache of train through the prefetching stream
(`data/stream.py`, the cache shared with keras_stream), so the training set never has to fit in
memory; validation is read into memory for the posterior study.

`bayes_nn` trains one prior / architecture / target model by SVI, draws S posterior samples,
scores the ensemble against its members and the uncertainty as a burn-era detector (metrics and
artifacts under `bnn/` as they are made), logs the K-sample predict closure with
`log_numerai_model`, evaluates it with the `numerai` evaluator and registers it.
`bnn_study` runs priors x architectures (each a nested run) plus the deterministic baseline per
architecture, and logs the Jensen-Shannon divergence matrix between the models on the parent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow

from mlflow_numerai.conventions import (
    BNN_BEST_MODEL_TAG,
    BNN_HIDDEN_TAG,
    BNN_MODEL_TAG,
    BNN_PRIOR_TAG,
    FAMILY_TAG,
    MODEL_ARTIFACT,
)
from mlflow_numerai.data import io as data_io
from mlflow_numerai.data.cache import cache_dirs
from mlflow_numerai.data.stream import BatchStream
from mlflow_numerai.entrypoints import options
from mlflow_numerai.entrypoints.common import (
    build_split_cache,
    evaluate_on_validation,
    export_data_env,
    log_new_params,
    read_split,
    register,
    registered_name,
    resolve_data_options,
    start_family_run,
)
from mlflow_numerai.packaging import log_numerai_model
from mlflow_numerai.tracking import ensure_tracking_uri

FAMILY = "bayes_nn"
STUDY_FAMILY = "bnn_study"
DEFAULT_REGISTERED_NAME = "numerai-bayes-nn"
ARTIFACT_DIR = "bnn"
PRIOR_CHOICES = ("uniform", "normal", "laplace")  # = families.bayes_nn.PRIORS (no torch import for --help)
TARGET_MODEL_CHOICES = ("single", "h1", "h2", "h3", "h4")  # = families.bayes_nn.TARGET_MODELS
# SVI defaults: families.bayes_nn.fit's (the study in benchmarks/README.md, "Families that learn";
# repeated here so --help imports no torch; tests/test_learning.py checks that they match).
EPOCHS, LR, FINAL_LR_FRACTION, INIT_SCALE, PRIOR_SCALE, BATCH_SIZE = 6, 1e-2, 0.1, 0.05, 1.0, 1024


@dataclass
class Prepared:
    """Training minibatches (streamed from the era cache) and validation arrays of one target
    model, rows with a NaN target left out."""

    train: object  # bayes_nn.TrainingBatches
    x_valid: object
    target_valid: object
    eras_valid: object
    dropped_train: int
    dropped_valid: int


def load_data(path: Path, features: list[str], targets: tuple[str, ...], *, batch_size: int, seed: int) -> Prepared:
    """Training batches streamed from the int8 era cache of train (built once, shared with
    keras_stream; rows with a NaN target left out and counted by the cache), and validation
    features/target/eras in memory (the posterior study scores every row against S samples)."""
    from mlflow_numerai.families import bayes_nn as bnn  # torch

    train_dir, _ = cache_dirs(path, features, list(targets))
    cache = build_split_cache(path, "train", train_dir, features, list(targets))
    dropped_train = int(cache.manifest.get("rows_dropped_nan_target", 0))
    valid = read_split(path, "validation", columns=[*features, "target"])
    valid, dropped_valid = bnn.drop_nan_targets(valid, ["target"])
    if cache.n_rows == 0 or len(valid) == 0:
        raise click.ClickException(f"no rows left after dropping NaN targets {list(targets)}")
    return Prepared(
        train=bnn.stream_batches(BatchStream(cache, batch_size, seed=seed, threads=1)),
        x_valid=bnn.feature_matrix(valid, features),
        target_valid=valid["target"].astype("float64"),
        eras_valid=valid["era"],
        dropped_train=dropped_train,
        dropped_valid=dropped_valid,
    )


def set_threads(threads: int) -> None:
    """Use `threads` torch threads (0: torch's default, one per core)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Logging helpers (plots and tables under bnn/)
# --------------------------------------------------------------------------------------------


def log_frame(frame, artifact: str) -> None:
    """Log a DataFrame as CSV at `artifact` (a path under the run's artifacts)."""
    mlflow.log_text(frame.to_csv(), artifact)


def plot_members(members, metrics: dict, title: str):
    """Histograms of the members' corr mean and Sharpe with the ensemble's value marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, column, ensemble in (
        (axes[0], "corr_mean", metrics["ensemble_corr_mean"]),
        (axes[1], "sharpe", metrics["ensemble_sharpe"]),
    ):
        values = members[column].dropna()
        ax.hist(values, bins=min(50, max(10, len(values) // 20)), color="#8fb3d9", edgecolor="white")
        ax.axvline(ensemble, color="#c0392b", lw=2, label=f"ensemble {ensemble:.4f}")
        ax.axvline(values.mean(), color="#2c3e50", lw=1, ls="--", label=f"member mean {values.mean():.4f}")
        ax.set_xlabel(f"validation {column}")
        ax.set_ylabel("posterior samples")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_roc(roc, auc: float, title: str):
    """The burn-era ROC curve of the uncertainty score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    if len(roc):
        ax.step(roc["fpr"], roc["tpr"], where="post", color="#c0392b", label=f"AUC {auc:.3f}")
        ax.legend(loc="lower right")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (burn eras)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_per_era(per_era, title: str):
    """Ensemble corr per era (burn eras red) over the uncertainty per era."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    x = range(len(per_era))
    colors = ["#c0392b" if b else "#2c7fb8" for b in per_era["burn"]]
    top.bar(x, per_era["ensemble_corr"], color=colors)
    top.set_ylabel("ensemble corr")
    bottom.plot(x, per_era["uncertainty"], color="#2c3e50")
    bottom.set_ylabel("mean predictive std")
    bottom.set_xlabel("validation era")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_js(matrix):
    """Heatmap of the Jensen-Shannon divergence matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    image = ax.imshow(matrix.to_numpy(), cmap="viridis")
    ax.set_xticks(range(n), matrix.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), matrix.index, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix.iat[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label="JS divergence (nats)")
    ax.set_title("member corr-mean distributions")
    fig.tight_layout()
    return fig


def log_figure(fig, artifact: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, artifact)
    plt.close(fig)


def log_study(study, label: str) -> None:
    """Log a posterior study's metrics, tables and plots on the active run."""
    import math

    mlflow.log_metrics({k: v for k, v in study.metrics.items() if not math.isnan(v)})
    log_frame(study.per_era[["ensemble_corr", "uncertainty", "burn"]], f"{ARTIFACT_DIR}/per_era.csv")
    log_frame(study.members, f"{ARTIFACT_DIR}/members.csv")
    log_frame(study.roc[["fpr", "tpr"]], f"{ARTIFACT_DIR}/roc.csv")
    log_figure(plot_members(study.members, study.metrics, label), f"{ARTIFACT_DIR}/member_histograms.png")
    log_figure(plot_roc(study.roc, study.metrics["burn_auc"], label), f"{ARTIFACT_DIR}/roc.png")
    log_figure(plot_per_era(study.per_era, label), f"{ARTIFACT_DIR}/per_era.png")


def echo_study(label: str, metrics: dict) -> None:
    m = metrics
    click.echo(
        f"{label}: ensemble corr {m['ensemble_corr_mean']:.4f} (sharpe {m['ensemble_sharpe']:.3f}); members "
        f"{m['member_corr_mean_mean']:.4f} +- {m['member_corr_mean_std']:.4f} (sharpe {m['member_sharpe_mean']:.3f} "
        f"+- {m['member_sharpe_std']:.3f}); burn AUC {m['burn_auc']:.3f} over {int(m['n_burn_eras'])} burn eras"
    )


# --------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------


def train_and_study(data: Prepared, spec, *, epochs, lr, n_samples, budget_bytes, seed, label,
                    init_scale=0.01, final_lr_fraction=1.0, zero_output=False):
    """SVI fit (per-epoch metrics logged), S posterior samples, posterior study (logged)."""
    from mlflow_numerai.families import bayes_nn as bnn  # torch
    from mlflow_numerai.studies.bnn import study_posterior

    def on_epoch(epoch: int, metrics: dict) -> None:
        mlflow.log_metrics({"elbo_loss": metrics["elbo_loss"], "svi_rows_per_sec": metrics["rows_per_sec"],
                            "svi_learning_rate": metrics["learning_rate"]}, step=epoch)

    fit = bnn.fit_svi(data.train, spec, epochs=epochs, lr=lr, seed=seed, init_scale=init_scale,
                      final_lr_fraction=final_lr_fraction, zero_output=zero_output, on_epoch=on_epoch)
    mlflow.log_metrics({"train_seconds": fit.seconds, "svi_rows_per_sec_mean": fit.rows_per_sec})
    started = time.perf_counter()
    samples = bnn.sample_posterior(fit, n_samples, seed=seed)
    study = study_posterior(samples, data.x_valid, data.target_valid, data.eras_valid,
                            budget_bytes=budget_bytes, progress=True)
    mlflow.log_metric("study_seconds", time.perf_counter() - started)
    log_study(study, label)
    echo_study(label, study.metrics)
    return samples, study


def common_options(func):
    """Options shared by `bayes-nn` and `bnn-study`."""
    shared = [
        options.data_dir_option(),
        options.feature_set_option(),
        click.option("--target-model", type=click.Choice(TARGET_MODEL_CHOICES), default="single", show_default=True,
                     help="single target, or the seed's multi-target hypotheses H1-H4 (scored on `target`)."),
        options.epochs_option(EPOCHS, "SVI epochs (steps = epochs x batches per epoch)."),
        options.batch_size_option(BATCH_SIZE),
        options.learning_rate_option(LR, "Adam learning rate of SVI at the first step."),
        click.option("--final-lr-fraction", type=options.FiniteFloatRange(0.0, 1.0, min_open=True),
                     default=FINAL_LR_FRACTION, show_default=True, help="SVI learning rate at the last step, as "
                     "a fraction of --learning-rate (geometric decay; 1: constant)."),
        click.option("--init-scale", type=options.FiniteFloatRange(min=0.0, min_open=True), default=INIT_SCALE,
                     show_default=True, help="Initial standard deviation of the guide's weights, as a share of "
                     "their layer's He std."),
        click.option("--output-init", type=click.Choice(["he", "zero"]), default="zero", show_default=True,
                     help="Start of the guide's output-layer means: He draws, or 0 (the net starts as the "
                     "target mean)."),
        click.option("--prior-scale", type=options.FiniteFloatRange(min=0.0, min_open=True), default=PRIOR_SCALE,
                     show_default=True, help="Weight prior standard deviation in units of He's sqrt(2 / fan_in)."),
        click.option("--n-samples", type=click.IntRange(min=2), default=1000, show_default=True,
                     help="Posterior weight samples S drawn for the study."),
        click.option("--memory-budget-mb", type=options.FiniteFloatRange(min=0.0, min_open=True), default=512.0,
                     show_default=True, help="Memory for one block of the batched predictive (MiB)."),
        options.seed_option(),
        click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="torch threads (0: one per core)."),
        options.tracking_uri_option(),
    ]
    for option in reversed(shared):
        func = option(func)
    return func


def _setup(data_dir, feature_set, tracking_uri, threads):
    path, features, version = resolve_data_options(data_dir, feature_set, "target")
    ensure_tracking_uri(tracking_uri)
    set_threads(threads)
    export_data_env(version, feature_set)
    return path, features, version


def _load(path, features, target_model, *, batch_size, seed):
    from mlflow_numerai.families import bayes_nn as bnn  # torch

    targets = bnn.TARGET_MODELS[target_model]
    try:
        data = load_data(path, features, targets, batch_size=batch_size, seed=seed)
    except (data_io.DataError, KeyError) as exc:
        raise click.ClickException(f"target model {target_model!r} needs targets {list(targets)}: {exc}") from exc
    click.echo(f"bnn: {data.train.n_rows} train rows, {len(data.x_valid)} validation rows, {len(features)} features; "
               f"dropped {data.dropped_train} train / {data.dropped_valid} validation rows with NaN targets")
    return data


def _log_data_metrics(data: Prepared) -> None:
    mlflow.log_metrics({"train_rows": float(data.train.n_rows), "validation_rows": float(len(data.x_valid)),
                        "train_rows_dropped_nan": float(data.dropped_train),
                        "validation_rows_dropped_nan": float(data.dropped_valid)})


@click.command(FAMILY)
@common_options
@click.option("--prior", type=click.Choice(PRIOR_CHOICES), default="normal", show_default=True,
              help="Weight prior: improper flat, He-scaled normal, or Laplace with He's variance.")
@options.hidden_option("128,64,64", options.HIDDEN_HELP + " At most 3 layers.")
@click.option("--k-model-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Posterior samples K stored in predict.pkl (its ensemble mean is the prediction).")
@options.registered_model_name_option(DEFAULT_REGISTERED_NAME)
def bayes_nn(data_dir, feature_set, target_model, epochs, batch_size, learning_rate, final_lr_fraction, init_scale,
             output_init, prior_scale, n_samples, memory_budget_mb, seed, threads, tracking_uri, prior, hidden,
             k_model_samples, registered_model_name) -> None:
    """Bayesian NN (Pyro SVI): posterior ensemble, members, burn AUC; log predict.pkl, register."""
    from mlflow_numerai.families import bayes_nn as bnn  # torch

    lr = learning_rate
    try:
        sizes = bnn.parse_hidden(hidden)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--hidden'") from exc
    path, features, version = _setup(data_dir, feature_set, tracking_uri, threads)
    spec = bnn.BNNSpec(n_features=len(features), hidden=sizes, prior=prior, target_model=target_model,
                       prior_scale=prior_scale)
    register_as = registered_name(registered_model_name)
    label = f"{prior}/{'-'.join(map(str, sizes)) or 'linear'}/{target_model}"

    with start_family_run(FAMILY, run_name=f"bayes_nn-{prior}") as run:
        log_new_params({"data_dir": str(path), "feature_set": feature_set, "n_features": len(features),
                           "prior": prior, "hidden": "-".join(map(str, sizes)) or "none",
                           "target_model": target_model, "targets": ",".join(spec.targets), "epochs": epochs,
                           "batch_size": batch_size, "lr": lr, "final_lr_fraction": final_lr_fraction,
                           "init_scale": init_scale, "output_init": output_init, "prior_scale": prior_scale,
                           "n_samples": n_samples,
                           "k_model_samples": k_model_samples, "memory_budget_mb": memory_budget_mb,
                           "seed": seed, "guide": "AutoNormal", "elbo": "Trace_ELBO"})
        data = _load(path, features, target_model, batch_size=batch_size, seed=seed)
        _log_data_metrics(data)
        samples, study = train_and_study(data, spec, epochs=epochs, lr=lr,
                                         n_samples=n_samples, budget_bytes=int(memory_budget_mb * 2**20),
                                         seed=seed, label=label, init_scale=init_scale,
                                         final_lr_fraction=final_lr_fraction, zero_output=output_init == "zero")
        predict = bnn.make_predict(features, samples, k=k_model_samples)
        info = log_numerai_model(predict, MODEL_ARTIFACT, data_dir=path, feature_set=feature_set, data_version=version,
                                 metadata={"bnn_prior": prior, "bnn_hidden": list(sizes),
                                           "bnn_target_model": target_model, "bnn_k_samples": predict.n_samples})
        click.echo(f"bayes_nn: logged {info.model_uri}")
        metrics = evaluate_on_validation(info.model_uri, path, feature_set, "target", churn_model=register_as)
        click.echo(f"bayes_nn: evaluator numerai_corr_mean={metrics.get('numerai_corr_mean', float('nan')):.4f}")
        if register_as:
            register(info.model_uri, register_as, FAMILY, run.info.run_id)


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


def parse_list(text: str, name: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise click.BadParameter(f"give at least one value, got {text!r}", param_hint=name)
    return items


@click.command(STUDY_FAMILY)
@common_options
@click.option("--priors", default="uniform,normal,laplace", show_default=True,
              help="Comma-separated priors to compare.")
@click.option("--architectures", default="none,128,128-64,128-64-64", show_default=True,
              help='Comma-separated hidden sizes ("none" = no hidden layer).')
@click.option("--baseline-lr", type=options.FiniteFloatRange(min=0.0, min_open=True), default=1e-2, show_default=True,
              help="Adam learning rate of the deterministic baseline.")
@click.option("--with-baseline/--no-baseline", default=True, show_default=True,
              help="Also train the deterministic baseline (MSE, He init) per architecture.")
def bnn_study(data_dir, feature_set, target_model, epochs, batch_size, learning_rate, final_lr_fraction, init_scale,
              output_init, prior_scale, n_samples, memory_budget_mb, seed, threads, tracking_uri, priors,
              architectures, baseline_lr, with_baseline) -> None:
    """Priors x architectures study (nested runs) plus the baseline; JS divergence matrix."""
    import pandas as pd

    from mlflow_numerai.families import bayes_nn as bnn  # torch
    from mlflow_numerai.studies.bnn import js_divergence_matrix, study_posterior

    lr = learning_rate
    prior_list = parse_list(priors, "'--priors'")
    for p in prior_list:
        if p not in bnn.PRIORS:
            raise click.BadParameter(f"unknown prior {p!r}; choose from {list(bnn.PRIORS)}", param_hint="'--priors'")
    try:
        archs = [bnn.parse_hidden(options.parse_hidden(a)) for a in parse_list(architectures, "'--architectures'")]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--architectures'") from exc
    path, features, version = _setup(data_dir, feature_set, tracking_uri, threads)
    budget = int(memory_budget_mb * 2**20)
    summary, members = [], {}

    with start_family_run(STUDY_FAMILY):
        log_new_params({"data_dir": str(path), "feature_set": feature_set, "n_features": len(features),
                           "priors": ",".join(prior_list), "architectures": architectures,
                           "target_model": target_model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                           "baseline_lr": baseline_lr, "n_samples": n_samples, "seed": seed,
                           "with_baseline": with_baseline})
        data = _load(path, features, target_model, batch_size=batch_size, seed=seed)
        _log_data_metrics(data)
        for sizes in archs:
            arch = "-".join(map(str, sizes)) or "none"
            if with_baseline:
                label = f"baseline/{arch}"
                with mlflow.start_run(run_name=label, nested=True,
                                      tags={FAMILY_TAG: STUDY_FAMILY, BNN_MODEL_TAG: label, BNN_PRIOR_TAG: "none",
                                            BNN_HIDDEN_TAG: arch}):
                    log_new_params({"model": "baseline", "hidden": arch, "lr": baseline_lr, "epochs": epochs,
                                       "batch_size": batch_size, "seed": seed})
                    fit = bnn.fit_baseline(
                        data.train, sizes, epochs=epochs, lr=baseline_lr, seed=seed,
                        on_epoch=lambda e, m: mlflow.log_metrics({"mse": m["mse"]}, step=e))
                    study = study_posterior(fit.samples, data.x_valid, data.target_valid, data.eras_valid,
                                            budget_bytes=budget)
                    m = study.metrics
                    mlflow.log_metrics({"ensemble_corr_mean": m["ensemble_corr_mean"],
                                        "ensemble_sharpe": m["ensemble_sharpe"]})
                    log_frame(study.per_era[["ensemble_corr"]], f"{ARTIFACT_DIR}/per_era.csv")
                    click.echo(f"{label}: corr {m['ensemble_corr_mean']:.4f} (sharpe {m['ensemble_sharpe']:.3f})")
                    summary.append({"model": label, "prior": "baseline", "hidden": arch, **m})
            for prior in prior_list:
                label = f"{prior}/{arch}"
                spec = bnn.BNNSpec(n_features=len(features), hidden=sizes, prior=prior, target_model=target_model,
                                   prior_scale=prior_scale)
                with mlflow.start_run(run_name=label, nested=True,
                                      tags={FAMILY_TAG: STUDY_FAMILY, BNN_MODEL_TAG: label, BNN_PRIOR_TAG: prior,
                                            BNN_HIDDEN_TAG: arch}):
                    log_new_params({"model": "bayes_nn", "prior": prior, "hidden": arch,
                                       "target_model": target_model, "epochs": epochs, "batch_size": batch_size,
                                       "lr": lr, "final_lr_fraction": final_lr_fraction, "init_scale": init_scale,
                                       "output_init": output_init, "prior_scale": prior_scale,
                                       "n_samples": n_samples, "seed": seed})
                    _, study = train_and_study(data, spec, epochs=epochs, lr=lr,
                                               n_samples=n_samples, budget_bytes=budget, seed=seed, label=label,
                                               init_scale=init_scale, final_lr_fraction=final_lr_fraction,
                                               zero_output=output_init == "zero")
                members[label] = study.members
                summary.append({"model": label, "prior": prior, "hidden": arch, **study.metrics})
                table = pd.DataFrame(summary).set_index("model")
                log_frame(table, f"{ARTIFACT_DIR}/study_summary.csv")  # refreshed as models finish

        js = js_divergence_matrix(members)
        log_frame(js, f"{ARTIFACT_DIR}/js_divergence.csv")
        log_figure(plot_js(js), f"{ARTIFACT_DIR}/js_divergence.png")
        table = pd.DataFrame(summary).set_index("model")
        log_frame(table, f"{ARTIFACT_DIR}/study_summary.csv")
        best = table["ensemble_corr_mean"].idxmax()
        mlflow.log_metrics({"best_ensemble_corr_mean": float(table["ensemble_corr_mean"].max()),
                            "n_models": float(len(table))})
        mlflow.set_tag(BNN_BEST_MODEL_TAG, best)
        click.echo(f"bnn_study: {len(table)} models; best ensemble corr {best} "
                   f"{table['ensemble_corr_mean'].max():.4f}")
