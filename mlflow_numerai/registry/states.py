"""The upload states of Numerai's model uploads: the transition table and the state machine.

`Pending -> Running -> Validating -> Success`, or `Error` (the validator broke) / `Failed` (the
model's fault) with a reason code, from any state that is not final. Every transition is
timestamped and kept; an optional callback records each one as it happens (`registry.versions`
writes them onto a model version). Imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

PENDING, RUNNING, VALIDATING, SUCCESS, FAILED, ERROR = (
    "Pending", "Running", "Validating", "Success", "Failed", "Error",
)
STATES = (PENDING, RUNNING, VALIDATING, SUCCESS, FAILED, ERROR)
FINAL = frozenset({SUCCESS, FAILED, ERROR})
LIVE = frozenset({PENDING, RUNNING, VALIDATING})  # held by a running validator
ALLOWED: dict[str | None, frozenset[str]] = {
    None: frozenset({PENDING}),
    PENDING: frozenset({RUNNING, FAILED, ERROR}),
    RUNNING: frozenset({VALIDATING, FAILED, ERROR}),
    VALIDATING: frozenset({SUCCESS, FAILED, ERROR}),
}
# Reason codes of `Failed` (the model's fault); `Error` uses `validator`, `runtime`, `interrupted`
# or `validator_lost` (the validator died and a reader corrected its state).
FAILED_REASONS = (
    "unpickle", "python_mismatch", "import", "signature", "exception", "oom", "timeout", "network",
    "crash", "invalid_output:<check>",
)
EXIT_CODES = {SUCCESS: 0, FAILED: 1, ERROR: 2}
LOST_REASON = "validator_lost"  # the reason of the Error a reader writes for a dead validator


class TransitionError(ValueError):
    """A transition the state machine does not allow."""


def utc_now() -> str:
    """Now, ISO 8601 in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Transition:
    """One entry of the history."""

    state: str
    time: str
    reason: str | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return {"state": self.state, "time": self.time, "reason": self.reason, "message": self.message}


class UploadStateMachine:
    """Moves through the upload states, calling `on_transition(transition, history)` on each."""

    def __init__(self, on_transition: Callable[[Transition, list[Transition]], None] | None = None):
        self.history: list[Transition] = []
        self.on_transition = on_transition

    @property
    def state(self) -> str | None:
        return self.history[-1].state if self.history else None

    @property
    def reason(self) -> str | None:
        return self.history[-1].reason if self.history else None

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def to(self, state: str, reason: str | None = None, message: str = "") -> Transition:
        """Move to `state`; Failed and Error need a reason, the others take none."""
        if state not in STATES:
            raise TransitionError(f"unknown upload state {state!r}; states are {STATES}")
        if state not in ALLOWED.get(self.state, frozenset()):
            raise TransitionError(f"upload state cannot go from {self.state} to {state}")
        if state in (FAILED, ERROR) and not reason:
            raise TransitionError(f"{state} needs a reason code")
        if state not in (FAILED, ERROR) and reason:
            raise TransitionError(f"{state} takes no reason code (got {reason!r})")
        transition = Transition(state, utc_now(), reason, message)
        self.history.append(transition)
        if self.on_transition is not None:
            self.on_transition(transition, list(self.history))
        return transition

    def history_dicts(self) -> list[dict]:
        return [t.to_dict() for t in self.history]
