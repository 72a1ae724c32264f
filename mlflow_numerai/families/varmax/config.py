"""What one VARMAX run models and how it searches: `VarmaxConfig`, its checks and the presets.

The choices (`TRANSFORMS`, `CRITERIA`, `TRENDS`), `validate_config` (a ValueError naming the first
bad parameter), `PRESETS` (the seed's macrodata configuration) and `with_overrides`. Imports
nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

TRANSFORMS = ("levels", "log", "diff", "log-diff")
CRITERIA = ("aic", "bic", "hqic", "test_rmse")
TRENDS = ("n", "c", "t", "ct")

# The ten macrodata series that are neither endogenous in the seed nor calendar columns.
_MACRO_EXOG = (
    "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "unemp", "pop", "infl", "realint",
)


@dataclass(frozen=True)
class VarmaxConfig:
    """What to model and how to search: the parameters of one VARMAX training run."""

    endog: tuple[str, ...]
    exog: tuple[str, ...] = ()
    transform: str = "levels"
    test_periods: int = 12
    max_p: int = 2
    max_q: int = 1
    criterion: str = "aic"
    trend: str = "c"
    maxiter: int = 50
    alpha: float = 0.05
    max_horizon: int = 40

    def __post_init__(self) -> None:
        object.__setattr__(self, "endog", tuple(self.endog))
        object.__setattr__(self, "exog", tuple(self.exog))
        validate_config(self)


def validate_config(config: VarmaxConfig) -> None:
    """Raise ValueError naming the first invalid parameter of `config`."""
    if len(config.endog) < 2:
        raise ValueError(f"endog must name at least 2 series for a VARMAX, got {list(config.endog)}")
    if len(set(config.endog)) != len(config.endog) or len(set(config.exog)) != len(config.exog):
        raise ValueError("endog and exog must not repeat a column")
    if overlap := set(config.endog) & set(config.exog):
        raise ValueError(f"columns {sorted(overlap)} are both endog and exog")
    if config.transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {list(TRANSFORMS)}, got {config.transform!r}")
    if config.criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {config.criterion!r}")
    if config.trend not in TRENDS:
        raise ValueError(f"trend must be one of {list(TRENDS)}, got {config.trend!r}")
    for name in ("test_periods", "maxiter", "max_horizon"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("max_p", "max_q"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if config.max_p == 0 and config.max_q == 0:
        raise ValueError("max_p and max_q are both 0: no candidate order besides (0, 0)")
    if not 0 < config.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {config.alpha!r}")


# The seed's configuration: US macro data, endog realgdp + realcons, exog the other ten series.
PRESETS: dict[str, VarmaxConfig] = {
    "macrodata-seed": VarmaxConfig(
        endog=("realgdp", "realcons"),
        exog=_MACRO_EXOG,
        transform="log-diff",
        test_periods=12,
        max_p=2,
        max_q=2,
        criterion="aic",
        trend="c",
        maxiter=50,
    ),
}


def with_overrides(config: VarmaxConfig, **overrides: Any) -> VarmaxConfig:
    """`config` with the given non-None fields replaced (validated again)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
