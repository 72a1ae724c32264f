"""Bayesian MLP for Numerai (seed 002): weight priors, SVI, posterior samples, batched predictive.

Maths only, no MLflow. The pieces, in the order they are used:

- `BNNSpec` names one model: hidden sizes (0-3 layers), weight prior, target model (H1-H4).
- `bnn_model` (the generative model) and `bnn_guide` (mean-field `AutoNormal`) are kept apart;
  `fit_svi` is the short SVI loop (Trace_ELBO, minibatches scaled to the data size by the
  subsampled `pyro.plate`). `fit_baseline` is the seed's non-Bayesian net (MSE, He init, Adam 1e-2).
- `sample_posterior` draws S weight sets; `iter_predictive` runs them on many rows with batched
  matrix products (one GEMM for the first layer, `torch.baddbmm` after) in cache-sized tiles,
  yielding blocks whose size is set by a memory budget, so S x N predictions never exist at once
  unless they fit.
- `make_predict` builds the Numerai `predict` closure from K stored samples as numpy arrays: it
  needs neither Pyro nor torch to load or run.

Prior choices: `uniform` is improper and flat (`pyro.distributions.ImproperUniform` over the reals:
log density 0, no sampling; the guide is initialised explicitly so nothing samples it); `normal`
is N(0, sqrt(2 / fan_in)) (He); `laplace` has scale sqrt(1 / fan_in) so that its variance equals
He's. Biases and the H4 coupling get the same family with scale 1. The observation noise sigma is
learned as a latent with a HalfNormal(1) prior (the same for every weight prior).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import torch

PRIORS: tuple[str, ...] = ("uniform", "normal", "laplace")
DEFAULT_HIDDEN: tuple[int, ...] = (128, 64, 64)
MAX_HIDDEN_LAYERS = 3
BIAS_PRIOR_SCALE = 1.0

# Target model -> target columns; the first column is the one scored (`target`, i.e. nomi 20d).
# single: one target. h1: nomi/janet/george are samples of one distribution (one mean, one sigma).
# h2: separate distributions, means from one latent (the starter's multi-output head).
# h3: 20-day and 60-day targets, means from one latent. h4: the 60-day mean feeds the 20-day mean.
TARGET_MODELS: dict[str, tuple[str, ...]] = {
    "single": ("target",),
    "h1": ("target", "target_janet_20", "target_george_20"),
    "h2": ("target", "target_janet_20", "target_george_20"),
    "h3": ("target", "target_nomi_60"),
    "h4": ("target", "target_nomi_60"),
}

FLOAT_BYTES = 4
DEFAULT_BUDGET_BYTES = 512 * 2**20
PREDICT_BUDGET_BYTES = 256 * 2**20
# One tile's activations: small enough to stay in this class of CPU's L2/L3 cache.
TILE_BYTES = 8 * 2**20
# A yielded block of float32 predictions plus the float64 copy and square its consumers make.
BLOCK_BYTES_PER_CELL = FLOAT_BYTES + 2 * 8


# ----------------------------------------------------------------------------------------------
# Specification and validation
# ----------------------------------------------------------------------------------------------


def check_prior(prior: str) -> str:
    """`prior` if it is one of PRIORS, else a ValueError listing the choices."""
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; choose one of {list(PRIORS)}")
    return prior


def check_target_model(target_model: str) -> str:
    """`target_model` if known, else a ValueError listing the choices."""
    if target_model not in TARGET_MODELS:
        raise ValueError(f"unknown target_model {target_model!r}; choose one of {list(TARGET_MODELS)}")
    return target_model


def parse_hidden(hidden: str | Sequence[int]) -> tuple[int, ...]:
    """Hidden sizes from "128-64-64", "128,64", "" / "none" (no hidden layer) or a sequence."""
    if isinstance(hidden, str):
        text = hidden.strip().lower()
        parts = [] if text in ("", "none", "0", "()") else text.replace(",", "-").split("-")
        try:
            sizes = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"hidden sizes must look like '128-64-64' (or 'none'), got {hidden!r}") from None
    else:
        sizes = tuple(int(s) for s in hidden)
    if len(sizes) > MAX_HIDDEN_LAYERS:
        raise ValueError(f"hidden sizes: at most {MAX_HIDDEN_LAYERS} hidden layers, got {len(sizes)} ({hidden!r})")
    if any(s < 1 for s in sizes):
        raise ValueError(f"hidden sizes must be positive integers, got {hidden!r}")
    return sizes


@dataclass(frozen=True)
class BNNSpec:
    """One Bayesian MLP: input width, hidden sizes, weight prior and target model."""

    n_features: int
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    prior: str = "normal"
    target_model: str = "single"
    prior_scale: float = 1.0  # weight prior standard deviation, in units of He's sqrt(2 / fan_in)

    def __post_init__(self) -> None:
        if int(self.n_features) < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        if not (isinstance(self.prior_scale, (int, float)) and math.isfinite(self.prior_scale) and self.prior_scale > 0):
            raise ValueError(f"prior_scale must be a finite number > 0, got {self.prior_scale!r}")
        object.__setattr__(self, "hidden", parse_hidden(self.hidden))
        check_prior(self.prior)
        check_target_model(self.target_model)

    @property
    def targets(self) -> tuple[str, ...]:
        return TARGET_MODELS[self.target_model]

    @property
    def n_outputs(self) -> int:
        """Width of the network's last layer (H1 has one mean for all its targets)."""
        return 1 if self.target_model == "h1" else len(self.targets)

    @property
    def n_sigma(self) -> int:
        """Number of learned noise scales (H1 shares one)."""
        return 1 if self.target_model == "h1" else len(self.targets)

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        widths = [int(self.n_features), *self.hidden, self.n_outputs]
        return list(zip(widths[:-1], widths[1:]))


