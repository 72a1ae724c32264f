"""Model versions in the registry: `models:/` URIs, upload-state tags and lost validators.

Resolves `models:/name/version|latest` and `models:/name@alias` URIs; reads a version's upload
history and state from its tags; `RegistryRecorder` writes each upload transition onto a version
as it happens (history first, then reason, message and state; a `Failed`/`Error` takes back the
aliases a promotion put there).

No false state: a validation records its holder (`numerai.upload_holder`: host, boot id, pid and
its start time, the flow's start and limit in seconds). A reader (`upload_state`, the gates of
`promote`, the deployments target, the dashboard, the next validation) that finds a
`Pending`/`Running`/`Validating` state older than limit + grace (30 s, `MLFLOW_NUMERAI_LOST_GRACE`)
whose holder process is gone writes `Error` with reason `validator_lost` once (`correct_lost`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

from mlflow_numerai.conventions import (
    LOST_GRACE_ENV,
    UPLOAD_HISTORY_TAG,
    UPLOAD_HOLDER_TAG,
    UPLOAD_MESSAGE_TAG,
    UPLOAD_REASON_TAG,
    UPLOAD_STATE_TAG,
    VALIDATION_RUN_TAG,
)
from mlflow_numerai.registry.aliases import revoke_aliases
from mlflow_numerai.registry.states import ERROR, FAILED, LIVE, LOST_REASON, Transition, utc_now
from mlflow_numerai.registry.store import RegistryError, get_client, retrying

DEFAULT_LOST_GRACE = 30.0
MAX_HISTORY = 500  # entries kept in the tag (the validation runs keep theirs as artifacts)
MAX_TAG_CHARS = 90_000

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[^/]+))/?$")


# ----------------------------------------------------------------------------- models:/ URIs
def parse_models_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, version, alias) of a `models:/name/version` or `models:/name@alias` URI, else None."""
    match = _URI.match(uri)
    if not match:
        return None
    return match.group("name"), match.group("version"), match.group("alias")


def resolve_model_version(uri: str, client=None) -> tuple[str, str] | None:
    """(name, version) a registry URI points at now; None for other URIs; RegistryError if missing."""
    parsed = parse_models_uri(uri)
    if parsed is None:
        return None
    from mlflow.exceptions import MlflowException

    name, version, alias = parsed
    client = get_client(client)
    try:
        if alias is not None:
            return name, str(client.get_model_version_by_alias(name, alias).version)
        if version == "latest":
            return name, latest_version(name, client)
        return name, str(client.get_model_version(name, version).version)
    except MlflowException as exc:
        raise RegistryError(f"{uri!r} does not resolve to a registered model version: {exc.message}") from exc


def latest_version(name: str, client=None) -> str:
    """The highest version number of registered model `name`; RegistryError if it has none."""
    from mlflow.exceptions import MlflowException

    client = get_client(client)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise RegistryError(f"cannot list the versions of {name!r}: {exc.message}") from exc
    if not versions:
        raise RegistryError(f"registered model {name!r} has no versions")
    return str(max(int(v.version) for v in versions))


# ----------------------------------------------------------------------------- upload states
def upload_history(name: str, version: str | int, client=None) -> list[dict]:
    """The recorded upload transitions of a model version, oldest first."""
    tags = get_client(client).get_model_version(name, str(version)).tags
    try:
        history = json.loads(tags.get(UPLOAD_HISTORY_TAG, "[]"))
    except ValueError:
        return []
    return history if isinstance(history, list) else []


def upload_state(name: str, version: str | int, client=None) -> dict:
    """{state, reason, message, history, validation_run_id} of a model version (state None if never
    validated). A state whose validator is lost is corrected to Error (`validator_lost`) first."""
    client = get_client(client)
    tags = client.get_model_version(name, str(version)).tags
    if correct_lost(name, version, client, tags=tags):
        tags = client.get_model_version(name, str(version)).tags
    try:
        history = json.loads(tags.get(UPLOAD_HISTORY_TAG, "[]"))
    except ValueError:
        history = []
    return {
        "state": tags.get(UPLOAD_STATE_TAG),
        "reason": tags.get(UPLOAD_REASON_TAG) or None,
        "message": tags.get(UPLOAD_MESSAGE_TAG, ""),
        "history": history,
        "validation_run_id": tags.get(VALIDATION_RUN_TAG),
    }


