"""The local upload flow: resolve a submission, run it in the sandbox, check it, record its states.

`validate(target, ...)` is the Python API behind `mlflow-numerai validate` and the `numerai`
deployments target. TARGET is a model URI (runs:/, models:/name/version, models:/name@alias, any
MLflow model URI) or a path to a `predict.pkl` (`uploads.submission`). For a registered model
version every upload transition is written onto the version as it happens (`registry`), and the
child's log, the predictions and the diagnostics go to a validation run linked to the version
(`uploads.report`). This module owns the stages: Python and image checks, the sandboxed runs on
live (and validation) data, the output checks, and the state each stage ends in.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path

from mlflow_numerai.conventions import (
    IMAGE_ENV,
    UPLOAD_STATE_TAG,
    VALIDATION_MODEL_NAME_TAG,
    VALIDATION_MODEL_VERSION_TAG,
    VALIDATION_TARGET_TAG,
)
from mlflow_numerai.registry import RegistryRecorder, correct_lost, holder_record
from mlflow_numerai.registry.states import (
    ERROR,
    FAILED,
    LIVE,
    PENDING,
    RUNNING,
    SUCCESS,
    VALIDATING,
    UploadStateMachine,
)
from mlflow_numerai.sandbox import checks
from mlflow_numerai.sandbox.runner import SandboxLimits, SandboxOutcome, network_method, run_pickle
from mlflow_numerai.tracking import get_or_create_experiment
from mlflow_numerai.uploads import images
from mlflow_numerai.uploads.report import ValidationReport, absorb, diagnostics, log_validation_run
from mlflow_numerai.uploads.submission import (
    Submission,
    ValidationArgumentError,
    default_benchmarks,
    default_live_path,
    features_only,
    forecast_input,
    python_of_this,
    read_frame,
    resolve_submission,
)

VALIDATION_EXPERIMENT = "numerai-uploads"
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
IMAGE_CHOICES = (*images.IMAGES, "none")
_MODULE_NOT_FOUND = re.compile(r"No module named '([^']+)'")


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
        submission = resolve_submission(target, workdir)
        profile = profile or submission.metadata.get("numerai_profile") or "numerai"
        live_path = Path(live) if live is not None else None
        if profile == "numerai":
            live_path = live_path or default_live_path()
            live_frame = read_frame(live_path, "live")
        else:
            live_frame = forecast_input(submission, live_path)
        bench_path = Path(benchmarks) if benchmarks else (default_benchmarks(live_path) if live_path else None)
        bench_frame = read_frame(bench_path, "benchmarks") if bench_path else None
        valid_frame = read_frame(Path(validation), "validation") if validation else None
        if valid_frame is not None and "era" not in valid_frame.columns:
            raise ValidationArgumentError(f"--validation {str(validation)!r} has no 'era' column")
        return _run_flow(submission, profile, live_frame, bench_frame, valid_frame, limits, python,
                         pickle_python, workdir, experiment,
                         submission.model_uri is not None if log_run is None else log_run, image)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class _Flow:
    """One validation: the state machine, its recorder and the validation run."""

    def __init__(self, submission: Submission, experiment: str, log_run: bool, phase_limits: dict[str, float]):
        self.submission = submission
        self.phase_limits = phase_limits
        name, version = submission.model_name, submission.model_version
        self.recorder = RegistryRecorder(name, version) if version else None
        if self.recorder is not None:  # a state a dead validator left behind is corrected first
            correct_lost(name, version, self.recorder.client)
        self.machine = UploadStateMachine(self._record)
        self.run_id = None
        self.client = None
        if log_run:
            from mlflow import MlflowClient

            self.client = MlflowClient()
            exp_id = get_or_create_experiment(experiment, self.client)
            tags = {VALIDATION_TARGET_TAG: submission.spec, "mlflow.runName": f"validate {submission.spec}"[:250]}
            if submission.model_version:
                tags.update({VALIDATION_MODEL_NAME_TAG: submission.model_name,
                             VALIDATION_MODEL_VERSION_TAG: submission.model_version})
            self.run_id = self.client.create_run(exp_id, tags=tags).info.run_id
            if self.recorder:
                self.recorder.link_run(self.run_id)

    def _record(self, transition, history) -> None:
        if self.recorder is not None:
            if transition.state in LIVE:  # who holds it, before the state, so readers see both
                self.recorder.hold(holder_record(self.phase_limits[transition.state]))
            self.recorder(transition, history)
        if self.client is not None:
            self.client.set_tag(self.run_id, UPLOAD_STATE_TAG, transition.state)

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


def _run_flow(submission, profile, live, bench, valid, limits, python, pickle_python, workdir, experiment, log_run,
              image=None):
    flow = _Flow(submission, experiment, log_run, phase_limits(limits, image, valid is not None))
    report = ValidationReport(
        status=PENDING, reason=None, message="", target=submission.spec, model_name=submission.model_name,
        model_version=submission.model_version, profile=profile, python={}, limits=asdict(limits),
        validation_run_id=flow.run_id,
    )
    flow.machine.to(PENDING)
    try:
        _stages(flow, report, submission, profile, live, bench, valid, limits, python, pickle_python, workdir, image)
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
        log_validation_run(flow.client, flow.run_id, report, workdir)
    return report


def _finish(flow: _Flow, report: ValidationReport, state: str, reason: str | None, message: str) -> None:
    report.status, report.reason, report.message = state, reason, message
    flow.machine.to(state, reason, message)


def _stages(flow, report, submission, profile, live, bench, valid, limits, python, pickle_python, workdir,
            image=None):
    report.network_isolation = network_method(limits.network)
    made_with = pickle_python or submission.metadata.get("python_version") or python_of_this()
    if image is None:  # Numerai runs a pickle in the image of its Python
        image = images.image_of_python(python or made_with)
    if image != "none":
        runtime = images.python_of_image(image)
    else:
        runtime = python or python_of_this()
    report.python = {"pickle": made_with, "runtime": runtime, "interpreter": python_of_this()}
    if made_with != runtime:
        _finish(flow, report, FAILED, "python_mismatch",
                f"the pickle was made with Python {made_with} but the runtime is Python {runtime}")
        return
    env = None
    if image != "none":
        env = _ImageRun(image, submission.pickle_path, report)
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
        interpreter = sys.executable if runtime == python_of_this() else shutil.which(f"python{runtime}")
    if interpreter is None:
        _finish(flow, report, ERROR, "runtime", f"no Python {runtime} interpreter here to run the pickle in")
        return
    flow.machine.to(RUNNING)
    outcome = run_pickle(submission.pickle_path, live, benchmarks=bench, limits=limits, profile=profile,
                         interpreter=interpreter, output_dir=workdir / "live")
    if env is not None and env.retry_for(outcome):
        outcome = run_pickle(submission.pickle_path, live, benchmarks=bench, limits=limits, profile=profile,
                             interpreter=interpreter, output_dir=workdir / "live")
    absorb(report, outcome)
    if outcome.status != "ok":
        _finish(flow, report, FAILED if outcome.status == "failed" else ERROR, outcome.reason,
                f"live: {outcome.message}")
        return
    valid_outcome = None
    if valid is not None:
        valid_outcome = run_pickle(submission.pickle_path, features_only(valid), benchmarks=None, limits=limits,
                                   profile=profile, interpreter=interpreter, output_dir=workdir / "validation")
        if env is not None and env.retry_for(valid_outcome):
            valid_outcome = run_pickle(submission.pickle_path, features_only(valid), benchmarks=None, limits=limits,
                                       profile=profile, interpreter=interpreter, output_dir=workdir / "validation")
        absorb(report, valid_outcome, stage="validation")
        if valid_outcome.status != "ok":
            _finish(flow, report, FAILED if valid_outcome.status == "failed" else ERROR, valid_outcome.reason,
                    f"validation: {valid_outcome.message}")
            return
    flow.machine.to(VALIDATING)
    written = checks.read_output_csv(outcome.predictions_csv)
    if profile == "forecast":
        failures = checks.check_forecast(written, submission.metadata.get("output_contract") or {}, request=live)
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


