"""The dashboard, from a source checkout: `streamlit run streamlit_app/app.py [-- --tracking-uri URI]`.

The pages ship inside the package (`mlflow_numerai/dashboard/app/`) so `mlflow-numerai dashboard`
also works from a pip install; this file starts the same app.
"""

from mlflow_numerai.dashboard.app.common import run_app

run_app()
