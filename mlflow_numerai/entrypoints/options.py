"""The one vocabulary of the training commands' options, each defined once.

Every family spells a shared idea the same way: `--data-dir`, `--feature-set`, `--target`,
`--hidden 128,64,64` (hidden sizes; `128-64-64` is read the same, "none" is no hidden layer),
`--learning-rate`, `--epochs`, `--batch-size`, `--seed`, `--registered-model-name`,
`--tracking-uri`. Older spellings stay accepted as hidden aliases (`--lr` for
`--learning-rate`, `--target` for keras-stream's `--targets`), so existing MLproject
parameters, scripts and pipelines keep working. Values are checked here, at the boundary: a
bad value is a click.BadParameter naming the option and what it expects.
"""

from __future__ import annotations

import math
import re

import click

HIDDEN_HELP = 'Hidden layer sizes, e.g. "128,64,64" (or "128-64-64"); "none" for no hidden layer.'
TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)."


class AliasedOption(click.Option):
    """An option whose first name is shown in --help; later names are accepted aliases."""

    def get_help_record(self, ctx: click.Context):
        record = super().get_help_record(ctx)
        if record is None:
            return None
        shown = self.opts[0] + ("" if self.is_flag else f" {self.make_metavar(ctx)}")
        return shown, record[1]

    def make_metavar(self, ctx: click.Context | None = None) -> str:  # click < 8.2 takes no ctx
        try:
            return super().make_metavar(ctx)  # type: ignore[call-arg]
        except TypeError:
            return super().make_metavar()  # type: ignore[call-arg]


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses NaN and infinity (click's range checks let NaN through)."""

    name = "float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def parse_hidden(value: str | tuple | None) -> tuple[int, ...]:
    """Hidden sizes: "128,64,64" or "128-64-64" -> (128, 64, 64); "" or "none" -> () (no hidden
    layer). Raises ValueError naming the expected form."""
    if isinstance(value, tuple):
        return value
    text = str(value or "").strip().lower()
    if text in ("", "none"):
        return ()
    parts = [p.strip() for p in re.split(r"[,-]", text)]
    if any(not p.isdigit() for p in parts):
        raise ValueError(f"expected positive integers separated by ',' or '-' (e.g. 128,64,64) or 'none', "
                         f"got {value!r}")
    sizes = tuple(int(p) for p in parts)
    if any(s < 1 for s in sizes):
        raise ValueError(f"layer sizes must be >= 1 (use 'none' for no hidden layer), got {value!r}")
    return sizes


def _hidden_callback(ctx: click.Context, param: click.Parameter, value):
    try:
        return parse_hidden(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def hidden_text(sizes: tuple[int, ...], sep: str = ",") -> str:
    """Hidden sizes as logged and shown: "128,64,64", or "none"."""
    return sep.join(map(str, sizes)) or "none"


def data_dir_option(help: str = 'Numerai data directory, or "synthetic" for the default synthetic set.'):
    return click.option("--data-dir", default="synthetic", show_default=True, help=help)


def feature_set_option(help: str = "Feature set of features.json."):
    return click.option("--feature-set", default="small", show_default=True, help=help)


def target_option(help: str = "Target column to fit and score."):
    return click.option("--target", default="target", show_default=True, help=help)


def targets_option(help: str = "Comma-separated target columns to fit; the first one is scored and predicted."):
    return click.option("--targets", "--target", "targets", cls=AliasedOption, default="target",
                        show_default=True, help=help)


def hidden_option(default: str = "128,64,64", help: str = HIDDEN_HELP):
    return click.option("--hidden", default=default, show_default=True, callback=_hidden_callback, help=help)


def learning_rate_option(default: float, help: str = "Adam learning rate."):
    return click.option("--learning-rate", "--lr", "learning_rate", cls=AliasedOption,
                        type=FiniteFloatRange(min=0.0, min_open=True), default=default, show_default=True,
                        help=help)


def epochs_option(default: int, help: str = "Training epochs."):
    return click.option("--epochs", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def batch_size_option(default: int, help: str = "Rows per training batch."):
    return click.option("--batch-size", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def seed_option(help: str = "Random seed."):
    return click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help=help)


def registered_model_name_option(default: str, help: str = 'Registry name for the model; "" or "none" to skip '
                                 "registration."):
    return click.option("--registered-model-name", default=default, show_default=True, help=help)


def tracking_uri_option():
    return click.option("--tracking-uri", default=None, help=TRACKING_HELP)
