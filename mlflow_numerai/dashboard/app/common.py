"""What every dashboard page shares: the tracking URI, cached data calls, guards and badges.

Rendering only: every number comes from `mlflow_numerai.dashboard.queries`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.tracking import default_tracking_uri as sqlite_default

TTL_SECONDS = 60
PAGES_DIR = Path(__file__).resolve().parent / "pages"

# (file, title, url path, icon)
PAGES = [
    ("models.py", "Models & uploads", "models", ":material/inventory_2:"),
    ("ensembles.py", "Ensembles", "ensembles", ":material/stacked_bar_chart:"),
    ("uncertainty.py", "Uncertainty", "uncertainty", ":material/ssid_chart:"),
    ("training.py", "Training", "training", ":material/model_training:"),
    ("forecasts.py", "Forecasts", "forecasts", ":material/timeline:"),
    ("diagnostics.py", "Diagnostics", "diagnostics", ":material/insights:"),
    ("compare.py", "Compare", "compare", ":material/compare_arrows:"),
]


def _uri_from_argv() -> str | None:
    """`--tracking-uri URI` given after `streamlit run app.py --`."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--tracking-uri" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--tracking-uri="):
            return arg.split("=", 1)[1]
    return None


def default_tracking_uri() -> str:
    """The same default as every command: --tracking-uri, MLFLOW_TRACKING_URI, sqlite:///<cwd>/mlflow.db."""
    return _uri_from_argv() or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_default()


def run_app() -> None:
    """The multipage app: sidebar with the tracking URI, then the chosen page."""
    st.set_page_config(page_title="mlflow-numerai dashboard", page_icon=":material/monitoring:", layout="wide")
    if "tracking_uri" not in st.session_state:
        st.session_state["tracking_uri"] = default_tracking_uri()
    pages = [
        st.Page(PAGES_DIR / file, title=title, url_path=url, icon=icon, default=(i == 0))
        for i, (file, title, url, icon) in enumerate(PAGES)
    ]
    nav = st.navigation(pages)
    with st.sidebar:
        st.text_input(
            "Tracking URI",
            key="tracking_uri",
            help="Any MLflow tracking URI: sqlite:///mlflow.db, http://host:5000, ...",
        )
        if st.button("Refresh", icon=":material/refresh:", help=f"Data is cached for {TTL_SECONDS} s"):
            st.cache_data.clear()
    nav.run()


def tracking_uri() -> str:
    """The URI chosen in the sidebar (or the default when a page runs on its own)."""
    return st.session_state.get("tracking_uri") or default_tracking_uri()


# ---- cached data calls (arguments are plain strings/tuples so they hash) --------------------


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def check(uri: str) -> tuple[bool, str | None]:
    try:
        return queries.check_tracking(uri), None
    except queries.TrackingUnavailable as exc:
        return False, str(exc)


@st.cache_data(ttl=TTL_SECONDS, show_spinner="Reading runs...")
def runs(uri: str, families: tuple[str, ...] | None = None) -> pd.DataFrame:
    return queries.runs_table(uri, families)


@st.cache_data(ttl=TTL_SECONDS, show_spinner="Reading the model registry...")
def versions(uri: str) -> pd.DataFrame:
    return queries.model_versions(uri)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def promotions(uri: str) -> pd.DataFrame:
    return queries.promotion_audit(uri, versions(uri))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def artifact_frame(uri: str, kind: str, run_id: str) -> pd.DataFrame:
    """One run's artifact table, by kind (the name of a `dashboard` reader function)."""
    readers = {
        "diagnostics": queries.per_era_diagnostics,
        "bnn_members": queries.bnn_members,
        "bnn_per_era": queries.bnn_per_era,
        "bnn_roc": queries.bnn_roc,
        "js_divergence": queries.js_divergence,
        "varmax_forecast": queries.varmax_forecast,
        "varmax_order_search": queries.varmax_order_search,
    }
    return readers[kind](uri, run_id)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def metric_history(uri: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    return queries.metric_history(uri, run_ids)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def per_era(uri: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    return queries.per_era_corr(uri, run_ids)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def logs(uri: str, run_id: str) -> list[tuple[str, str]]:
    """(artifact path, text) of each log of a validation run."""
    out = []
    for path in queries.find_log_artifacts(uri, run_id):
        text = queries.read_artifact_text(uri, run_id, path)
        if text is not None:
            out.append((path, text))
    return out


# ---- guards ----------------------------------------------------------------------------------


def require_store() -> str:
    """The tracking URI if the store can be read; otherwise show why on the page and stop."""
    uri = tracking_uri()
    ok, error = check(uri)
    if error:
        st.error(f"**Tracking store unreachable.** {error}", icon=":material/cloud_off:")
        st.caption("Check the URI in the sidebar, or start the server: `mlflow server --port 5000`.")
        st.stop()
    if not ok:
        empty_state("This tracking store has nothing logged yet", "any", uri)
        st.stop()
    return uri


def empty_state(what: str, kind: str, uri: str | None = None) -> None:
    """An info box saying what is missing and the command that creates it."""
    target = f" in `{uri}`" if uri else ""
    st.info(f"{what}{target}. Create it with:", icon=":material/info:")
    st.code(queries.CREATE_COMMANDS[kind], language="bash")


def family_runs(uri: str, families: tuple[str, ...], kind: str, what: str) -> pd.DataFrame:
    """Runs of `families`; shows the empty state and stops when there are none."""
    df = runs(uri, families)
    if df.empty:
        empty_state(what, kind, uri)
        st.stop()
    return df


# ---- small rendering helpers -----------------------------------------------------------------


def present(value: object) -> bool:
    """True for a real value; False for None, NaN and ""."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return False
    return value != ""


def badge(state: str | None) -> str:
    """Markdown for a coloured upload-state badge."""
    if not present(state):
        return ":gray-badge[Not validated]"
    return f":{queries.STATE_COLORS.get(state, 'gray')}-badge[{state}]"


STATE_SCALE = alt.Scale(
    domain=list(queries.UPLOAD_STATES),
    range=["#9e9e9e", "#1e88e5", "#42a5f5", "#2e7d32", "#c62828", "#ef6c00"],
)


def fmt(value: object, digits: int = 4) -> str:
    """A number for display: fixed decimals, '—' for missing."""
    try:
        if value is None or pd.isna(value):
            return "—"
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def run_options(df: pd.DataFrame) -> dict[str, str]:
    """Selectbox labels -> run ids, newest first."""
    labels = queries.run_label(df)
    return dict(zip(labels, df["run_id"]))


def rounded(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Float columns rounded for st.table."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].round(digits)
    return out
