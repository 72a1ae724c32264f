"""MLflow plugin for the Numerai tournament.

Heavy pieces (TensorFlow, torch, statsmodels) are imported only by the modules that need them,
so `import mlflow_numerai` and the CLI stay fast.
"""

__version__ = "0.1.0"