# ----------------------------------------------------------------------------------------------
# Data preparation
# ----------------------------------------------------------------------------------------------


def feature_matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Features selected by name, int 0..4 (NaN -> 2) scaled to float32 in [-0.5, 0.5]."""
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise KeyError(f"feature column(s) missing from the input: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    values = frame[list(features)].to_numpy(dtype=np.float32, na_value=2.0)
    return values / 4.0 - 0.5


def drop_nan_targets(frame: pd.DataFrame, targets: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """`frame` without rows where any of `targets` is NaN, and how many rows that dropped."""
    missing = [c for c in targets if c not in frame.columns]
    if missing:
        raise KeyError(f"target column(s) missing from the data: {missing}")
    keep = frame[list(targets)].notna().all(axis=1).to_numpy()
    return frame.loc[keep], int((~keep).sum())


# ----------------------------------------------------------------------------------------------
# Priors, model and guide
# ----------------------------------------------------------------------------------------------


def he_scale(fan_in: int) -> float:
    """He (Kaiming) standard deviation for a ReLU layer with `fan_in` inputs."""
    return math.sqrt(2.0 / fan_in)


def weight_prior(prior: str, shape: tuple[int, ...], scale: float):
    """The prior over one weight tensor of `shape`, matched to standard deviation `scale`."""
    import pyro.distributions as dist

    if prior == "uniform":
        return dist.ImproperUniform(dist.constraints.real, (), shape)
    loc = torch.zeros(shape)
    if prior == "normal":
        return dist.Normal(loc, scale).to_event(len(shape))
    return dist.Laplace(loc, scale / math.sqrt(2.0)).to_event(len(shape))  # Var = 2 b^2 = scale^2


def head_means(out: torch.Tensor, spec: BNNSpec) -> torch.Tensor:
    """Per-target means (n, n_targets) from the last layer's output (n, n_outputs)."""
    import pyro

    if spec.target_model == "h1":
        return out.expand(-1, len(spec.targets))
    if spec.target_model == "h4":
        beta = pyro.sample("h4.beta", weight_prior(spec.prior, (1,), BIAS_PRIOR_SCALE))
        mean_60 = out[:, 1:2]
        return torch.cat([out[:, 0:1] + beta * mean_60, mean_60], dim=1)
    return out


