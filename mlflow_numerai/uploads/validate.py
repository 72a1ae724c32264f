"""The local upload flow: resolve a target, run it in the sandbox, check it, record its states.

`validate(target, ...)` is the Python API behind `mlflow-numerai validate` and the `numerai`
deployments target. TARGET is a model URI (runs:/, models:/name/version, models:/name@alias, any
MLflow model URI) or a path to a `predict.pkl`. For a registered model version every upload
transition is written onto the version as it happens, and the child's log, the predictions and
the diagnostics go to a validation run linked to the version.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mlflow_numerai.sandbox import checks
from mlflow_numerai.sandbox.runner import SandboxLimits, SandboxOutcome, run_pickle
from mlflow_numerai.upload_states import (
    ERROR,
    EXIT_CODES,
    FAILED,
    LIVE,
    PENDING,
    RUNNING,
    SUCCESS,
    VALIDATING,
    UploadStateMachine,
)
from mlflow_numerai.uploads import images

VALIDATION_EXPERIMENT = "numerai-uploads"
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
IMAGE_ENV = "MLFLOW_NUMERAI_IMAGE"  # the default of --image (e.g. `none` on a machine without PyPI)
IMAGE_CHOICES = (*images.IMAGES, "none")
_MODULE_NOT_FOUND = __import__("re").compile(r"No module named '([^']+)'")


class ValidationArgumentError(ValueError):
    """Bad arguments to validate (exit code 2): nothing was run and nothing recorded."""


@dataclass
class Target:
    """What is validated: a local predict.pkl, plus the registry version and metadata when known."""

    spec: str
    pickle_path: Path
    model_uri: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    metadata: dict = field(default_factory=dict)
    input_example: pd.DataFrame | None = None


@dataclass
class ValidationReport:
    """The outcome of one upload validation (what `--json` prints)."""

    status: str
    reason: str | None
    message: str
    target: str
    model_name: str | None
    model_version: str | None
    profile: str
    python: dict
    peak_memory_bytes: int = 0
    peak_rss_bytes: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    network_isolation: str | None = None
    memory_enforcement: str | None = None
    isolation: str | None = None  # bwrap | namespaces | guard (the last two partial)
    warnings: list[str] = field(default_factory=list)
    limits: dict = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    stage: str | None = None
    predictions: dict | None = None
    diagnostics: dict | None = None
    validation_run_id: str | None = None
    stragglers_killed: int = 0
    network_attempts: list[str] = field(default_factory=list)
    log_tail: str = ""
    image: dict | None = None  # Numerai's runtime image: name, source of the pins, pins used, env

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 2)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- targets
def _python_of_this() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def resolve_target(spec: str, workdir: Path) -> Target:
    """A local predict.pkl for `spec` (a path or a model URI); ValidationArgumentError if not found."""
    path = Path(spec).expanduser()
    if "://" not in spec and not spec.startswith(("models:/", "runs:/")):
        if path.is_dir() and (path / "MLmodel").exists():
            return _model_target(str(path.resolve()), workdir)
        if not path.is_file():
            raise ValidationArgumentError(f"TARGET {spec!r} is neither an existing predict.pkl nor a model URI")
        return Target(spec, path.resolve())
    return _model_target(spec, workdir)


@contextlib.contextmanager
def _quiet_downloads():
    """No artifact-download progress bars (they would interleave with the report)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _model_target(uri: str, workdir: Path) -> Target:
    from mlflow_numerai.packaging import PackagingError, download_predict_pkl
    from mlflow_numerai.registry import RegistryError, resolve_model_version

    try:
        resolved = resolve_model_version(uri)
    except RegistryError as exc:
        raise ValidationArgumentError(str(exc)) from exc
    with _quiet_downloads():
        try:
            pkl = download_predict_pkl(uri, workdir)
        except PackagingError as exc:
            raise ValidationArgumentError(str(exc)) from exc
        metadata, example = _model_metadata(uri)
    name, version = resolved if resolved else (None, None)
    return Target(uri, pkl, uri, name, version, metadata, example)


