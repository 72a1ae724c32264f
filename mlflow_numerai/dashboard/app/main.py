"""Streamlit entry of the dashboard: `streamlit run <this file> -- --tracking-uri URI`."""

from mlflow_numerai.dashboard.app.common import run_app

run_app()
