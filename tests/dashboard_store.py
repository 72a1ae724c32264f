"""Fill a tracking store the way the project's entry points do (docs/ARCHITECTURE.md, "MLflow
conventions"), for the dashboard's tests and benchmark.

`fill_contract_store` logs through MLflow's own client with exactly the contract's tag, metric
and artifact names, and returns what it logged so tests compare the pages against it.
"""

from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

PRIORS = ("uniform", "normal", "laplace")


@dataclass
class Logged:
    """What the fixture wrote, by role."""

    baseline: str = ""
    keras: list[str] = field(default_factory=list)
    bnn: dict[str, str] = field(default_factory=dict)  # prior -> run id
    study: str = ""
    study_baseline: str = ""
    varmax: str = ""
    per_era: dict[str, pd.DataFrame] = field(default_factory=dict)  # run id -> per-era corr table
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # run id -> metrics
    keras_history: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    members: dict[str, pd.DataFrame] = field(default_factory=dict)
    bnn_per_era: dict[str, pd.DataFrame] = field(default_factory=dict)
    js: pd.DataFrame | None = None
    forecast: pd.DataFrame | None = None
    order_search: pd.DataFrame | None = None
    versions: dict[tuple[str, int], dict] = field(default_factory=dict)
    diagnostics: dict[str, pd.DataFrame] = field(default_factory=dict)  # run id -> per-era diagnostics