def _model_metadata(uri: str) -> tuple[dict, pd.DataFrame | None]:
    """The MLmodel metadata (numerai_profile, python_version, output_contract, ...) and input example."""
    import mlflow

    info = mlflow.models.get_model_info(uri)
    metadata = dict(info.metadata or {})
    example = None
    if metadata.get("numerai_profile") == "forecast":
        try:
            model = mlflow.models.Model.load(uri)
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(uri, dst_path=tmp)
                example = model.load_input_example(local)
        except Exception:
            example = None
        if example is not None and not isinstance(example, pd.DataFrame):
            example = pd.DataFrame(example)
    return metadata, example


# ----------------------------------------------------------------------------- inputs
def default_live_path() -> Path:
    """live.parquet of the default data (the synthetic set, made on first use)."""
    from mlflow_numerai.data.io import resolve_data_dir

    return resolve_data_dir("synthetic") / "live.parquet"


def _read_frame(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise ValidationArgumentError(f"--{what} {str(path)!r} does not exist")
    try:
        frame = pd.read_parquet(path) if path.suffix != ".csv" else pd.read_csv(path)
    except Exception as exc:
        raise ValidationArgumentError(f"--{what} {str(path)!r} is not a readable parquet/CSV file: {exc}") from exc
    if "id" in frame.columns:
        frame = frame.set_index("id")
    frame.index = frame.index.astype(str)
    frame.index.name = "id"
    if len(frame) == 0:
        raise ValidationArgumentError(f"--{what} {str(path)!r} has no rows")
    return frame


def _features_only(frame: pd.DataFrame) -> pd.DataFrame:
    """What the model sees: everything but the targets (as Numerai's validation features)."""
    return frame[[c for c in frame.columns if not str(c).startswith("target")]]


def _default_benchmarks(live_path: Path) -> Path | None:
    candidate = live_path.with_name("live_benchmark_models.parquet")
    return candidate if live_path.name == "live.parquet" and candidate.exists() else None


# ----------------------------------------------------------------------------- the flow
def validate(
    target: str | os.PathLike,
    *,
    live: str | os.PathLike | None = None,
    benchmarks: str | os.PathLike | None = None,
    validation: str | os.PathLike | None = None,
    limits: SandboxLimits | None = None,
    python: str | None = None,
    pickle_python: str | None = None,
    profile: str | None = None,
    log_run: bool | None = None,
    experiment: str = VALIDATION_EXPERIMENT,
    image: str | None = None,
) -> ValidationReport:
    """Run the whole upload flow for `target` and return its report.

    `python`: Numerai's runtime (default: this interpreter's major.minor); `pickle_python`: the
    version the pickle was made with (default: the model's recorded one, else this interpreter).
    `log_run`: log a validation run (default: when the target is a model URI).
    `image`: Numerai's runtime image to run the pickle in (`py3.10`..`py3.13`: a cached environment
    with its exact pins), or `none` (this environment); default `MLFLOW_NUMERAI_IMAGE`, else the
    image of `python`, else of the pickle's Python.
    Raises ValidationArgumentError for bad arguments (before anything is recorded).
    """
    limits = limits or SandboxLimits()
    target = str(target)
    image = image or os.environ.get(IMAGE_ENV) or None
    if image is not None and image not in IMAGE_CHOICES:
        raise ValidationArgumentError(f"--image must be one of {list(IMAGE_CHOICES)}, got {image!r}")
    if image not in (None, "none") and python is not None and images.python_of_image(image) != python:
        raise ValidationArgumentError(f"--python {python} contradicts --image {image}")
    for label, value in (("--python", python), ("--pickle-python", pickle_python)):
        if value is not None and value not in SUPPORTED_PYTHONS:
            raise ValidationArgumentError(f"{label} must be one of {list(SUPPORTED_PYTHONS)}, got {value!r}")
    if profile not in (None, "numerai", "forecast"):
        raise ValidationArgumentError(f"profile must be 'numerai' or 'forecast', got {profile!r}")
    workdir = Path(tempfile.mkdtemp(prefix="numerai-validate-"))
    try:
        resolved = resolve_target(target, workdir)
        profile = profile or resolved.metadata.get("numerai_profile") or "numerai"
        live_path = Path(live) if live is not None else None
        if profile == "numerai":
            live_path = live_path or default_live_path()
            live_frame = _read_frame(live_path, "live")
        else:
            live_frame = _forecast_input(resolved, live_path)
        bench_path = Path(benchmarks) if benchmarks else (_default_benchmarks(live_path) if live_path else None)
        bench_frame = _read_frame(bench_path, "benchmarks") if bench_path else None
        valid_frame = _read_frame(Path(validation), "validation") if validation else None
        if valid_frame is not None and "era" not in valid_frame.columns:
            raise ValidationArgumentError(f"--validation {str(validation)!r} has no 'era' column")
        return _run_flow(resolved, profile, live_frame, bench_frame, valid_frame, limits, python,
                         pickle_python, workdir, experiment,
                         resolved.model_uri is not None if log_run is None else log_run, image)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _forecast_input(target: Target, live_path: Path | None) -> pd.DataFrame:
    if live_path is not None:
        return _read_frame(live_path, "live")
    if target.input_example is None:
        raise ValidationArgumentError(
            f"{target.spec!r} has the forecast profile but no input example; pass --live with one"
        )
    return target.input_example


class _Flow:
    """One validation: the state machine, its recorder and the validation run."""

    def __init__(self, target: Target, experiment: str, log_run: bool, phase_limits: dict[str, float]):
        from mlflow_numerai.registry import RegistryRecorder, correct_lost

        self.target = target
        self.phase_limits = phase_limits
        self.recorder = RegistryRecorder(target.model_name, target.model_version) if target.model_version else None
        if self.recorder is not None:  # a state a dead validator left behind is corrected first
            correct_lost(target.model_name, target.model_version, self.recorder.client)
        self.machine = UploadStateMachine(self._record)
        self.run_id = None
        self.client = None
        if log_run:
            from mlflow import MlflowClient

            from mlflow_numerai.tracking import get_or_create_experiment

            self.client = MlflowClient()
            exp_id = get_or_create_experiment(experiment, self.client)
            tags = {"numerai.validation.target": target.spec, "mlflow.runName": f"validate {target.spec}"[:250]}
            if target.model_version:
                tags.update({"numerai.validation.model_name": target.model_name,
                             "numerai.validation.model_version": target.model_version})
            self.run_id = self.client.create_run(exp_id, tags=tags).info.run_id
            if self.recorder:
                self.recorder.link_run(self.run_id)

    def _record(self, transition, history) -> None:
        if self.recorder is not None:
            if transition.state in LIVE:  # who holds it, before the state, so readers see both
                from mlflow_numerai.registry import holder_record

                self.recorder.hold(holder_record(self.phase_limits[transition.state]))
            self.recorder(transition, history)
        if self.client is not None:
            self.client.set_tag(self.run_id, "numerai.upload_state", transition.state)

    def full_history(self) -> list[dict]:
        if self.recorder is not None:
            return self.recorder.full_history(self.machine.history)
        return self.machine.history_dicts()


PHASE_MARGIN = 120.0  # seconds a phase may take besides its child runs and installs


def phase_limits(limits: SandboxLimits, image: str | None, with_validation: bool) -> dict[str, float]:
    """The most each live state may last (seconds): what a holder records, so a reader can tell a
    dead validator from a slow one. With an image: the build, and one install + rerun per stage."""
    runs = 2 if with_validation else 1
    install = images.INSTALL_TIMEOUT if image != "none" else 0.0
    return {
        PENDING: PHASE_MARGIN + 2 * install,
        RUNNING: PHASE_MARGIN + runs * limits.timeout_seconds * (2 if install else 1) + runs * install,
        VALIDATING: PHASE_MARGIN + 180.0,
    }


def _run_flow(target, profile, live, bench, valid, limits, python, pickle_python, workdir, experiment, log_run,
              image=None):
    flow = _Flow(target, experiment, log_run, phase_limits(limits, image, valid is not None))
    report = ValidationReport(
        status=PENDING, reason=None, message="", target=target.spec, model_name=target.model_name,
        model_version=target.model_version, profile=profile, python={}, limits=asdict(limits),
        validation_run_id=flow.run_id,
    )
    flow.machine.to(PENDING)
    try:
        _stages(flow, report, target, profile, live, bench, valid, limits, python, pickle_python, workdir, image)
    except Exception as exc:
        report.status, report.reason = ERROR, "validator"
        report.message = f"the validator failed: {exc!r}"
        report.log_tail = (report.log_tail + "\n" + traceback.format_exc())[-20000:]
        if not flow.machine.final:
            flow.machine.to(ERROR, "validator", report.message)
    except BaseException:  # Ctrl-C / SystemExit: record it, then let it through
        if not flow.machine.final:
            flow.machine.to(ERROR, "interrupted", "the validation was interrupted")
        if flow.client is not None:
            flow.client.set_terminated(flow.run_id, "KILLED")
        raise
    report.history = flow.full_history()
    if flow.client is not None:
        _log_validation_run(flow, report, workdir)
    return report


def _finish(flow: _Flow, report: ValidationReport, state: str, reason: str | None, message: str) -> None:
    report.status, report.reason, report.message = state, reason, message
    flow.machine.to(state, reason, message)


def _stages(flow, report, target, profile, live, bench, valid, limits, python, pickle_python, workdir, image=None):
    from mlflow_numerai.sandbox.runner import network_method

    report.network_isolation = network_method(limits.network)
    made_with = pickle_python or target.metadata.get("python_version") or _python_of_this()
    if image is None:  # Numerai runs a pickle in the image of its Python
        image = images.image_of_python(python or made_with)
    if image != "none":
        runtime = images.python_of_image(image)
    else:
        runtime = python or _python_of_this()
    report.python = {"pickle": made_with, "runtime": runtime, "interpreter": _python_of_this()}
    if made_with != runtime:
        _finish(flow, report, FAILED, "python_mismatch",
                f"the pickle was made with Python {made_with} but the runtime is Python {runtime}")
        return
    env = None
    if image != "none":
        env = _ImageRun(image, target.pickle_path, report)
        missing = env.plan.missing
        if missing:
            _finish(flow, report, FAILED, "import",
                    f"Import error reading pickle: it imports {', '.join(repr(m) for m in missing)}, which "
                    f"Numerai's {image} image does not have (no pinned distribution provides it)")
            return
        try:
            interpreter = env.ensure()
        except images.ImageError as exc:
            _finish(flow, report, ERROR, "runtime", f"cannot make Numerai's {image} environment: {exc}")
            return
        report.python["interpreter"] = runtime
    else:
        interpreter = sys.executable if runtime == _python_of_this() else shutil.which(f"python{runtime}")
    if interpreter is None:
        _finish(flow, report, ERROR, "runtime", f"no Python {runtime} interpreter here to run the pickle in")
        return
    flow.machine.to(RUNNING)
    outcome = run_pickle(target.pickle_path, live, benchmarks=bench, limits=limits, profile=profile,
                         interpreter=interpreter, output_dir=workdir / "live")
    if env is not None and env.retry_for(outcome):
        outcome = run_pickle(target.pickle_path, live, benchmarks=bench, limits=limits, profile=profile,
                             interpreter=interpreter, output_dir=workdir / "live")
    _absorb(report, outcome)
    if outcome.status != "ok":
        _finish(flow, report, FAILED if outcome.status == "failed" else ERROR, outcome.reason,
                f"live: {outcome.message}")
        return
    valid_outcome = None
    if valid is not None:
        valid_outcome = run_pickle(target.pickle_path, _features_only(valid), benchmarks=None, limits=limits,
                                   profile=profile, interpreter=interpreter, output_dir=workdir / "validation")
        if env is not None and env.retry_for(valid_outcome):
            valid_outcome = run_pickle(target.pickle_path, _features_only(valid), benchmarks=None, limits=limits,
                                       profile=profile, interpreter=interpreter, output_dir=workdir / "validation")
        _absorb(report, valid_outcome, stage="validation")
        if valid_outcome.status != "ok":
            _finish(flow, report, FAILED if valid_outcome.status == "failed" else ERROR, valid_outcome.reason,
                    f"validation: {valid_outcome.message}")
            return
    flow.machine.to(VALIDATING)
    written = checks.read_output_csv(outcome.predictions_csv)
    if profile == "forecast":
        failures = checks.check_forecast(written, target.metadata.get("output_contract") or {}, request=live)
    else:
        failures = checks.check_submission(written, live.index)
        if not failures:
            report.predictions = checks.summary_stats(written["prediction"])
    if not failures and valid_outcome is not None:
        valid_written = checks.read_output_csv(valid_outcome.predictions_csv)
        failures = [checks.CheckFailure(f.check, f"validation: {f.message}")
                    for f in checks.check_submission(valid_written, valid.index)]
        if not failures:
            report.diagnostics = diagnostics(valid_written, valid)
    report.checks = [f.to_dict() for f in failures]
    if failures:
        _finish(flow, report, FAILED, failures[0].reason, failures[0].message)
        return
    _finish(flow, report, SUCCESS, None, "the submission passed every check")


class _ImageRun:
    """One validation's use of an image environment: the scan, the build, the one retry."""

    def __init__(self, image: str, pickle_path: Path, report: ValidationReport):
        self.image = image
        self.scan = images.pickle_modules(pickle_path)
        self.plan = images.plan(image, self.scan)
        self.env = images.ImageEnv(image, progress=lambda m: print(f"[validate] {m}", file=sys.stderr, flush=True))
        self.retried = False
        self.report = report
        report.image = {"name": image, "pins_source": images.PROVENANCE, "modules": self.plan.modules,
                        "missing": self.plan.missing, "env": str(self.env.path), "env_built": False,
                        "build_seconds": 0.0, "installed": [], "install_seconds": 0.0, "pins": {},
                        "skipped_pins": [], "installer": images.installer(), "retried_for": None}

    def ensure(self, dists: list[str] | None = None) -> str:
        info = self.env.ensure(self.plan.dists if dists is None else dists)
        image = self.report.image
        image["env_built"] = image["env_built"] or info.built
        image["build_seconds"] = round(image["build_seconds"] + info.build_seconds, 2)
        image["installed"] = sorted(set(image["installed"]) | set(info.installed))
        image["install_seconds"] = round(image["install_seconds"] + info.install_seconds, 2)
        image["pins"], image["skipped_pins"], image["installer"] = info.pins, info.skipped, info.installer
        return info.python

    def retry_for(self, outcome: SandboxOutcome) -> bool:
        """Install the image's distribution of a module the child could not import and say to run
        again (once per validation); False when there is nothing the image could add."""
        if self.retried or outcome.reason != "import":
            return False
        match = _MODULE_NOT_FOUND.search(f"{outcome.message}\n{outcome.traceback or ''}")
        dist = images.dist_of_module(match.group(1), self.image) if match else None
        if dist is None or dist in images.CORE or dist in (self.env.marker() or {}).get("extras", []):
            return False
        self.retried = True
        self.report.image["retried_for"] = match.group(1)
        self.ensure([*self.plan.dists, dist])
        return True


def _absorb(report: ValidationReport, outcome: SandboxOutcome, stage: str = "live") -> None:
    """Fold one child run into the report (peaks and times add up over live + validation)."""
    report.peak_memory_bytes = max(report.peak_memory_bytes, outcome.peak_memory_bytes)
    report.peak_rss_bytes = max(report.peak_rss_bytes, outcome.peak_rss_bytes)
    report.wall_seconds = round(report.wall_seconds + outcome.wall_seconds, 3)
    report.cpu_seconds = round(report.cpu_seconds + outcome.cpu_seconds, 3)
    report.network_isolation = outcome.network_isolation
    report.memory_enforcement = outcome.memory_enforcement
    report.isolation = outcome.isolation
    report.warnings += [w for w in outcome.warnings if w not in report.warnings]
    report.stage = f"{stage}:{outcome.stage}"
    report.checks = outcome.checks
    report.stragglers_killed += outcome.stragglers_killed
    report.network_attempts += outcome.network_attempts
    report.log_tail = f"== {stage} ==\n{outcome.log[-8000:]}"


def diagnostics(written: pd.DataFrame, valid: pd.DataFrame) -> dict:
    """Per-era Numerai corr of the validation predictions against `target`, and its summary."""
    from mlflow_numerai.scoring import per_era_numerai_corr, score_summary

    if "target" not in valid.columns:
        return {"per_era": {}, "note": "the validation data has no 'target' column: no scores"}
    preds = written.set_index("id")[["prediction"]].astype(float)
    targets = valid["target"].astype(float)
    scored = targets.dropna().index.intersection(preds.index)
    per_era = per_era_numerai_corr(preds.loc[scored], targets.loc[scored], valid["era"].loc[scored],
                                   on_constant="nan")["prediction"]
    summary = score_summary(per_era.to_frame("corr")).loc["corr"]
    clean = lambda x: None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)  # noqa: E731
    return {
        "corr_mean": clean(summary["mean"]),
        "corr_std": clean(summary["std"]),
        "corr_sharpe": clean(summary["sharpe"]),
        "max_drawdown": clean(summary["max_drawdown"]),
        "n_eras": int(summary["n_eras"]),
        "per_era": {str(k): clean(v) for k, v in per_era.items()},
    }


