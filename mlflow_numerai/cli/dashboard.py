"""`mlflow-numerai dashboard`: start `streamlit run` on the dashboard app shipped in the package.

Owns only the launch (the `streamlit run` command line and the click command); what the app
shows lives in `mlflow_numerai.dashboard`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import click

from mlflow_numerai.dashboard.app import app_path
from mlflow_numerai.tracking import ensure_tracking_uri

__all__ = ["app_path", "dashboard_command", "streamlit_command"]


def streamlit_command(tracking_uri: str, port: int, address: str = "localhost", headless: bool = False) -> list[str]:
    """The `streamlit run` command line for the dashboard on `address:port`."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true" if headless else "false",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--",
        "--tracking-uri",
        tracking_uri,
    ]


@click.command("dashboard")
@click.option(
    "--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
)
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="Port to serve on.")
@click.option("--address", default="localhost", show_default=True, help="Address to bind (0.0.0.0 for a team server).")
@click.option("--headless", is_flag=True, help="Do not open a browser.")
def dashboard_command(tracking_uri: str | None, port: int, address: str, headless: bool) -> None:
    """Start the Streamlit dashboard on the tracking store."""
    try:
        import streamlit  # noqa: F401
    except ImportError as exc:
        raise click.ClickException("the dashboard needs Streamlit: pip install 'mlflow-numerai[dashboard]'") from exc
    uri = ensure_tracking_uri(tracking_uri)
    click.echo(f"Dashboard on http://{address}:{port} reading {uri}")
    try:
        code = subprocess.call(streamlit_command(uri, port, address, headless), env=os.environ.copy())
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
