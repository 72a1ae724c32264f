"""The Streamlit dashboard (rendering only), shipped in the package so `mlflow-numerai dashboard`
works from a pip install. Data comes from `mlflow_numerai.dashboard.queries`; `main.py` is the
entry script, `common.py` what every page shares, `pages/` one script per page. Importing this
package does not import Streamlit.
"""

from __future__ import annotations

from pathlib import Path

MAIN_SCRIPT = Path(__file__).resolve().parent / "main.py"


def app_path() -> Path:
    """The Streamlit entry script shipped inside the package (works for pip installs too)."""
    return MAIN_SCRIPT
