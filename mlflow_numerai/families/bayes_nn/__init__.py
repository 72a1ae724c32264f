"""Bayesian MLP for Numerai (seed 002): weight priors, SVI, posterior samples, batched predictive.

Maths only (no MLflow, no click). The modules, in the order they are used:

- `priors`: the weight priors (`uniform`, `normal`, `laplace`) and their scales.
- `spec`: `BNNSpec` names one model: hidden sizes (0-3 layers), weight prior, target model (H1-H4).
- `batches`: feature matrices and `TrainingBatches` (in-memory arrays or the era stream).
- `model`: `bnn_model` (the generative model) and `bnn_guide` (mean-field `AutoNormal`), apart.
- `fit`: `fit_svi`, the short SVI loop (Trace_ELBO, minibatches scaled to the data size by the
  subsampled `pyro.plate`), `sample_posterior` (S weight sets from the guide) and `fit_baseline`,
  the seed's non-Bayesian net (MSE, He init, Adam 1e-2).
- `posterior`: `PosteriorSamples` and `iter_predictive`, which runs them on many rows with batched
  matrix products in cache-sized tiles, yielding blocks whose size is set by a memory budget, so
  S x N predictions never exist at once unless they fit.
- `predict`: `make_predict` builds the Numerai `predict` closure from K stored samples as numpy
  arrays: it needs neither Pyro nor torch to load or run.

The observation noise sigma is learned as a latent with a HalfNormal(1) prior (the same for every
weight prior). Every public name is re-exported here: `from mlflow_numerai.families import
bayes_nn as bnn; bnn.fit_svi(...)`. Importing this package imports torch (Pyro only when used).
"""

from mlflow_numerai.families.bayes_nn.batches import (
    TrainingBatches,
    array_batches,
    drop_nan_targets,
    feature_matrix,
    stream_batches,
)
from mlflow_numerai.families.bayes_nn.fit import BaselineFit, SVIFit, fit_baseline, fit_svi, sample_posterior
from mlflow_numerai.families.bayes_nn.model import bnn_guide, bnn_model, head_means, initial_values
from mlflow_numerai.families.bayes_nn.posterior import (
    BLOCK_BYTES_PER_CELL,
    DEFAULT_BUDGET_BYTES,
    FLOAT_BYTES,
    TILE_BYTES,
    PosteriorSamples,
    activation_bytes_per_cell,
    batched_forward,
    collapse_draws,
    iter_predictive,
    plan_chunks,
    predictive_mean_std,
    target_readout,
    tile_shape,
)
from mlflow_numerai.families.bayes_nn.predict import PREDICT_BUDGET_BYTES, make_predict, numpy_forward
from mlflow_numerai.families.bayes_nn.priors import BIAS_PRIOR_SCALE, PRIORS, check_prior, he_scale, weight_prior
from mlflow_numerai.families.bayes_nn.spec import (
    DEFAULT_HIDDEN,
    MAX_HIDDEN_LAYERS,
    TARGET_MODELS,
    BNNSpec,
    check_target_model,
    parse_hidden,
)

__all__ = [
    "BIAS_PRIOR_SCALE", "BLOCK_BYTES_PER_CELL", "DEFAULT_BUDGET_BYTES", "DEFAULT_HIDDEN", "FLOAT_BYTES",
    "MAX_HIDDEN_LAYERS", "PREDICT_BUDGET_BYTES", "PRIORS", "TARGET_MODELS", "TILE_BYTES",
    "BNNSpec", "BaselineFit", "PosteriorSamples", "SVIFit", "TrainingBatches",
    "activation_bytes_per_cell", "array_batches", "batched_forward", "bnn_guide", "bnn_model", "check_prior",
    "check_target_model", "collapse_draws", "drop_nan_targets", "feature_matrix", "fit_baseline", "fit_svi",
    "he_scale", "head_means", "initial_values", "iter_predictive", "make_predict", "numpy_forward",
    "parse_hidden", "plan_chunks", "predictive_mean_std", "sample_posterior", "stream_batches",
    "target_readout", "tile_shape", "weight_prior",
]
