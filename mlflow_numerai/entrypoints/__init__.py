"""MLflow Projects entry points: one module per command that trains or builds a model and logs it.

`train <family>` (baseline, keras_stream, bayes_nn/bnn_study, varmax), `ensemble`, `study` and
`pipeline` live here, each a click command; each loads data, calls a model family (pure maths in
`mlflow_numerai.families`) or a study/ensemble module, and does the MLflow side: params, metrics
as they come, plots, `log_numerai_model`, evaluation, register. What they share is in
`entrypoints.common` (data options, run start, params, evaluation, registration) and
`entrypoints.options` (the one option vocabulary).
"""

from __future__ import annotations

import click

from mlflow_numerai.cli import LazyGroup

# name -> ("module:attribute", short help)
TRAIN_COMMANDS: dict[str, tuple[str, str]] = {
    "baseline": ("mlflow_numerai.entrypoints.baseline:baseline", "Ridge regression on a feature set (fast)."),
    "keras-stream": ("mlflow_numerai.entrypoints.keras_stream:keras_stream",
                     "Keras MLP streamed from an era-sharded cache."),
    "bayes-nn": ("mlflow_numerai.entrypoints.bayes_nn:bayes_nn",
                 "Pyro Bayesian NN: posterior ensemble and uncertainty."),
    "bnn-study": ("mlflow_numerai.entrypoints.bayes_nn:bnn_study", "Priors x architectures study of the Bayesian NN."),
    "varmax": ("mlflow_numerai.entrypoints.varmax:varmax", "statsmodels VARMAX with an order search."),
}


@click.group(cls=LazyGroup, lazy=TRAIN_COMMANDS)
def train() -> None:
    """Train a model family and log it to MLflow as a Numerai pyfunc."""
