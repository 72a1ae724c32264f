"""`mlflow-numerai promote`: move an alias to a validated model version (`registry.promote`).

The command line of promotion only: options, exit codes (0 promoted, 1 refused, 2 bad
arguments) and the printed result; the gates and the audit trail are `mlflow_numerai.registry`.
"""

from __future__ import annotations

import json
import sys

import click

from mlflow_numerai.registry import PromotionError, RegistryError, promote
from mlflow_numerai.tracking import ensure_tracking_uri


@click.command("promote")
@click.argument("name")
@click.option("--version", "version", required=True, help="Model version to promote ('latest': the highest).")
@click.option("--alias", default="champion", show_default=True, help="Alias to move.")
@click.option("--min-corr", type=float, default=None, help="Gate: validation corr mean must be at least this.")
@click.option("--min-sharpe", type=float, default=None, help="Gate: validation corr sharpe must be at least this.")
@click.option("--tracking-uri", default=None,
              help="Tracking/registry URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def promote_command(name, version, alias, min_corr, min_sharpe, tracking_uri, as_json):
    """Move ALIAS to NAME --version V if its upload state is Success and the gates pass.

    Exit code 0 promoted, 1 refused (a gate failed), 2 bad arguments.
    """
    ensure_tracking_uri(tracking_uri)
    try:
        result = promote(name, version, alias, min_corr=min_corr, min_sharpe=min_sharpe)
    except RegistryError as exc:
        _emit(as_json, {"promoted": False, "error": str(exc)}, str(exc), err=True)
        sys.exit(2)
    except PromotionError as exc:
        _emit(as_json, {"promoted": False, "error": str(exc)}, str(exc), err=True)
        sys.exit(1)
    text = (f"{name} version {result.version} is now @{alias}"
            + (f" (was version {result.previous_version})" if result.previous_version else ""))
    _emit(as_json, {"promoted": True, **result.to_dict()}, text)


def _emit(as_json: bool, payload: dict, text: str, err: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(payload, default=str))
    else:
        click.echo(text, err=err)
