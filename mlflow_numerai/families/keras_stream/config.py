"""The hyper-parameters of the streamed Keras MLP: `KerasStreamConfig`, checked on construction.

Each bad value raises a ValueError naming the field. numpy only (no Keras).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class KerasStreamConfig:
    """Hyper-parameters of the streamed MLP (the seed's 128-64-64 NN starter; budget, learning
    rate and schedule chosen by the study in benchmarks/README.md, "Families that learn")."""

    hidden: tuple[int, ...] = (128, 64, 64)
    dropout: float = 0.0
    noise: float = 0.0
    epochs: int = 10  # the budget: at most this many epochs (early stopping may end sooner)
    batch_size: int = 1024
    learning_rate: float = 3e-3  # peak rate, reached after the warm-up
    lr_schedule: str = "cosine"  # cosine: warm-up then cosine decay to 1 % over the budget
    warmup_epochs: float = 1.0
    patience: int = 3  # epochs without a better validation corr before stopping (0: never stop)
    weight_decay: float = 2.0  # AdamW's decoupled decay of the kernels (0: plain Adam)
    window: int = 131072
    prefetch: int = 4
    threads: int = 1  # training leaves little CPU idle: one loader thread contends least
    seed: int = 0

    def __post_init__(self) -> None:
        hidden = tuple(self.hidden)
        if any(not isinstance(h, (int, np.integer)) or isinstance(h, bool) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be positive integers, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.noise >= 0.0:
            raise ValueError(f"noise must be >= 0, got {self.noise!r}")
        if not self.learning_rate > 0.0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not self.warmup_epochs >= 0.0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if not isinstance(self.patience, (int, np.integer)) or isinstance(self.patience, bool) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {self.patience!r}")
        for name in ("epochs", "batch_size", "window", "prefetch", "threads"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

