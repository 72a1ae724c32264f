"""Upload states on registered model versions, and promotion with gates and an audit trail.

Tags on a model version (read by the dashboard):
`numerai.upload_state`, `numerai.upload_reason`, `numerai.upload_message`,
`numerai.upload_history` (JSON list of {state, time, reason, message}, oldest first),
`numerai.validation_run_id`; after a promotion `numerai.promotion.{alias,previous_version,time,
gates,user}`. The registered model keeps `numerai.promotion.<alias>.version`/`.previous_version`/
`.time` for the alias's latest promotion (and `.revoked` when a failure took it back).

Race safety: a promotion re-reads the version's state right before it moves the alias and again
after; the validator writes `Failed`/`Error` first and then takes back any alias a promotion put
on that version. Whatever the interleaving, one of the two sees the other, so the alias never
stays on a version whose latest state is not Success.

No false state: a validation records its holder (`numerai.upload_holder`: host, boot id, pid and
its start time, the flow's start and limit in seconds). A reader (`upload_state`, the gates of
`promote`, the deployments target, the dashboard, the next validation) that finds a
`Pending`/`Running`/`Validating` state older than limit + grace (30 s, `MLFLOW_NUMERAI_LOST_GRACE`)
whose holder process is gone writes `Error` with reason `validator_lost` once (`correct_lost`).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass

import click

from mlflow_numerai.upload_states import ERROR, FAILED, LIVE, SUCCESS, Transition, utc_now

STATE_TAG = "numerai.upload_state"
REASON_TAG = "numerai.upload_reason"
MESSAGE_TAG = "numerai.upload_message"
HISTORY_TAG = "numerai.upload_history"
VALIDATION_RUN_TAG = "numerai.validation_run_id"
HOLDER_TAG = "numerai.upload_holder"
LOST_REASON = "validator_lost"
LOST_GRACE_ENV = "MLFLOW_NUMERAI_LOST_GRACE"
DEFAULT_LOST_GRACE = 30.0
PROMOTION_PREFIX = "numerai.promotion"
MAX_HISTORY = 500  # entries kept in the tag (the validation runs keep theirs as artifacts)
MAX_TAG_CHARS = 90_000

CORR_METRICS = ("validation_corr_mean", "numerai_corr_mean")  # sandbox diagnostics first, then evaluator
SHARPE_METRICS = ("validation_corr_sharpe", "numerai_corr_sharpe")

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[^/]+))/?$")


class RegistryError(ValueError):
    """A model name, version or alias does not exist or cannot be used."""


class PromotionError(RuntimeError):
    """A promotion was refused (a gate failed or the state changed); the message says why."""


def _client(client=None):
    from mlflow import MlflowClient

    return client or MlflowClient()


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
    client = _client(client)
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

    client = _client(client)
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
    tags = _client(client).get_model_version(name, str(version)).tags
    try:
        history = json.loads(tags.get(HISTORY_TAG, "[]"))
    except ValueError:
        return []
    return history if isinstance(history, list) else []


def upload_state(name: str, version: str | int, client=None) -> dict:
    """{state, reason, message, history, validation_run_id} of a model version (state None if never validated).
    A state whose validator is lost is corrected to Error (`validator_lost`) first."""
    client = _client(client)
    tags = client.get_model_version(name, str(version)).tags
    if correct_lost(name, version, client, tags=tags):
        tags = client.get_model_version(name, str(version)).tags
    try:
        history = json.loads(tags.get(HISTORY_TAG, "[]"))
    except ValueError:
        history = []
    return {
        "state": tags.get(STATE_TAG),
        "reason": tags.get(REASON_TAG) or None,
        "message": tags.get(MESSAGE_TAG, ""),
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
        self.client = _client(client)
        self.recorded: list[dict] = []  # the version's whole history after our last write

    def full_history(self, history: list[Transition] | None = None) -> list[dict]:
        """The version's history as last written (other validations' entries included)."""
        return list(self.recorded)

    def __call__(self, transition: Transition, history: list[Transition]) -> None:
        def set_tag(*args):
            _retrying(self.client.set_model_version_tag, *args)

        # Re-read and append (not overwrite), so concurrent validations of one version keep
        # each other's entries.
        self.recorded = upload_history(self.name, self.version, self.client) + [transition.to_dict()]
        # history first, so a reader that sees the new state also sees its entry
        set_tag(self.name, self.version, HISTORY_TAG, _history_json(self.recorded))
        set_tag(self.name, self.version, REASON_TAG, transition.reason or "")
        set_tag(self.name, self.version, MESSAGE_TAG, (transition.message or "")[:4000])
        set_tag(self.name, self.version, STATE_TAG, transition.state)
        if transition.state in (FAILED, ERROR):
            revoke_aliases(self.name, self.version, self.client,
                           why=f"version {self.version} is {transition.state} ({transition.reason})")

    def hold(self, holder: dict) -> None:
        """Record who holds the version's next live state (see `holder_record`)."""
        _retrying(self.client.set_model_version_tag, self.name, self.version, HOLDER_TAG, json.dumps(holder))

    def link_run(self, run_id: str) -> None:
        _retrying(self.client.set_model_version_tag, self.name, self.version, VALIDATION_RUN_TAG, run_id)


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
    if tags.get(STATE_TAG) not in LIVE:
        return None
    holder = _parse_holder(tags.get(HOLDER_TAG))
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
    client = _client(client)
    version = str(version)
    tags = dict(tags if tags is not None else client.get_model_version(name, version).tags)
    if lost_since(tags) is None:
        return False
    fresh = dict(client.get_model_version(name, version).tags)
    holder = lost_since(fresh)
    if holder is None or fresh.get(HOLDER_TAG) != tags.get(HOLDER_TAG):
        return False
    _retrying(client.set_model_version_tag, name, version, HOLDER_TAG, "")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(holder["start"])))
    message = (f"the validator (pid {holder.get('pid')} on {holder.get('host')}, started {started}, limit "
               f"{float(holder['limit']):.0f} s) is gone and left the version {fresh.get(STATE_TAG)}")
    RegistryRecorder(name, version, client)(Transition(ERROR, utc_now(), LOST_REASON, message), [])
    return True


