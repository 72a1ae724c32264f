"""Training: the SVI loop (`fit_svi`), the posterior it gives (`sample_posterior`) and the seed's
deterministic baseline net (`fit_baseline`, MSE, He init, Adam), on the same `TrainingBatches`.

`fit_svi` is the short SVI loop of the Pyro examples: Trace_ELBO, Adam with a geometric
learning-rate decay, minibatches scaled to the data size by the subsampled `pyro.plate`. Pyro is
imported where it is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from mlflow_numerai.families.bayes_nn.batches import TrainingBatches
from mlflow_numerai.families.bayes_nn.model import bnn_guide, bnn_model, initial_values
from mlflow_numerai.families.bayes_nn.posterior import PosteriorSamples, collapse_draws
from mlflow_numerai.families.bayes_nn.spec import DEFAULT_HIDDEN, BNNSpec

# Defaults from the study in benchmarks/README.md ("Families that learn"): a short, fast-decaying
# run from the constant target mean (the seed's 30 epochs at 1e-3 scored 0.017 on the default set).
SVI_EPOCHS, SVI_LR, FINAL_LR_FRACTION, INIT_SCALE = 6, 1e-2, 0.1, 0.05


@dataclass
class SVIFit:
    """A trained guide with what is needed to sample from it."""

    spec: BNNSpec
    guide: Callable
    y_offset: np.ndarray  # training mean of each target (the model sees centred targets)
    losses: list[float] = field(default_factory=list)  # per epoch: mean -ELBO per training row
    rows_per_sec: float = float("nan")
    seconds: float = float("nan")


def _check_training_args(epochs: int, lr: float) -> None:
    if epochs < 1 or not lr > 0:
        raise ValueError(f"epochs must be >= 1 and lr > 0, got {epochs}, {lr}")


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def fit_svi(
    train: TrainingBatches,
    spec: BNNSpec,
    *,
    epochs: int = SVI_EPOCHS,
    lr: float = SVI_LR,
    seed: int = 0,
    init_scale: float = INIT_SCALE,
    final_lr_fraction: float = FINAL_LR_FRACTION,
    zero_output: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> SVIFit:
    """Fit the mean-field posterior by SVI (Trace_ELBO, Adam) on the minibatches of `train`.

    The learning rate decays geometrically from `lr` to `lr * final_lr_fraction` at the last
    step (1: constant). `init_scale` and `zero_output`: see `bnn_guide`. The defaults come from
    the study in benchmarks/README.md ("Families that learn"). `train` has one target column per
    target of `spec.target_model`.
    `on_epoch(epoch, metrics)` is called after each epoch with `elbo_loss` (per row),
    `learning_rate` and `rows_per_sec`."""
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    _check_training_args(epochs, lr)
    if not 0.0 < final_lr_fraction <= 1.0:
        raise ValueError(f"final_lr_fraction must be in (0, 1], got {final_lr_fraction}")
    if len(train.y_mean) != len(spec.targets):
        raise ValueError(f"target model {spec.target_model!r} needs {len(spec.targets)} target columns, "
                         f"got {len(train.y_mean)}")
    n, offset = train.n_rows, torch.from_numpy(train.y_mean)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = partial(bnn_model, spec=spec, n_rows=n)
    sigma = train.y_std if spec.target_model != "h1" else [train.y_std_pooled]
    guide = bnn_guide(model, spec, seed=seed, sigma=sigma, init_scale=init_scale, zero_output=zero_output)
    steps_per_epoch = max(1, math.ceil(n / train.batch_size)) if train.batch_size else 1
    decay = final_lr_fraction ** (1.0 / max(1, epochs * steps_per_epoch - 1))
    scheduler = pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "gamma": decay})
    svi = SVI(model, guide, scheduler, Trace_ELBO())
    fit = SVIFit(spec=spec, guide=guide, y_offset=train.y_mean)
    start, done = time.perf_counter(), 0
    for epoch in _progress(range(epochs), progress, f"SVI {spec.prior}"):
        tick, total, steps = time.perf_counter(), 0.0, 0
        for x, y in train.epoch(epoch):
            # the plate scales the minibatch likelihood by n / len(x)
            total += svi.step(x, y - offset, torch.arange(len(x)))
            scheduler.step()
            steps += 1
        done += steps
        seconds = time.perf_counter() - tick
        fit.losses.append(total / steps / n)
        if on_epoch is not None:
            on_epoch(epoch, {"elbo_loss": fit.losses[-1], "rows_per_sec": n / seconds,
                             "learning_rate": lr * decay ** (done - 1)})
    fit.seconds = time.perf_counter() - start
    fit.rows_per_sec = n * epochs / fit.seconds
    return fit


@dataclass
class BaselineFit:
    """The deterministic net's weights as a one-sample posterior, with its training history."""

    samples: PosteriorSamples
    losses: list[float]
    rows_per_sec: float


def fit_baseline(
    train: TrainingBatches,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    *,
    epochs: int = 30,
    lr: float = 1e-2,
    seed: int = 0,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> BaselineFit:
    """The seed's baseline: the same MLP, MSE loss, He init, Adam, on the first target."""
    _check_training_args(epochs, lr)
    offset = float(train.y_mean[0])
    spec = BNNSpec(n_features=train.n_features, hidden=tuple(hidden))
    torch.manual_seed(seed)
    inits = initial_values(spec, seed=seed, sigma=[1.0])
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(spec.layer_shapes):
        linear = torch.nn.Linear(fan_in, fan_out)
        with torch.no_grad():  # the same He draw as the Bayesian nets start from
            linear.weight.copy_(inits[f"layer{i}.weight"].T)
            linear.bias.zero_()
        layers += [linear, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    losses, n, start = [], train.n_rows, time.perf_counter()
    for epoch in _progress(range(epochs), progress, "baseline"):
        tick, total = time.perf_counter(), 0.0
        for x, y in train.epoch(epoch):
            optim.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y[:, :1] - offset)
            loss.backward()
            optim.step()
            total += loss.item() * len(x)
        losses.append(total / n)
        if on_epoch is not None:
            on_epoch(epoch, {"mse": losses[-1], "rows_per_sec": n / (time.perf_counter() - tick)})
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.detach().T.contiguous()[None] for m in linears]
    biases = [m.bias.detach().clone()[None] for m in linears]
    biases[-1] = biases[-1] + offset
    samples = PosteriorSamples(weights=weights, biases=biases)
    return BaselineFit(samples=samples, losses=losses, rows_per_sec=n * epochs / (time.perf_counter() - start))


def sample_posterior(fit: SVIFit, n_samples: int = 1000, *, seed: int = 0) -> PosteriorSamples:
    """Draw `n_samples` weight sets from the fitted guide (one vectorised guide call)."""
    import pyro
    from pyro.infer import Predictive

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        draws = Predictive(fit.guide, num_samples=n_samples, parallel=True)()
    return collapse_draws(draws, fit.spec, y_offset=float(fit.y_offset[0]))