def bnn_model(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    subsample: torch.Tensor | None = None,
    *,
    spec: BNNSpec,
    n_rows: int | None = None,
) -> torch.Tensor:
    """y ~ Normal(MLP_w(x), sigma) with w ~ prior; `subsample` are the row indices of a minibatch
    out of `n_rows`, so the likelihood is scaled by n_rows / batch size."""
    import pyro
    import pyro.distributions as dist

    h = x
    last = len(spec.layer_shapes) - 1
    for i, (fan_in, fan_out) in enumerate(spec.layer_shapes):
        scale = spec.prior_scale * he_scale(fan_in)
        w = pyro.sample(f"layer{i}.weight", weight_prior(spec.prior, (fan_in, fan_out), scale))
        b = pyro.sample(f"layer{i}.bias", weight_prior(spec.prior, (fan_out,), BIAS_PRIOR_SCALE))
        h = h @ w + b
        if i < last:
            h = torch.relu(h)
    means = head_means(h, spec)
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones(spec.n_sigma)).to_event(1))
    with pyro.plate("data", size=n_rows or x.shape[0], subsample=subsample):
        pyro.sample("obs", dist.Normal(means, sigma.expand(len(spec.targets))).to_event(1), obs=y)
    return means


def initial_values(spec: BNNSpec, *, seed: int, sigma: Sequence[float]) -> dict[str, torch.Tensor]:
    """Starting point shared by every prior and the baseline: He-normal weights, zero biases."""
    gen = torch.Generator().manual_seed(seed)
    values: dict[str, torch.Tensor] = {}
    for i, (fan_in, fan_out) in enumerate(spec.layer_shapes):
        values[f"layer{i}.weight"] = torch.randn(fan_in, fan_out, generator=gen) * he_scale(fan_in)
        values[f"layer{i}.bias"] = torch.zeros(fan_out)
    values["h4.beta"] = torch.zeros(1)
    values["sigma"] = torch.as_tensor(np.asarray(sigma, dtype=np.float32)).clamp_min(1e-3)
    return values


def bnn_guide(model: Callable, spec: BNNSpec, *, seed: int, sigma: Sequence[float], init_scale: float = 0.01,
              zero_output: bool = False):
    """Mean-field Gaussian guide (`AutoNormal`) started at the He initialisation; with
    `zero_output` the output layer's weights start at 0 (the net starts as the constant mean: a
    random function of the He draw is larger than the weak signal and takes steps to unlearn).

    A small `init_scale` keeps early samples near that start; the default 0.1 would swamp the
    He scale of the wider layers."""
    from pyro.infer.autoguide import AutoNormal

    inits = initial_values(spec, seed=seed, sigma=sigma)
    if zero_output:
        last = len(spec.layer_shapes) - 1
        inits[f"layer{last}.weight"] = torch.zeros_like(inits[f"layer{last}.weight"])
    return AutoNormal(model, init_loc_fn=lambda site: inits[site["name"]], init_scale=init_scale)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass
class SVIFit:
    """A trained guide with what is needed to sample from it."""

    spec: BNNSpec
    guide: Callable
    y_offset: np.ndarray  # training mean of each target (the model sees centred targets)
    losses: list[float] = field(default_factory=list)  # per epoch: mean -ELBO per training row
    rows_per_sec: float = float("nan")
    seconds: float = float("nan")


@dataclass
class TrainingBatches:
    """Minibatches for `fit_svi` / `fit_baseline`: `epoch(e)` yields `(x, y)` float32 tensors,
    x in [-0.5, 0.5] (as `feature_matrix`), y the raw targets (rows x targets, no NaN); with
    the number of rows and the targets' mean (the nets learn centred targets) and std."""

    n_rows: int
    n_features: int
    y_mean: np.ndarray  # per target
    y_std: np.ndarray  # per target, of the centred targets
    y_std_pooled: float  # all centred targets together (H1's one sigma)
    epoch: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]] = field(repr=False)
    batch_size: int = 0  # rows per minibatch (0: unknown), for step-based learning-rate schedules