TRANSIENT_MARKS = ("UNIQUE constraint", "IntegrityError", "locked", "were matched")


def _retrying(call, *args, attempts: int = 8):
    """Run a registry write, retrying the transient conflicts of concurrent writers (SQLite's
    "database is locked", two writers inserting the same new tag at once, or an alias row that
    another writer updated or deleted under us: SQLAlchemy's "0 were matched")."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return call(*args)
        except MlflowException as exc:
            text = str(exc)
            transient = any(mark in text for mark in TRANSIENT_MARKS)
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _state_of(client, name: str, version: str) -> str | None:
    return client.get_model_version(name, str(version)).tags.get(STATE_TAG)


def revoke_aliases(name: str, version: str, client=None, why: str = "") -> list[str]:
    """Take back every alias a promotion put on `version` (now failed): back to the previous holder
    when that one is still Success, else remove it. Returns the aliases taken back."""
    client = _client(client)
    model = client.get_registered_model(name)
    taken = []
    for alias, holder in dict(model.aliases).items():
        if str(holder) != str(version):
            continue
        previous = model.tags.get(f"{PROMOTION_PREFIX}.{alias}.previous_version")
        _retrying(_restore_alias, client, name, alias, str(version), previous)
        _retrying(client.set_registered_model_tag, name, f"{PROMOTION_PREFIX}.{alias}.revoked",
                  json.dumps({"version": str(version), "time": _now(), "why": why}))
        taken.append(alias)
    return taken


def _restore_alias(client, name: str, alias: str, bad_version: str, previous: str | None) -> str | None:
    """Point `alias` back at `previous` if it is Success (else delete it), unless the alias has
    already moved away from `bad_version`. Returns where the alias points afterwards."""
    holder = client.get_registered_model(name).aliases.get(alias)
    if holder is None or str(holder) != str(bad_version):
        return None if holder is None else str(holder)
    if previous and previous != str(bad_version) and _state_of(client, name, previous) == SUCCESS:
        client.set_registered_model_alias(name, alias, previous)
        return previous
    client.delete_registered_model_alias(name, alias)
    return None


def _now() -> str:
    return utc_now()


# ----------------------------------------------------------------------------- promotion
@dataclass
class Gate:
    """One promotion gate: what was measured, against what, and whether it passed."""

    name: str
    value: float | str | None
    threshold: float | str | None
    passed: bool
    source: str = ""

    def describe(self) -> str:
        if self.name == "upload_state":
            why = f" ({self.source})" if self.source and self.source != STATE_TAG else ""
            return f"upload_state is {self.value!r}{why}, must be 'Success'"
        if self.value is None:
            return f"{self.name}: no metric found ({self.source}), needs >= {self.threshold}"
        gap = float(self.threshold) - float(self.value)
        return f"{self.name}: {self.value:.6g} < {self.threshold:.6g} (short by {gap:.6g}; from {self.source})"


@dataclass
class PromotionResult:
    name: str
    version: str
    alias: str
    previous_version: str | None
    time: str
    gates: list[Gate]

    def to_dict(self) -> dict:
        data = asdict(self)
        return data


def _metric(client, mv, keys: tuple[str, ...]) -> tuple[float | None, str]:
    """The first of `keys` found on the version's validation run, then on its training run."""
    runs = []
    run_id = mv.tags.get(VALIDATION_RUN_TAG)
    if run_id:
        runs.append(("validation run", run_id))
    if mv.run_id:
        runs.append(("training run", mv.run_id))
    for label, rid in runs:
        try:
            metrics = client.get_run(rid).data.metrics
        except Exception:
            continue
        for key in keys:
            if key in metrics:
                return float(metrics[key]), f"{label} {rid} metric {key}"
    return None, f"looked for {list(keys)} on the validation and training runs"


