"""`mlflow-numerai data synth|download`: make synthetic Numerai data or download the real set."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_numerai.data.io import DataError, data_version
from mlflow_numerai.data.numerai import DownloadError, default_client, download_numerai
from mlflow_numerai.data.synthetic import generate_synthetic


class CliUsageError(click.ClickException):
    """A bad argument: printed as one line `Error: ...`, exit status 2 (click's usage code)."""

    exit_code = 2


class OneLineErrors(click.Command):
    """A command whose argument-parsing errors are one line (no usage block), exit status 2."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise CliUsageError(exc.format_message()) from None


# Python parameter names in DataError messages -> the options a CLI user typed.
_OPTIONS = {
    "eras_train": "--eras-train",
    "eras_validation": "--eras-validation",
    "rows_per_era": "--rows-per-era",
    "n_features": "--features",
    "seed": "--seed",
    "nan_percent": "--nan-percent",
}


def _option_names(message: str) -> str:
    """`message` with a leading Python parameter name replaced by its CLI option."""
    for name, option in _OPTIONS.items():
        if message.startswith(name + " "):
            return option + message[len(name) :]
    return message


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Make synthetic Numerai data or download the real set."""


@data.command(cls=OneLineErrors)
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--eras-train", default=200, show_default=True, type=int, help="Training eras.")
@click.option("--eras-validation", default=60, show_default=True, type=int, help="Validation eras.")
@click.option("--rows-per-era", default=500, show_default=True, type=int, help="Rows in every era (>= 20).")
@click.option("--features", "n_features", default=240, show_default=True, type=int, help="Number of features (>= 5).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same bytes).")
@click.option("--nan-percent", default=0, show_default=True, type=int,
              help="Percent of feature cells left NaN (as in real data), 0-50.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out directory.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def synth(
    out: Path,
    eras_train: int,
    eras_validation: int,
    rows_per_era: int,
    n_features: int,
    seed: int,
    nan_percent: int,
    overwrite: bool,
    progress: bool,
) -> None:
    """Write a synthetic Numerai data set (v5 layout) with planted signal and burn eras."""
    try:
        path = generate_synthetic(
            out,
            eras_train=eras_train,
            eras_validation=eras_validation,
            rows_per_era=rows_per_era,
            n_features=n_features,
            seed=seed,
            nan_percent=nan_percent,
            overwrite=overwrite,
            progress=progress,
        )
    except DataError as exc:
        raise CliUsageError(_option_names(str(exc))) from None
    click.echo(f"wrote {path} ({data_version(path)})")


@data.command(cls=OneLineErrors)
@click.option("--version", "version", required=True, help="Numerai data version, e.g. v5.0.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out directory.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def download(version: str, out: Path, overwrite: bool, progress: bool) -> None:
    """Download the real Numerai data through numerapi (needs internet)."""
    try:
        path = download_numerai(version, out, overwrite=overwrite, progress=progress, client=_client())
    except (DownloadError, ConnectionError) as exc:
        raise click.ClickException(str(exc)) from None
    except DataError as exc:
        raise CliUsageError(str(exc)) from None
    click.echo(f"wrote {path} (Numerai {version})")


def _client():
    """The numerapi client (a seam for tests, which replace it with a fake)."""
    try:
        return default_client()
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
