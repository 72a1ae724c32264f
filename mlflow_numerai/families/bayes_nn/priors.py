"""The weight priors: their names, how each is scaled, and the distribution over a weight tensor.

`uniform` is improper and flat (`pyro.distributions.ImproperUniform` over the reals: log density
0, no sampling; the guide is initialised explicitly so nothing samples it); `normal` is
N(0, sqrt(2 / fan_in)) (He); `laplace` has scale sqrt(1 / fan_in) so that its variance equals
He's. Biases and the H4 coupling get the same family with scale 1 (`BIAS_PRIOR_SCALE`). Pyro is
imported where a distribution is built.
"""

from __future__ import annotations

import math

import torch

PRIORS: tuple[str, ...] = ("uniform", "normal", "laplace")
BIAS_PRIOR_SCALE = 1.0


def check_prior(prior: str) -> str:
    """`prior` if it is one of PRIORS, else a ValueError listing the choices."""
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; choose one of {list(PRIORS)}")
    return prior


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