def _target_stats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, std, pooled std) of the targets (rows x targets), which must be NaN-free."""
    if np.isnan(y).any():
        raise ValueError("targets contain NaN: drop those rows first (drop_nan_targets)")
    mean = y.mean(axis=0, dtype=np.float64)
    centred = y - mean
    return mean.astype(np.float32), centred.std(axis=0).astype(np.float32), float(centred.std())


def array_batches(x: np.ndarray, y: np.ndarray, *, batch_size: int = 4096, seed: int = 0) -> TrainingBatches:
    """Shuffled minibatches of in-memory arrays (every row once per epoch, a new order each
    epoch, repeatable for a seed)."""
    y = np.asarray(y, dtype=np.float32)
    y = y[:, None] if y.ndim == 1 else y
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("no training rows")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mean, std, pooled = _target_stats(y)
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y)

    def epoch(e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + e)
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            yield xt[idx], yt[idx]

    return TrainingBatches(len(xt), xt.shape[1], mean, std, pooled, epoch, batch_size=int(batch_size))


def stream_batches(stream) -> TrainingBatches:
    """Minibatches from a `BatchStream` over an era-sharded cache (data/stream.py): shuffled,
    prefetched, never the whole training set in memory. The cache has already left out rows
    with a NaN target; its features (0..1) are shifted to [-0.5, 0.5]."""
    from mlflow_numerai.data.stream import torch_batches

    mean, std, pooled = _target_stats(np.asarray(stream.targets()))

    def epoch(e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in torch_batches(stream, e):
            yield x - 0.5, y

    return TrainingBatches(stream.n_rows, stream.cache.n_features, mean, std, pooled, epoch,
                           batch_size=int(stream.batch_size))


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
    epochs: int = 30,
    lr: float = 1e-3,
    seed: int = 0,
    init_scale: float = 0.01,
    final_lr_fraction: float = 1.0,
    zero_output: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> SVIFit:
    """Fit the mean-field posterior by SVI (Trace_ELBO, Adam) on the minibatches of `train`.

    The learning rate decays geometrically from `lr` to `lr * final_lr_fraction` at the last
    step (1: constant). `zero_output`: see `bnn_guide`. `train` has one target column per target of `spec.target_model`.
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


# ----------------------------------------------------------------------------------------------
# Posterior samples and the batched predictive
# ----------------------------------------------------------------------------------------------


@dataclass
class PosteriorSamples:
    """S weight sets of an MLP with one output (the mean of `target`): weights[i] is (S, in, out),
    biases[i] is (S, out). Multi-target heads are already folded into the last layer."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]

    @property
    def n_samples(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def widths(self) -> list[int]:
        return [int(self.weights[0].shape[1])] + [int(w.shape[2]) for w in self.weights]

    def slice(self, start: int, stop: int) -> PosteriorSamples:
        """Samples start..stop-1 (views)."""
        return PosteriorSamples([w[start:stop] for w in self.weights], [b[start:stop] for b in self.biases])

    def head(self, k: int) -> PosteriorSamples:
        """The first `k` samples."""
        return self.slice(0, k)

    def numpy(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Contiguous float32 numpy copies (what the predict closure stores)."""
        to_np = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)  # noqa: E731
        return [to_np(w) for w in self.weights], [to_np(b) for b in self.biases]


def target_readout(draws: dict[str, torch.Tensor], spec: BNNSpec, n_samples: int) -> torch.Tensor:
    """(S, n_outputs) coefficients c with mean(target) = last-layer output @ c."""
    c = torch.zeros(n_samples, spec.n_outputs)
    c[:, 0] = 1.0
    if spec.target_model == "h4":
        c[:, 1] = draws["h4.beta"].reshape(n_samples)
    return c


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


def collapse_draws(draws: dict[str, torch.Tensor], spec: BNNSpec, *, y_offset: float = 0.0) -> PosteriorSamples:
    """Weight sets from guide draws (site -> (S, *shape)), with the heads folded into a last
    layer whose one output is the mean of `target` (plus the training mean `y_offset`)."""
    n_samples = int(draws["layer0.weight"].shape[0])
    weights = [draws[f"layer{i}.weight"].reshape(n_samples, *shape) for i, shape in enumerate(spec.layer_shapes)]
    biases = [draws[f"layer{i}.bias"].reshape(n_samples, shape[1]) for i, shape in enumerate(spec.layer_shapes)]
    c = target_readout(draws, spec, n_samples)
    weights[-1] = torch.einsum("sio,so->si", weights[-1], c).unsqueeze(-1)
    biases[-1] = (biases[-1] * c).sum(dim=1, keepdim=True) + y_offset
    return PosteriorSamples([w.detach().contiguous() for w in weights], [b.detach().contiguous() for b in biases])


