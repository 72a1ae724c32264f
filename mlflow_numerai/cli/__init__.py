"""The `mlflow-numerai` command.

Sub-commands live in their own modules and are imported only when invoked, so `--help` and
light commands never pay for TensorFlow or torch start-up. Where a command lives, one rule:
a command that trains or builds a model and logs MLflow runs (`train <family>`, `ensemble`,
`study`, `pipeline`) is an MLflow Projects entry point in `mlflow_numerai/entrypoints/`; every
other command (`data`, `validate`, `promote`, `dashboard`) is a thin click module in
`mlflow_numerai/cli/<name>.py` over its domain package. Domain modules import no click.

One error convention for every command: a bad input (`InputError`, a file that cannot be read or
written, a wrong value) ends with one line, `Error: <what is wrong>`, and exit status 2; anything
else with one line and exit status 1. `MLFLOW_NUMERAI_TRACEBACK=1` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os

import click

from mlflow_numerai.conventions import TRACEBACK_ENV
from mlflow_numerai.errors import InputError

# name -> ("module:attribute", short help). Each attribute is a click command or group.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("mlflow_numerai.cli.data:data", "Make synthetic Numerai data or download the real set."),
    "train": ("mlflow_numerai.cli:train", "Train a model family and log it to MLflow."),
    "validate": ("mlflow_numerai.cli.validate:validate", "Run a predict.pkl in Numerai's sandbox limits."),
    "promote": ("mlflow_numerai.cli.promote:promote_command", "Move an alias to a validated model version."),
    "ensemble": ("mlflow_numerai.entrypoints.ensemble:ensemble", "Blend registered models into one predict.pkl model."),
    "dashboard": ("mlflow_numerai.cli.dashboard:dashboard_command", "Start the Streamlit dashboard."),
    "study": ("mlflow_numerai.entrypoints.study:study", "Hyper-parameter study on Optuna, shared by many workers."),
    "pipeline": ("mlflow_numerai.entrypoints.pipeline:pipeline",
                 "Run the whole job: data, models, validation, promotion."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            target, _ = self.lazy[name]
            module, attr = target.split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def one_line(exc: BaseException) -> str:
    """What went wrong, on one line: the message, with the file an OSError names."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def is_bad_input(exc: BaseException) -> bool:
    """Errors that name a bad input (exit 2), as opposed to a failure of this program (exit 1).
    pyarrow's ArrowInvalid (a truncated or foreign file) is a ValueError."""
    return isinstance(exc, (InputError, ValueError, OSError, KeyError, UnicodeError))


class CommandError(click.ClickException):
    """An exception turned into the one-line convention."""

    def __init__(self, exc: BaseException):
        bad = is_bad_input(exc)
        message = one_line(exc) if bad else f"{type(exc).__name__}: {one_line(exc)}"
        super().__init__(message)
        self.exit_code = 2 if bad else 1


class Main(LazyGroup):
    """The top group: every sub-command's errors follow the one-line convention."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                raise
            raise CommandError(exc) from exc


@click.group(cls=Main, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-numerai")
def main() -> None:
    """Numerai modelling on MLflow: train, package predict.pkl, validate, promote, compare."""


# `train <family>`: name -> ("module:attribute", short help); a new family adds its line here.
TRAIN_COMMANDS: dict[str, tuple[str, str]] = {
    "baseline": ("mlflow_numerai.entrypoints.baseline:baseline", "Ridge regression on a feature set (fast)."),
    "keras-stream": ("mlflow_numerai.entrypoints.keras_stream:keras_stream",
                     "Keras MLP streamed from an era-sharded cache."),
    "bayes-nn": ("mlflow_numerai.entrypoints.bayes_nn:bayes_nn",
                 "Pyro Bayesian NN: posterior ensemble and uncertainty."),
    "bnn-study": ("mlflow_numerai.entrypoints.bayes_nn:bnn_study", "Priors x architectures study of the Bayesian NN."),
    "varmax": ("mlflow_numerai.entrypoints.varmax:varmax", "statsmodels VARMAX with an order search."),
}


@click.group(cls=LazyGroup, lazy=TRAIN_COMMANDS)
def train() -> None:
    """Train a model family and log it to MLflow as a Numerai pyfunc."""


if __name__ == "__main__":
    main()