def _log_validation_run(flow: _Flow, report: ValidationReport, workdir: Path) -> None:
    """Log the report, history, child log, predictions and diagnostics; end the run."""
    client, run_id = flow.client, flow.run_id
    try:
        metrics = {"wall_seconds": report.wall_seconds, "cpu_seconds": report.cpu_seconds,
                   "peak_memory_bytes": float(report.peak_memory_bytes)}
        diag = report.diagnostics or {}
        for key in ("corr_mean", "corr_std", "corr_sharpe", "max_drawdown"):
            if diag.get(key) is not None:
                metrics[f"validation_{key}"] = diag[key]
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_param(run_id, "limits", json.dumps(report.limits)[:6000])
        client.set_tag(run_id, "numerai.upload_reason", report.reason or "")
        art = workdir / "artifacts"
        (art / "diagnostics").mkdir(parents=True, exist_ok=True)
        (art / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
        (art / "upload_history.json").write_text(json.dumps(report.history, indent=2))
        for stage in ("live", "validation"):
            if (workdir / stage / "child.log").exists():
                shutil.copyfile(workdir / stage / "child.log", art / f"child_{stage}.log")
            if (workdir / stage / "predictions.csv").exists():
                shutil.copyfile(workdir / stage / "predictions.csv", art / f"predictions_{stage}.csv")
        if diag.get("per_era"):
            per_era = pd.Series(diag["per_era"], name="corr").rename_axis("era")
            per_era.to_csv(art / "diagnostics" / "per_era_corr.csv")
            _plot_per_era(per_era, art / "diagnostics" / "per_era_corr.png")
        else:
            (art / "diagnostics").rmdir()
        client.log_artifacts(run_id, str(art), "numerai_upload")
    finally:
        client.set_terminated(run_id, "FAILED" if report.status == ERROR else "FINISHED")


def _plot_per_era(per_era: pd.Series, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    ax1.bar(range(len(per_era)), per_era.fillna(0).to_numpy(), color=["tab:green" if v >= 0 else "tab:red" for v in per_era.fillna(0)])
    ax1.set_ylabel("corr per era")
    ax2.plot(range(len(per_era)), per_era.fillna(0).cumsum().to_numpy())
    ax2.set_ylabel("cumulative corr")
    ax2.set_xlabel("era")
    step = max(1, len(per_era) // 12)
    ax2.set_xticks(range(0, len(per_era), step), [str(e) for e in per_era.index[::step]], rotation=45)
    fig.suptitle("Sandbox diagnostics on the validation data")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