def _history_json(history: list[dict]) -> str:
    history = history[-MAX_HISTORY:]
    text = json.dumps(history)
    while len(text) > MAX_TAG_CHARS and len(history) > 1:
        history = history[len(history) // 4 or 1:]
        text = json.dumps(history)
    return text


class RegistryRecorder:
    """Writes each upload transition of one validation onto a model version, as it happens."""

    def __init__(self, name: str, version: str | int, client=None):
        self.name, self.version = name, str(version)
        self.client = get_client(client)
        self.recorded: list[dict] = []  # the version's whole history after our last write

    def full_history(self, history: list[Transition] | None = None) -> list[dict]:
        """The version's history as last written (other validations' entries included)."""
        return list(self.recorded)

    def __call__(self, transition: Transition, history: list[Transition]) -> None:
        def set_tag(*args):
            retrying(self.client.set_model_version_tag, *args)

        # Re-read and append (not overwrite), so concurrent validations of one version keep
        # each other's entries.
        self.recorded = upload_history(self.name, self.version, self.client) + [transition.to_dict()]
        # history first, so a reader that sees the new state also sees its entry
        set_tag(self.name, self.version, UPLOAD_HISTORY_TAG, _history_json(self.recorded))
        set_tag(self.name, self.version, UPLOAD_REASON_TAG, transition.reason or "")
        set_tag(self.name, self.version, UPLOAD_MESSAGE_TAG, (transition.message or "")[:4000])
        set_tag(self.name, self.version, UPLOAD_STATE_TAG, transition.state)
        if transition.state in (FAILED, ERROR):
            revoke_aliases(self.name, self.version, self.client,
                           why=f"version {self.version} is {transition.state} ({transition.reason})")

    def hold(self, holder: dict) -> None:
        """Record who holds the version's next live state (see `holder_record`)."""
        retrying(self.client.set_model_version_tag, self.name, self.version, UPLOAD_HOLDER_TAG, json.dumps(holder))

    def link_run(self, run_id: str) -> None:
        retrying(self.client.set_model_version_tag, self.name, self.version, VALIDATION_RUN_TAG, run_id)


# ----------------------------------------------------------------------------- lost validators
def clock() -> float:
    """Now, epoch seconds (a function so tests can move time on)."""
    return time.time()


def lost_grace() -> float:
    """Seconds past a holder's limit before its state may be called lost (`MLFLOW_NUMERAI_LOST_GRACE`)."""
    raw = os.environ.get(LOST_GRACE_ENV)
    try:
        return max(0.0, float(raw)) if raw not in (None, "") else DEFAULT_LOST_GRACE
    except ValueError:
        raise RegistryError(f"{LOST_GRACE_ENV} must be a number of seconds, got {raw!r}") from None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def holder_record(limit_seconds: float, start: float | None = None) -> dict:
    """Who holds a validation: this host and boot, this process (pid and its start time), the
    flow's start (epoch seconds) and the most it may take (seconds)."""
    import psutil

    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
            "pid_start": psutil.Process().create_time(), "start": clock() if start is None else start,
            "limit": float(limit_seconds)}


def holder_alive(holder: dict) -> bool:
    """Whether the holder process still runs. Another host (or a holder without a pid) cannot be
    checked: it counts as gone once its limit and the grace are past."""
    import psutil

    if holder.get("host") != socket.gethostname() or holder.get("boot_id", "") != _boot_id():
        return False
    try:
        proc = psutil.Process(int(holder["pid"]))
        # A reused pid is another process: compare start times.
        return abs(proc.create_time() - float(holder.get("pid_start", proc.create_time()))) < 1.0 \
            and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _parse_holder(text: str | None) -> dict | None:
    try:
        holder = json.loads(text or "")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and "start" in holder and "limit" in holder else None


def lost_since(tags: dict) -> dict | None:
    """The holder of a non-final state that is past limit + grace and gone, else None."""
    if tags.get(UPLOAD_STATE_TAG) not in LIVE:
        return None
    holder = _parse_holder(tags.get(UPLOAD_HOLDER_TAG))
    if holder is None:
        return None
    try:
        deadline = float(holder["start"]) + float(holder["limit"]) + lost_grace()
    except (TypeError, ValueError):
        return None
    if clock() <= deadline or holder_alive(holder):
        return None
    return holder


def correct_lost(name: str, version: str | int, client=None, *, tags: dict | None = None) -> bool:
    """Write `Error` (`validator_lost`) on a version whose live state's validator is gone; once:
    the tags are re-read right before the write, and the holder tag is cleared with it.
    Returns whether a correction was written."""
    client = get_client(client)
    version = str(version)
    tags = dict(tags if tags is not None else client.get_model_version(name, version).tags)
    if lost_since(tags) is None:
        return False
    fresh = dict(client.get_model_version(name, version).tags)
    holder = lost_since(fresh)
    if holder is None or fresh.get(UPLOAD_HOLDER_TAG) != tags.get(UPLOAD_HOLDER_TAG):
        return False
    retrying(client.set_model_version_tag, name, version, UPLOAD_HOLDER_TAG, "")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(holder["start"])))
    message = (f"the validator (pid {holder.get('pid')} on {holder.get('host')}, started {started}, limit "
               f"{float(holder['limit']):.0f} s) is gone and left the version {fresh.get(UPLOAD_STATE_TAG)}")
    RegistryRecorder(name, version, client)(Transition(ERROR, utc_now(), LOST_REASON, message), [])
    return True