def evaluate_gates(name: str, version: str | int, *, min_corr: float | None = None,
                   min_sharpe: float | None = None, client=None) -> list[Gate]:
    """The promotion gates of a version: upload state Success, then the metric thresholds given."""
    client = _client(client)
    mv = client.get_model_version(name, str(version))
    if correct_lost(name, version, client, tags=mv.tags):
        mv = client.get_model_version(name, str(version))
    state = mv.tags.get(STATE_TAG)
    reason = mv.tags.get(REASON_TAG) or ""
    gates = [Gate("upload_state", state, SUCCESS, state == SUCCESS,
                  f"reason {reason}" if state != SUCCESS and reason else STATE_TAG)]
    for gate_name, threshold, keys in (("min_corr", min_corr, CORR_METRICS), ("min_sharpe", min_sharpe, SHARPE_METRICS)):
        if threshold is None:
            continue
        value, source = _metric(client, mv, keys)
        gates.append(Gate(gate_name, value, float(threshold), value is not None and value >= threshold, source))
    return gates


def promote(name: str, version: str | int, alias: str = "champion", *, min_corr: float | None = None,
            min_sharpe: float | None = None, client=None) -> PromotionResult:
    """Move `alias` to `name` version `version` if its latest upload state is Success and the gates
    pass; keep an audit trail. Raises PromotionError naming the failed gate(s) and the shortfall."""
    from mlflow.exceptions import MlflowException

    client = _client(client)
    version = latest_version(name, client) if str(version) == "latest" else str(version)
    if not re.fullmatch(r"[A-Za-z_][\w-]*", alias or ""):
        raise PromotionError(f"alias must be a name like 'champion', got {alias!r}")
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"model {name!r} version {version} does not exist: {exc.message}") from exc
    gates = evaluate_gates(name, version, min_corr=min_corr, min_sharpe=min_sharpe, client=client)
    failed = [g for g in gates if not g.passed]
    if failed:
        raise PromotionError(
            f"not promoting {name} version {version} to @{alias}: " + "; ".join(g.describe() for g in failed)
        )
    previous = client.get_registered_model(name).aliases.get(alias)
    previous = None if previous is None else str(previous)
    # Re-read the state right before the move: a validation may have finished since the gates.
    state = _state_of(client, name, version)
    if state != SUCCESS:
        raise PromotionError(f"not promoting {name} version {version}: its upload state changed to {state!r}")
    _retrying(client.set_registered_model_alias, name, alias, version)
    state = _state_of(client, name, version)
    if state != SUCCESS:
        now_at = _retrying(_restore_alias, client, name, alias, version, previous)
        raise PromotionError(
            f"not promoting {name} version {version}: its upload state changed to {state!r} during the "
            f"promotion; @{alias} is back on {now_at or 'no version'}"
        )
    result = PromotionResult(name, version, alias, previous, _now(), gates)
    _audit(client, result)
    return result


def _audit(client, result: PromotionResult) -> None:
    gates = json.dumps([asdict(g) for g in result.gates])
    user = getpass.getuser()
    for key, value in (("alias", result.alias), ("previous_version", result.previous_version or ""),
                       ("time", result.time), ("gates", gates), ("user", user)):
        _retrying(client.set_model_version_tag, result.name, result.version, f"{PROMOTION_PREFIX}.{key}", value)
    for key, value in (("version", result.version), ("previous_version", result.previous_version or ""),
                       ("time", result.time), ("user", user)):
        _retrying(client.set_registered_model_tag, result.name, f"{PROMOTION_PREFIX}.{result.alias}.{key}", value)


@click.command("promote")
@click.argument("name")
@click.option("--version", "version", required=True, help="Model version to promote ('latest': the highest).")
@click.option("--alias", default="champion", show_default=True, help="Alias to move.")
@click.option("--min-corr", type=float, default=None, help="Gate: validation corr mean must be at least this.")
@click.option("--min-sharpe", type=float, default=None, help="Gate: validation corr sharpe must be at least this.")
@click.option("--tracking-uri", default=None, help="Tracking/registry URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def promote_command(name, version, alias, min_corr, min_sharpe, tracking_uri, as_json):
    """Move ALIAS to NAME --version V if its upload state is Success and the gates pass.

    Exit code 0 promoted, 1 refused (a gate failed), 2 bad arguments.
    """
    from mlflow_numerai.tracking import ensure_tracking_uri

    ensure_tracking_uri(tracking_uri)
    try:
        result = promote(name, version, alias, min_corr=min_corr, min_sharpe=min_sharpe)
    except RegistryError as exc:
        _emit(as_json, {"promoted": False, "error": str(exc)}, str(exc), err=True)
        sys.exit(2)
    except PromotionError as exc:
        _emit(as_json, {"promoted": False, "error": str(exc)}, str(exc), err=True)
        sys.exit(1)
    text = (f"{name} version {result.version} is now @{alias}"
            + (f" (was version {result.previous_version})" if result.previous_version else ""))
    _emit(as_json, {"promoted": True, **result.to_dict()}, text)


def _emit(as_json: bool, payload: dict, text: str, err: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(payload, default=str))
    else:
        click.echo(text, err=err)
