"""`mlflow-numerai validate`: run a predict.pkl under Numerai's limits and record its upload states.

The command line of the upload flow only: options, exit codes (0 Success, 1 Failed, 2 Error or bad
arguments), the JSON or rich summary; the flow itself is `mlflow_numerai.uploads.validate`.
"""

from __future__ import annotations

import json
import sys

import click

from mlflow_numerai.data.io import DataError, resolve_data_dir
from mlflow_numerai.registry.states import ERROR, FAILED, SUCCESS
from mlflow_numerai.sandbox.runner import SandboxError, SandboxLimits, isolation_method, parse_memory
from mlflow_numerai.tracking import ensure_tracking_uri
from mlflow_numerai.uploads.validate import ValidationArgumentError
from mlflow_numerai.uploads.validate import validate as run_validation


def _memory(ctx, param, value):
    try:
        return parse_memory(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("validate")
@click.argument("target")
@click.option("--live", type=click.Path(dir_okay=False), default=None,
              help="Live features parquet (default: live.parquet of the default synthetic data).")
@click.option("--benchmarks", type=click.Path(dir_okay=False), default=None,
              help="Live benchmark models parquet, for predict(live, benchmarks) (default: next to --live).")
@click.option("--validation", type=click.Path(dir_okay=False), default=None,
              help="Validation parquet (with era and target): also run there and report per-era scores.")
@click.option("--data-dir", default=None,
              help="A Numerai data directory (or 'synthetic'): --live, --benchmarks and --validation "
                   "default to its live.parquet, live_benchmark_models.parquet and validation.parquet.")
@click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True, help="CPUs the model may use.")
@click.option("--memory", default="4GiB", show_default=True, callback=_memory,
              help="Memory cap for the whole process tree, e.g. 4GiB, 512MiB.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600, show_default=True,
              help="Wall-clock limit in seconds.")
@click.option("--python", "python", type=click.Choice(["3.10", "3.11", "3.12", "3.13"]), default=None,
              help="Python of Numerai's runtime image (default: this interpreter's).")
@click.option("--pickle-python", type=click.Choice(["3.10", "3.11", "3.12", "3.13"]), default=None,
              help="Python the pickle was made with (default: the model's recorded one, else this interpreter's).")
@click.option("--image", type=click.Choice(["auto", "py3.10", "py3.11", "py3.12", "py3.13", "none"]), default="auto",
              show_default=True,
              help="Numerai's runtime image to judge in: a cached environment with its exact pins "
                   "('auto': MLFLOW_NUMERAI_IMAGE, else the image of the pickle's Python); "
                   "'none': this environment.")
@click.option("--profile", type=click.Choice(["numerai", "forecast"]), default=None,
              help="Output checks (default: the model's recorded profile, else numerai).")
@click.option("--network", type=click.Choice(["auto", "namespace", "guard"]), default="auto", show_default=True,
              help="Network isolation: a new namespace where possible, else a socket guard.")
@click.option("--isolation", type=click.Choice(["auto", "strict", "fallback"]), default="auto", show_default=True,
              help="bubblewrap where it runs, else a partial fallback with a warning (auto); "
                   "refuse to run without bubblewrap (strict); or the fallback only.")
@click.option("--log-run/--no-log-run", default=None,
              help="Log a validation run to MLflow (default: when TARGET is a model URI).")
@click.option("--tracking-uri", default=None,
              help="Tracking/registry URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a summary.")
def validate(target, live, benchmarks, validation, data_dir, cpus, memory, timeout, python, pickle_python, image,
             profile, network, isolation, log_run, tracking_uri, as_json):
    """Run TARGET (a model URI or a predict.pkl path) in a sandboxed child process.

    Exit code 0 Success, 1 Failed (the model's fault), 2 Error or bad arguments.
    """
    try:
        limits = SandboxLimits(cpus=cpus, memory_bytes=memory, timeout_seconds=timeout, network=network,
                               isolation=isolation)
        isolation_method(limits)  # strict without bubblewrap: refuse before anything is recorded
    except (ValueError, SandboxError) as exc:
        _fail_args(as_json, str(exc))
    if data_dir is not None:
        try:
            root = resolve_data_dir(data_dir)
        except DataError as exc:
            _fail_args(as_json, str(exc))
        live = live or str(root / "live.parquet")
        if benchmarks is None and (root / "live_benchmark_models.parquet").exists():
            benchmarks = str(root / "live_benchmark_models.parquet")
        if validation is None and (root / "validation.parquet").exists():
            validation = str(root / "validation.parquet")
    needs_tracking = log_run or (log_run is None and ("://" in target or target.startswith(("models:/", "runs:/"))))
    if needs_tracking:
        ensure_tracking_uri(tracking_uri)
    try:
        report = run_validation(target, live=live, benchmarks=benchmarks, validation=validation, limits=limits,
                                python=python, pickle_python=pickle_python, profile=profile, log_run=log_run,
                                image=None if image == "auto" else image)
    except (ValidationArgumentError, SandboxError, FileNotFoundError) as exc:
        _fail_args(as_json, str(exc))
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        _print_summary(report)
    sys.exit(report.exit_code)


def _fail_args(as_json: bool, message: str) -> None:
    if as_json:
        click.echo(json.dumps({"status": ERROR, "reason": "bad_arguments", "message": message}))
    else:
        click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def _print_summary(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    color = {SUCCESS: "green", FAILED: "red", ERROR: "magenta"}.get(report.status, "yellow")
    title = f"[{color}]{report.status}[/]" + (f" ({report.reason})" if report.reason else "")
    console.print(f"{report.target}: {title}  {report.message}")
    table = Table(show_header=False, box=None)
    table.add_row("wall / cpu", f"{report.wall_seconds:.2f}s / {report.cpu_seconds:.2f}s")
    table.add_row("peak memory", f"{report.peak_memory_bytes / 2**20:.0f} MiB ({report.memory_enforcement})")
    table.add_row("network", str(report.network_isolation))
    table.add_row("isolation", str(report.isolation))
    if report.image:
        img = report.image
        table.add_row("image", f"Numerai {img['name']} ({len(img['pins'])} pins used, "
                               f"env {'built' if img['env_built'] else 'reused'}: {img['env']})")
    table.add_row("history", " -> ".join(h["state"] for h in report.history[-4:]))
    if report.diagnostics and report.diagnostics.get("corr_mean") is not None:
        d = report.diagnostics
        table.add_row("validation", f"corr {d['corr_mean']:.4f}  sharpe {d['corr_sharpe']:.3f}  eras {d['n_eras']}")
    if report.validation_run_id:
        table.add_row("validation run", report.validation_run_id)
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if report.status != SUCCESS and report.log_tail:
        console.print("[dim]last lines of the model's log:[/]")
        console.print("\n".join(report.log_tail.splitlines()[-15:]), markup=False, highlight=False)
