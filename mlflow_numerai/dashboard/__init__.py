"""The dashboard: read-only views of the tracking store and the model registry.

`queries` turns MLflow runs, registered versions, upload states and artifacts into DataFrames
(no Streamlit); `app` renders them as a Streamlit multipage app (entry `app/main.py`, pages in
`app/pages/`). `mlflow-numerai dashboard` (`mlflow_numerai.cli.dashboard`) and the source
checkout's `streamlit_app/app.py` start the same app.

The query functions are also importable from here (`from mlflow_numerai import dashboard;
dashboard.runs_table(uri)`), as the README shows for notebooks.
"""

from __future__ import annotations

from mlflow_numerai.dashboard.queries import *  # noqa: F403 (the query API, re-exported)
from mlflow_numerai.dashboard.queries import __all__  # noqa: F401
