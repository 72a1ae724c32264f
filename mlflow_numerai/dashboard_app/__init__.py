"""The Streamlit dashboard (rendering only), shipped in the package so `mlflow-numerai dashboard`
works from a pip install. Data comes from `mlflow_numerai.dashboard`."""
