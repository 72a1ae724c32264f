"""The generative model and the guide, Pyro-examples style: `bnn_model` and `bnn_guide`.

`bnn_model` is y ~ Normal(MLP_w(x), sigma) with w drawn from the spec's prior and sigma a latent
with a HalfNormal(1) prior; `head_means` turns the last layer into per-target means (H1 shares
one mean, H4 couples the 60-day mean into the 20-day one). `bnn_guide` is the mean-field
`AutoNormal` started at `initial_values` (He-normal weights, zero biases). Pyro is imported where
it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter

import numpy as np
import torch

from mlflow_numerai.families.bayes_nn.priors import BIAS_PRIOR_SCALE, he_scale, weight_prior
from mlflow_numerai.families.bayes_nn.spec import BNNSpec

SITE_INIT_SCALE = 0.01  # the guide's initial std of the sites other than weights


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


def bnn_guide(model: Callable, spec: BNNSpec, *, seed: int, sigma: Sequence[float], init_scale: float = 0.05,
              zero_output: bool = True):
    """Mean-field Gaussian guide (`AutoNormal`) started at the He initialisation; with
    `zero_output` the output layer's weights start at 0 (the net starts as the constant mean: a
    random function of the He draw is larger than the weak signal and takes steps to unlearn).

    Each weight's initial std is `init_scale` times its layer's He std, so the members start
    equally diverse whatever the layer widths (an absolute std is a few percent of a narrow
    layer's weights, members near-copies that the short SVI budget cannot spread, and a large
    share of a wide layer's, noise that swamps the signal). Biases, sigma and H4's beta start at
    `SITE_INIT_SCALE`."""
    from pyro.infer.autoguide import AutoNormal
    from pyro.infer.autoguide.utils import deep_setattr
    from pyro.nn.module import PyroParam

    inits = initial_values(spec, seed=seed, sigma=sigma)
    if zero_output:
        last = len(spec.layer_shapes) - 1
        inits[f"layer{last}.weight"] = torch.zeros_like(inits[f"layer{last}.weight"])
    weight_scales = {f"layer{i}.weight": init_scale * he_scale(fan_in)
                     for i, (fan_in, _) in enumerate(spec.layer_shapes)}

    class LayerScaledAutoNormal(AutoNormal):
        def _setup_prototype(self, *args, **kwargs):
            super()._setup_prototype(*args, **kwargs)
            for name, scale in weight_scales.items():
                loc = attrgetter(name)(self.locs).detach()
                deep_setattr(self.scales, name,
                             PyroParam(torch.full_like(loc, scale), self.scale_constraint, self._event_dims[name]))

    return LayerScaledAutoNormal(model, init_loc_fn=lambda site: inits[site["name"]], init_scale=SITE_INIT_SCALE)
