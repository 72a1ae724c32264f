"""MLflow Projects entry points: one module per entry point, each a click command.

Each module loads data, calls a model family (pure maths in `mlflow_numerai.families`), and does
the MLflow side: params, metrics as they come, plots, `log_numerai_model`, evaluation, register.
"""

from __future__ import annotations

from mlflow_numerai.cli import LazyGroup

# name -> ("module:attribute", short help)
TRAIN_COMMANDS: dict[str, tuple[str, str]] = {
    "baseline": ("mlflow_numerai.entrypoints.baseline:baseline", "Ridge regression on a feature set (fast)."),
    "keras-stream": ("mlflow_numerai.entrypoints.keras_stream:keras_stream", "Keras MLP streamed from an era-sharded cache."),
    "bayes-nn": ("mlflow_numerai.entrypoints.bayes_nn:bayes_nn", "Pyro Bayesian NN: posterior ensemble and uncertainty."),
    "bnn-study": ("mlflow_numerai.entrypoints.bayes_nn:bnn_study", "Priors x architectures study of the Bayesian NN."),
    "varmax": ("mlflow_numerai.entrypoints.varmax:varmax", "statsmodels VARMAX with an order search."),
}


def _make_train():
    import click

    @click.group(cls=LazyGroup, lazy=TRAIN_COMMANDS)
    def train() -> None:
        """Train a model family and log it to MLflow as a Numerai pyfunc."""

    return train


train = _make_train()
