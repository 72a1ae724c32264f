"""The outcome of one upload validation: `ValidationReport` (what `--json` prints), how a child
run folds into it, the per-era diagnostics on validation data, and the validation run logged to
MLflow (report, upload history, child logs, predictions and the per-era plot as artifacts).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mlflow_numerai.conventions import UPLOAD_REASON_TAG
from mlflow_numerai.registry.states import ERROR, EXIT_CODES
from mlflow_numerai.sandbox.runner import SandboxOutcome
from mlflow_numerai.scoring import per_era_numerai_corr, score_summary


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


def absorb(report: ValidationReport, outcome: SandboxOutcome, stage: str = "live") -> None:
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
    if "target" not in valid.columns:
        return {"per_era": {}, "note": "the validation data has no 'target' column: no scores"}
    preds = written.set_index("id")[["prediction"]].astype(float)
    targets = valid["target"].astype(float)
    scored = targets.dropna().index.intersection(preds.index)
    per_era = per_era_numerai_corr(preds.loc[scored], targets.loc[scored], valid["era"].loc[scored],
                                   on_constant="nan")["prediction"]
    summary = score_summary(per_era.to_frame("corr")).loc["corr"]

    def clean(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    return {
        "corr_mean": clean(summary["mean"]),
        "corr_std": clean(summary["std"]),
        "corr_sharpe": clean(summary["sharpe"]),
        "max_drawdown": clean(summary["max_drawdown"]),
        "n_eras": int(summary["n_eras"]),
        "per_era": {str(k): clean(v) for k, v in per_era.items()},
    }


def log_validation_run(client, run_id: str, report: ValidationReport, workdir: Path) -> None:
    """Log the report, history, child log, predictions and diagnostics to run `run_id`; end the run."""
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
        client.set_tag(run_id, UPLOAD_REASON_TAG, report.reason or "")
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

    values = per_era.fillna(0)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    ax1.bar(range(len(per_era)), values.to_numpy(), color=["tab:green" if v >= 0 else "tab:red" for v in values])
    ax1.set_ylabel("corr per era")
    ax2.plot(range(len(per_era)), values.cumsum().to_numpy())
    ax2.set_ylabel("cumulative corr")
    ax2.set_xlabel("era")
    step = max(1, len(per_era) // 12)
    ax2.set_xticks(range(0, len(per_era), step), [str(e) for e in per_era.index[::step]], rotation=45)
    fig.suptitle("Sandbox diagnostics on the validation data")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