def _forward_tile(x: torch.Tensor, samples: PosteriorSamples) -> torch.Tensor:
    """Predictions (n, S) of every weight set on rows `x` (n, F): the first layer is one GEMM
    against all S weight matrices side by side, the next ones batched (`baddbmm`)."""
    w0, b0 = samples.weights[0], samples.biases[0]
    s, n_in, width = w0.shape
    n = x.shape[0]
    h = torch.addmm(b0.reshape(1, s * width), x, w0.permute(1, 0, 2).reshape(n_in, s * width))
    if len(samples.weights) == 1:
        return h  # width is 1: (n, S)
    h = h.relu_().view(n, s, width).transpose(0, 1)  # (S, n, width), a view
    last = len(samples.weights) - 1
    for i in range(1, last + 1):
        h = torch.baddbmm(samples.biases[i].unsqueeze(1), h, samples.weights[i])
        if i < last:
            h.relu_()
    return h.squeeze(-1).T


def activation_bytes_per_cell(widths: Sequence[int]) -> int:
    """Bytes one (row, sample) pair costs inside `_forward_tile`: the hidden activations."""
    return FLOAT_BYTES * (sum(widths[1:]) + 1)


def tile_shape(n_rows: int, n_samples: int, widths: Sequence[int], tile_bytes: int = TILE_BYTES) -> tuple[int, int]:
    """(rows, samples) of one tile whose activations fit in `tile_bytes`: at most 1024 rows,
    as many samples as then fit."""
    cells = max(1, tile_bytes // activation_bytes_per_cell(widths))
    rows = max(1, min(n_rows, 1024, cells))
    return rows, max(1, min(n_samples, cells // rows))


def batched_forward(x: torch.Tensor, samples: PosteriorSamples, *, tile_bytes: int = TILE_BYTES) -> torch.Tensor:
    """Predictions (n, S) of every weight set on rows `x` (n, F), computed tile by tile so
    the activations of a tile stay in the CPU cache: one huge batched product streams them
    through memory and runs at a third of the matmul peak, cache-sized tiles at most of it
    (benchmarks/README.md)."""
    n, s = x.shape[0], samples.n_samples
    rows, k = tile_shape(n, s, samples.widths, tile_bytes)
    if rows >= n and k >= s:
        return _forward_tile(x, samples)
    out = torch.empty(n, s, dtype=x.dtype)
    for s0 in range(0, s, k):
        part = samples.slice(s0, s0 + k)
        for a in range(0, n, rows):
            out[a : a + rows, s0 : s0 + k] = _forward_tile(x[a : a + rows], part)
    return out


def plan_chunks(n_rows: int, n_samples: int, budget_bytes: int) -> tuple[int, int]:
    """(rows per block, samples per block) so one block of predictions, with the float64
    copies its consumers make, stays within `budget_bytes`; all samples at once when that
    leaves at least 1024 rows (or all rows) per block."""
    if budget_bytes <= 0:
        raise ValueError(f"memory budget must be positive, got {budget_bytes} bytes")
    cells = max(1, budget_bytes // BLOCK_BYTES_PER_CELL)
    min_rows = max(1, min(n_rows, 1024))
    sample_chunk = max(1, min(n_samples, cells // min_rows))
    row_chunk = max(1, min(n_rows, cells // sample_chunk))
    return row_chunk, sample_chunk


def _row_blocks(n_rows: int, row_chunk: int, bounds: Sequence[int] | None) -> list[tuple[int, int]]:
    """Row ranges of about `row_chunk` rows; with `bounds` (group starts, e.g. eras) every
    block holds whole groups (a group larger than `row_chunk` gets a block of its own)."""
    if bounds is None:
        return [(a, min(a + row_chunk, n_rows)) for a in range(0, n_rows, row_chunk)]
    edges = list(bounds) + [n_rows]
    blocks, start = [], edges[0]
    for a, b in zip(edges[:-1], edges[1:]):
        if b - start > row_chunk and a > start:
            blocks.append((start, a))
            start = a
    blocks.append((start, n_rows))
    return blocks


def iter_predictive(
    samples: PosteriorSamples,
    x: np.ndarray | torch.Tensor,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    group_starts: Sequence[int] | None = None,
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Blocks (rows, samples, predictions[rows, samples]) covering all of x x samples, each
    within the memory budget. With `group_starts` a block never splits a group (an era)."""
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x
    n, s = xt.shape[0], samples.n_samples
    row_chunk, sample_chunk = plan_chunks(n, s, budget_bytes)
    if group_starts is not None:
        # whole groups per block: shrink the sample chunk if the largest block is wider
        blocks = _row_blocks(n, row_chunk, group_starts)
        widest = max(b - a for a, b in blocks)
        cells = max(1, budget_bytes // BLOCK_BYTES_PER_CELL)
        sample_chunk = max(1, min(sample_chunk, cells // widest))
    else:
        blocks = _row_blocks(n, row_chunk, None)
    with torch.no_grad():
        for s0 in range(0, s, sample_chunk):
            part = samples.slice(s0, s0 + sample_chunk)
            for a, b in blocks:
                yield slice(a, b), slice(s0, min(s0 + sample_chunk, s)), batched_forward(xt[a:b], part)


def predictive_mean_std(
    samples: PosteriorSamples, x: np.ndarray | torch.Tensor, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation (ddof 0) of the S sample predictions."""
    n = len(x)
    total = torch.zeros(n, dtype=torch.float64)
    total_sq = torch.zeros(n, dtype=torch.float64)
    for rows, _, pred in iter_predictive(samples, x, budget_bytes=budget_bytes):
        p = pred.double()
        total[rows] += p.sum(dim=1)
        total_sq[rows] += (p * p).sum(dim=1)
    mean = total / samples.n_samples
    var = (total_sq / samples.n_samples - mean * mean).clamp_min(0.0)
    return mean.numpy(), var.sqrt().numpy()


# ----------------------------------------------------------------------------------------------
# The Numerai predict closure (numpy only)
# ----------------------------------------------------------------------------------------------


def numpy_forward(x: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray]) -> np.ndarray:
    """Predictions (n, K) of K stored weight sets on rows `x` (n, F), in numpy."""
    k, n_in, width = weights[0].shape
    n = x.shape[0]
    h = x @ weights[0].transpose(1, 0, 2).reshape(n_in, k * width) + biases[0].reshape(1, k * width)
    if len(weights) == 1:
        return h
    h = np.maximum(h, 0.0, out=h).reshape(n, k, width).transpose(1, 0, 2)
    last = len(weights) - 1
    for i in range(1, last + 1):
        h = np.matmul(h, weights[i]) + biases[i][:, None, :]
        if i < last:
            np.maximum(h, 0.0, out=h)
    return h[:, :, 0].T


def make_predict(
    features: Sequence[str],
    samples: PosteriorSamples,
    *,
    k: int = 100,
    budget_bytes: int = PREDICT_BUDGET_BYTES,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The Numerai `predict(live_features)`: the ensemble mean of the first `k` posterior samples,
    ranked to (0, 1]. Stored as numpy arrays; runs with numpy and pandas only.

    `predict.with_params(live_features, return_std=True)` adds `prediction_std` (the predictive
    standard deviation over the K samples, in target units) next to the same `prediction`."""
    if k < 1:
        raise ValueError(f"k (posterior samples kept in the model) must be >= 1, got {k}")
    features = list(features)
    if len(features) != samples.widths[0]:
        raise ValueError(f"{len(features)} feature names for a net with {samples.widths[0]} inputs")
    weights, biases = samples.head(k).numpy()
    n_kept = weights[0].shape[0]
    per_row = FLOAT_BYTES * n_kept * (2 * max(w.shape[2] for w in weights) + 2)
    rows_per_block = max(1, budget_bytes // per_row)

    def predict_with_options(live_features: pd.DataFrame, *, return_std: bool = False) -> pd.DataFrame:
        missing = [c for c in features if c not in live_features.columns]
        if missing:
            raise KeyError(f"live_features lacks feature column(s) {missing[:10]}")
        x = live_features[features].to_numpy(dtype=np.float32, na_value=2.0) / 4.0 - 0.5
        mean = np.empty(len(x), dtype=np.float64)
        std = np.empty(len(x), dtype=np.float64)
        for a in range(0, len(x), rows_per_block):
            pred = numpy_forward(x[a : a + rows_per_block], weights, biases).astype(np.float64)
            mean[a : a + len(pred)] = pred.mean(axis=1)
            std[a : a + len(pred)] = pred.std(axis=1)
        out = pd.DataFrame(
            {"prediction": pd.Series(mean, index=live_features.index).rank(pct=True).to_numpy()},
            index=live_features.index,
        )
        if return_std:
            out["prediction_std"] = std
        return out

    def predict(live_features: pd.DataFrame) -> pd.DataFrame:
        return predict_with_options(live_features)

    predict.with_params = predict_with_options
    predict.features = features
    predict.n_samples = n_kept
    return predict