def _log_csv(client, run_id: str, df: pd.DataFrame, artifact_path: str, index: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(artifact_path).name
        df.to_csv(local, index=index)
        parent = str(Path(artifact_path).parent)
        client.log_artifact(run_id, str(local), None if parent == "." else parent)


def _log_text(client, run_id: str, text: str, artifact_path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(artifact_path).name
        local.write_text(text)
        parent = str(Path(artifact_path).parent)
        client.log_artifact(run_id, str(local), None if parent == "." else parent)


def _eval_metrics(corr: np.ndarray) -> dict[str, float]:
    cum = np.cumsum(corr)
    return {
        "numerai_corr_mean": float(corr.mean()),
        "numerai_corr_std": float(corr.std(ddof=1)),
        "numerai_corr_sharpe": float(corr.mean() / corr.std(ddof=1)),
        "numerai_corr_max_drawdown": float((np.maximum.accumulate(cum) - cum).max()),
        "max_feature_exposure": 0.21,
    }


def _eval(client, run_id: str, rng: np.random.Generator, shift: float, logged: Logged, eras: int) -> None:
    """What the `numerai` evaluator logs: summary metrics and per_era_corr.csv."""
    corr = rng.normal(shift, 0.02, eras)
    per_era = pd.DataFrame({"era": [f"{i:04d}" for i in range(1, eras + 1)], "target": corr})
    _log_csv(client, run_id, per_era, "numerai_eval/per_era_corr.csv")
    metrics = _eval_metrics(corr)
    # the evaluator's diagnostics (issue 14), from a stream of their own: the rest is unchanged
    d = np.random.default_rng(zlib.crc32(run_id.encode()))
    diag = pd.DataFrame({"era": per_era["era"], "corr": corr, "mmc": d.normal(shift / 3, 0.01, eras),
                         "bmc": d.normal(shift / 4, 0.01, eras), "cwmm": d.uniform(0.4, 0.6, eras),
                         "corr_tb200": corr + d.normal(0, 0.01, eras), "fnc": corr / 2,
                         "churn": d.uniform(0.05, 0.2, eras)})
    diag["payout"] = (0.5 * diag["corr"] + 2 * diag["mmc"]).clip(-0.05, 0.05)
    _log_csv(client, run_id, diag, "numerai_eval/per_era_diagnostics.csv")
    for name, col in (("mmc_mean", "mmc"), ("bmc_mean", "bmc"), ("cwmm_mean", "cwmm"),
                      ("numerai_corr_tb200_mean", "corr_tb200"),
                      ("fnc_mean", "fnc"), ("churn_mean", "churn"), ("payout_mean", "payout")):
        metrics[name] = float(diag[col].mean())
    for k, v in metrics.items():
        client.log_metric(run_id, k, v)
    logged.per_era[run_id] = per_era
    logged.diagnostics[run_id] = diag
    logged.metrics.setdefault(run_id, {}).update(metrics)


def _start(client, exp_id: str, name: str, family: str, parent: str | None = None) -> str:
    tags = {"numerai.family": family, "mlflow_numerai.version": "0.1.0", "mlflow_numerai.python": "3.11"}
    if parent:
        tags["mlflow.parentRunId"] = parent
    return client.create_run(exp_id, run_name=name, tags=tags).info.run_id


def register(client, name: str, run_id: str) -> int:
    """A registered version of the run's `model` artifact."""
    try:
        client.create_registered_model(name)
    except Exception:
        pass  # already there
    mv = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    return int(mv.version)


def empty_store(tracking_uri: str) -> None:
    """Create the (migrated, empty) MLflow database behind a sqlite `tracking_uri`."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).search_experiments()


def fill_contract_store(tracking_uri: str, *, eras: int = 12, n_members: int = 200, seed: int = 0) -> Logged:
    """Baseline, 2 Keras, a BNN study (3 priors), a VARMAX run, and registered versions in every
    upload state, logged following the contract."""
    from mlflow.tracking import MlflowClient

    from mlflow_numerai.registry import RegistryRecorder, promote
    from mlflow_numerai.registry.states import UploadStateMachine

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rng = np.random.default_rng(seed)
    exp_id = client.create_experiment("numerai-dashboard-test")
    logged = Logged()

    # baseline
    run = logged.baseline = _start(client, exp_id, "baseline-ridge", "baseline")
    _eval(client, run, rng, 0.01, logged, eras)
    _log_text(client, run, "model", "model/MLmodel")
    client.set_terminated(run)

    # streaming keras: per-epoch metrics
    for i, (name, epochs) in enumerate((("keras-a", 4), ("keras-b", 3))):
        run = _start(client, exp_id, name, "keras_stream")
        hist = {
            "loss": list(0.06 - 0.005 * np.arange(epochs) - 0.001 * i),
            "val_loss": list(0.062 - 0.003 * np.arange(epochs)),
            "val_corr_mean": list(0.01 + 0.004 * np.arange(epochs) * (1 if i == 0 else -0.5)),
            "val_corr_sharpe": list(0.4 + 0.1 * np.arange(epochs)),
            "rows_per_sec": list(1_000_000 + 10_000 * np.arange(epochs) + 500_000 * i),
        }
        for key, values in hist.items():
            for step, v in enumerate(values):
                client.log_metric(run, key, float(v), step=step)
        _eval(client, run, rng, 0.015, logged, eras)
        _log_text(client, run, "model", "model/MLmodel")
        client.set_terminated(run)
        logged.keras.append(run)
        logged.keras_history[run] = hist

    # Bayesian NN study: parent + one nested run per prior
    study = logged.study = _start(client, exp_id, "bnn-study", "bnn_study")
    aucs = {"uniform": 0.468, "normal": 0.601, "laplace": 0.625}
    dists = {}
    for j, prior in enumerate(PRIORS):
        # what `train bnn-study` writes: nested runs of its own family, tagged bnn.*
        run = _start(client, exp_id, f"{prior}/128-64-64", "bnn_study", parent=study)
        for k, v in {"bnn.model": f"{prior}/128-64-64", "bnn.prior": prior, "bnn.hidden": "128-64-64"}.items():
            client.set_tag(run, k, v)
        for k, v in {"model": "bayes_nn", "prior": prior, "hidden": "128-64-64", "target_model": "single"}.items():
            client.log_param(run, k, v)
        members = pd.DataFrame({"corr_mean": rng.normal(0.012 + 0.001 * j, 0.003, n_members),
                                "sharpe": rng.normal(0.5, 0.1, n_members)})
        ens_corr = float(members["corr_mean"].mean() + 0.004)
        ens_sharpe = float(members["sharpe"].mean() + 0.05)
        era_corr = rng.normal(ens_corr, 0.02, eras)
        per_era = pd.DataFrame({
            "era": [f"{i:04d}" for i in range(1, eras + 1)],
            "ensemble_corr": era_corr,
            "uncertainty": rng.uniform(0.1, 0.2, eras),
            "burn": era_corr < 0,
        })
        metrics = {
            "ensemble_corr_mean": ens_corr,
            "ensemble_sharpe": ens_sharpe,
            "member_corr_mean_mean": float(members["corr_mean"].mean()),
            "member_corr_mean_std": float(members["corr_mean"].std()),
            "member_sharpe_mean": float(members["sharpe"].mean()),
            "member_sharpe_std": float(members["sharpe"].std()),
            "burn_auc": aucs[prior],
            "n_burn_eras": float(per_era["burn"].sum()),
        }
        for k, v in metrics.items():
            client.log_metric(run, k, v)
        fpr = np.linspace(0, 1, 6)
        _log_csv(client, run, members.rename_axis("sample"), "bnn/members.csv", index=True)
        _log_csv(client, run, per_era.set_index("era"), "bnn/per_era.csv", index=True)
        _log_csv(client, run, pd.DataFrame({"fpr": fpr, "tpr": np.sqrt(fpr)}), "bnn/roc.csv", index=True)
        _log_text(client, run, "model", "model/MLmodel")
        client.set_terminated(run)
        logged.bnn[prior] = run
        logged.metrics[run] = metrics
        logged.members[run] = members
        logged.bnn_per_era[run] = per_era
        dists[prior] = (metrics["member_corr_mean_mean"], metrics["member_corr_mean_std"])
    # the study's non-Bayesian baseline: ensemble metrics only (its "members" are one net)
    run = logged.study_baseline = _start(client, exp_id, "baseline/128-64-64", "bnn_study", parent=study)
    for k, v in {"bnn.model": "baseline/128-64-64", "bnn.prior": "none", "bnn.hidden": "128-64-64"}.items():
        client.set_tag(run, k, v)
    client.log_param(run, "model", "baseline")
    base_corr = rng.normal(0.01, 0.02, eras)
    client.log_metric(run, "ensemble_corr_mean", float(base_corr.mean()))
    client.log_metric(run, "ensemble_sharpe", float(base_corr.mean() / base_corr.std(ddof=1)))
    _log_csv(client, run, pd.DataFrame({"era": [f"{i:04d}" for i in range(1, eras + 1)], "ensemble_corr": base_corr}),
             "bnn/per_era.csv")
    client.set_terminated(run)
    js = pd.DataFrame(
        [[abs(dists[a][0] - dists[b][0]) * 10 for b in PRIORS] for a in PRIORS],
        index=list(PRIORS),
        columns=list(PRIORS),
    )
    _log_csv(client, study, js, "bnn/js_divergence.csv", index=True)
    client.set_terminated(study)
    logged.js = js

    # VARMAX: parent with the winner's artifacts, candidates nested
    run = logged.varmax = _start(client, exp_id, "varmax-macro", "varmax")
    client.log_param(run, "config.criterion", "aic")
    search = pd.DataFrame({
        "p": [1, 1, 2, 2], "q": [0, 1, 0, 1],
        "aic": [100.5, 98.25, 97.0, 99.75], "bic": [110.0, 109.0, 108.5, 112.0], "hqic": [104.0, 103.0, 102.0, 105.0],
        "test_rmse": [0.9, 0.8, 0.7, 0.85], "fit_seconds": [0.1, 0.2, 0.3, 0.4], "converged": [True, True, True, False],
    })
    for _, r in search.iterrows():
        child = _start(client, exp_id, f"varmax-p{r.p}-q{r.q}", "varmax", parent=run)
        client.log_metric(child, "aic", float(r.aic))
        client.set_terminated(child)
    periods = [f"2008Q{q}" for q in range(1, 5)] + [f"2009Q{q}" for q in range(1, 5)]
    forecast = pd.DataFrame({"period": periods})
    for var, level in (("realgdp", 13000.0), ("realcons", 9000.0)):
        actual = level + rng.normal(0, 50, len(periods)).cumsum()
        fc = actual + rng.normal(0, 30, len(periods))
        forecast[f"{var}_actual"] = actual
        forecast[f"{var}_forecast"] = fc
        forecast[f"{var}_lower"] = fc - 60
        forecast[f"{var}_upper"] = fc + 60
    _log_csv(client, run, search, "varmax/order_search.csv")
    _log_csv(client, run, forecast, "varmax/test_forecast.csv")
    _log_text(client, run, "model", "model/MLmodel")
    client.set_terminated(run)
    logged.order_search, logged.forecast = search, forecast

    # Registry: versions in every upload state, recorded through the project's registry API
    def validation_run(name: str, version: int, log: str, corr: float | None) -> str:
        run = client.create_run(exp_id, run_name=f"validate models:/{name}/{version}",
                                tags={"numerai.validation.model_name": name,
                                      "numerai.validation.model_version": str(version)}).info.run_id
        _log_text(client, run, log, "numerai_upload/child_live.log")
        if corr is not None:
            client.log_metric(run, "validation_corr_mean", corr)
        client.set_terminated(run)
        return run

    specs = [
        ("numerai-baseline", logged.baseline, [("Running", None), ("Validating", None), ("Success", None)],
         "rows=120 ok\n", 0.0123),
        ("numerai-baseline", logged.baseline, [("Running", None), ("Failed", "invalid_output:range")],
         "check range: 7 values above 1.0 (max 1.5)\n", None),
        ("numerai-bnn", logged.bnn["laplace"], [("Running", None), ("Error", "validator")], None, None),
        ("numerai-bnn", logged.bnn["normal"], [("Running", None)], None, None),
        ("numerai-keras", logged.keras[0], None, None, None),
    ]
    for name, run_id, states, log, corr in specs:
        version = register(client, name, run_id)
        info = {"run_id": run_id, "state": None, "reason": None, "history": [], "validation_run": None, "corr": corr}
        if states is not None:
            recorder = RegistryRecorder(name, version, client)
            machine = UploadStateMachine(recorder)
            if log is not None:
                info["validation_run"] = validation_run(name, version, log, corr)
                recorder.link_run(info["validation_run"])
            machine.to("Pending")
            for state, reason in states:
                machine.to(state, reason, f"{state} message" if reason else "")
            info.update(state=machine.state, reason=machine.reason, history=machine.history_dicts())
        logged.versions[(name, version)] = info
    promote("numerai-baseline", 1, "champion", client=client)
    return logged


# ---------------------------------------------------------------------------------------------
# The same store from the project's own entry points, at small size


@dataclass
class RealRuns:
    """Run ids and registered versions made by the real entry points."""

    runs: dict[str, list[str]] = field(default_factory=dict)  # family -> run ids
    versions: dict[tuple[str, int], str] = field(default_factory=dict)  # (name, version) -> state
    failed: tuple[str, int] | None = None


def _invoke(command, args: list[str]) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(command, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"{command.name} {args} exited {result.exit_code}:\n{result.output[-3000:]}")


def fill_real_store(
    tracking_uri: str,
    data_dir: str | Path,
    *,
    families: tuple[str, ...] = ("baseline", "keras_stream", "varmax", "bnn_study"),
) -> RealRuns:
    """Runs `mlflow-numerai train <family>` at small size on `data_dir`, validates the baseline
    version in the sandbox (Success), registers and validates a broken predict (Failed), and
    promotes the good one: everything through the project's own commands and APIs."""
    import importlib

    from mlflow.tracking import MlflowClient

    from mlflow_numerai.cli import TRAIN_COMMANDS
    from mlflow_numerai.registry import promote
    from mlflow_numerai.tracking import ensure_tracking_uri
    from mlflow_numerai.uploads.validate import validate

    def command(name: str):
        module, attr = TRAIN_COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    ensure_tracking_uri(tracking_uri)
    data_dir = str(data_dir)
    common = ["--data-dir", data_dir, "--tracking-uri", tracking_uri]
    if "baseline" in families:
        _invoke(command("baseline"), common)
    if "keras_stream" in families:
        _invoke(command("keras-stream"), [*common, "--epochs", "2", "--hidden", "16,8", "--batch-size", "512",
                                          "--shuffle-window", "2048", "--loader-threads", "1"])
    if "varmax" in families:
        _invoke(command("varmax"), ["--tracking-uri", tracking_uri, "--max-p", "2", "--max-q", "0", "--no-validate",
                                    "--no-progress"])
    if "bnn_study" in families:
        _invoke(command("bnn-study"), [*common, "--priors", "normal,laplace", "--architectures", "none",
                                       "--epochs", "2", "--n-samples", "40", "--batch-size", "1024", "--threads", "1"])

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    real = RealRuns()
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiment_ids, "tags.`numerai.family` != ''"):
        real.runs.setdefault(run.data.tags["numerai.family"], []).append(run.info.run_id)

    live = Path(data_dir) / "live.parquet"
    report = validate("models:/numerai-baseline/1", live=live)
    real.versions[("numerai-baseline", 1)] = report.status
    promote("numerai-baseline", 1, "champion", client=client)

    # the same model declared for Numerai's Python 3.12 image: Failed, reason python_mismatch
    source = client.get_model_version("numerai-baseline", "1").source
    first_run_id = client.get_model_version("numerai-baseline", "1").run_id
    mv = client.create_model_version("numerai-baseline", source, run_id=first_run_id)
    report = validate(f"models:/numerai-baseline/{mv.version}", live=live, python="3.12")
    real.versions[("numerai-baseline", int(mv.version))] = report.status
    real.failed = ("numerai-baseline", int(mv.version))
    return real
