"""The sandbox's limits and what one run reports.

Owns `SandboxLimits` (Numerai's limits by default: 1 CPU, 4 GiB for the process tree, 600 s, no
network; how each is enforced), `parse_memory`, the outcome of one child run (`SandboxOutcome`)
and `SandboxError` (the sandbox itself could not run). Imports nothing of the package.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

GIB = 1024**3


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not the model's fault)."""


def parse_memory(text: str | int) -> int:
    """Bytes from '4GiB', '512MiB', '4G', '4096M' or a plain number of bytes."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"memory must be positive, got {text}")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*", str(text), flags=re.I)
    if not match:
        raise ValueError(f"memory must look like '4GiB', '512MiB' or a number of bytes, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    value = int(number * 1024 ** "BKMGT".index(unit or "B"))
    if value <= 0:
        raise ValueError(f"memory must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class SandboxLimits:
    """Numerai's limits by default: 1 CPU, 4 GiB for the process tree, 600 s, no network."""

    cpus: int = 1
    memory_bytes: int = 4 * GIB
    timeout_seconds: float = 600.0
    network: str = "auto"  # auto | namespace | guard
    memory_enforcement: str = "auto"  # auto | cgroup | rlimit
    sample_interval: float = 0.02
    isolation: str = "auto"  # auto (bwrap, else fallback) | strict (bwrap or refuse) | fallback

    def __post_init__(self):
        if not isinstance(self.cpus, int) or self.cpus < 1:
            raise ValueError(f"cpus must be an integer >= 1, got {self.cpus!r}")
        if self.cpus > len(os.sched_getaffinity(0)):
            raise ValueError(f"cpus={self.cpus} but only {len(os.sched_getaffinity(0))} CPU(s) are available")
        if not self.memory_bytes or self.memory_bytes < 64 * 1024**2:
            raise ValueError(f"memory must be at least 64MiB, got {self.memory_bytes} bytes")
        if not self.timeout_seconds or self.timeout_seconds <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout_seconds!r}")
        if self.network not in ("auto", "namespace", "guard"):
            raise ValueError(f"network must be auto, namespace or guard, got {self.network!r}")
        if self.memory_enforcement not in ("auto", "cgroup", "rlimit"):
            raise ValueError(f"memory_enforcement must be auto, cgroup or rlimit, got {self.memory_enforcement!r}")
        if self.isolation not in ("auto", "strict", "fallback"):
            raise ValueError(f"isolation must be auto, strict or fallback, got {self.isolation!r}")


@dataclass
class SandboxOutcome:
    """What happened in one child run. `status` is ok | failed (the model) | error (the sandbox)."""

    status: str
    reason: str | None
    message: str
    stage: str
    predictions_csv: str | None  # a copy outside the private directory, or None
    log: str
    exit_code: int | None
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    peak_rss_bytes: int
    network_isolation: str
    memory_enforcement: str
    network_attempts: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    stragglers_killed: int = 0
    traceback: str | None = None
    isolation: str = "guard"  # bwrap | namespaces | guard
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("log")
        return data

