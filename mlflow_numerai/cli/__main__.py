"""`python -m mlflow_numerai.cli` is the `mlflow-numerai` command."""

from mlflow_numerai.cli import main

main()
