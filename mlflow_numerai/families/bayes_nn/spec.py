"""What one Bayesian MLP is: `BNNSpec` (input width, hidden sizes, weight prior, target model).

`TARGET_MODELS` maps each target model (single, H1-H4) to its target columns; `parse_hidden`
reads hidden sizes ("128-64-64", "none", a sequence); the check functions raise a ValueError
listing the choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow_numerai.families.bayes_nn.priors import check_prior

DEFAULT_HIDDEN: tuple[int, ...] = (128, 64, 64)
MAX_HIDDEN_LAYERS = 3

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
        scale = self.prior_scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
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

