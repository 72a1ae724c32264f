"""Promotion: move an alias to a validated model version behind gates, with an audit trail.

The gates: the version's latest upload state is Success (a lost validator's state corrected
first), then optional metric thresholds read from its validation run, else its training run.
After a promotion the version keeps `numerai.promotion.{alias,previous_version,time,gates,user}`
and the registered model keeps `numerai.promotion.<alias>.version`/`.previous_version`/`.time`/
`.user` for the alias's latest promotion.

Race safety: a promotion re-reads the version's state right before it moves the alias and again
after; the validator writes `Failed`/`Error` first and then takes back any alias a promotion put
on that version (`registry.aliases`). Whatever the interleaving, one of the two sees the other,
so the alias never stays on a version whose latest state is not Success. Two promotions racing
for one alias end with the registered model's record naming the version the alias points at:
each settles after its audit (`_settle`), rewriting the record from the holder's own tags.
"""

from __future__ import annotations

import getpass
import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from mlflow_numerai.conventions import PROMOTION_PREFIX, UPLOAD_REASON_TAG, UPLOAD_STATE_TAG, VALIDATION_RUN_TAG
from mlflow_numerai.registry.aliases import restore_alias
from mlflow_numerai.registry.states import SUCCESS, utc_now
from mlflow_numerai.registry.store import RegistryError, get_client, retrying, state_of
from mlflow_numerai.registry.versions import correct_lost, latest_version

CORR_METRICS = ("validation_corr_mean", "numerai_corr_mean")  # sandbox diagnostics first, then evaluator
SHARPE_METRICS = ("validation_corr_sharpe", "numerai_corr_sharpe")


class PromotionError(RuntimeError):
    """A promotion was refused (a gate failed or the state changed); the message says why."""


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
            why = f" ({self.source})" if self.source and self.source != UPLOAD_STATE_TAG else ""
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
    client = get_client(client)
    mv = client.get_model_version(name, str(version))
    if correct_lost(name, version, client, tags=mv.tags):
        mv = client.get_model_version(name, str(version))
    state = mv.tags.get(UPLOAD_STATE_TAG)
    reason = mv.tags.get(UPLOAD_REASON_TAG) or ""
    gates = [Gate("upload_state", state, SUCCESS, state == SUCCESS,
                  f"reason {reason}" if state != SUCCESS and reason else UPLOAD_STATE_TAG)]
    thresholds = (("min_corr", min_corr, CORR_METRICS), ("min_sharpe", min_sharpe, SHARPE_METRICS))
    for gate_name, threshold, keys in thresholds:
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

    client = get_client(client)
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
    state = state_of(client, name, version)
    if state != SUCCESS:
        raise PromotionError(f"not promoting {name} version {version}: its upload state changed to {state!r}")
    retrying(client.set_registered_model_alias, name, alias, version)
    state = state_of(client, name, version)
    if state != SUCCESS:
        now_at = retrying(restore_alias, client, name, alias, version, previous)
        raise PromotionError(
            f"not promoting {name} version {version}: its upload state changed to {state!r} during the "
            f"promotion; @{alias} is back on {now_at or 'no version'}"
        )
    result = PromotionResult(name, version, alias, previous, utc_now(), gates)
    _audit(client, result)
    _settle(client, name, alias)
    return result


# Promotions of one alias whose times lie this close and that saw the same predecessor raced.
RACE_WINDOW_S = 120.0


def _settle(client, name: str, alias: str, rounds: int = 10) -> None:
    """Make the registered model's record of `alias` name the version the alias points at, and
    the version that version really displaced.

    A racing promotion may have moved the alias after ours but written its record before ours:
    the record is then rewritten from the holder's version tags (written before the record), so
    whichever promotion finishes last leaves a true record. Two promotions may also both have read
    the alias before either moved it: the holder then displaced the other racer, not the version
    both saw (`_displaced`). Every settler re-reads until the record is what it should be."""
    key = f"{PROMOTION_PREFIX}.{alias}"
    for _ in range(rounds):
        model = client.get_registered_model(name)
        holder = model.aliases.get(alias)
        if holder is None:
            return
        holder = str(holder)
        tags = client.get_model_version(name, holder).tags
        if tags.get(f"{PROMOTION_PREFIX}.alias") != alias or f"{PROMOTION_PREFIX}.time" not in tags:
            time.sleep(0.2)  # the holder's promotion is still writing its tags: it settles itself
            continue
        previous = _displaced(client, name, alias, holder, tags)
        record = {"version": holder, "previous_version": previous,
                  "time": tags[f"{PROMOTION_PREFIX}.time"], "user": tags.get(f"{PROMOTION_PREFIX}.user", "")}
        if all(model.tags.get(f"{key}.{field}") == value for field, value in record.items()):
            return
        if tags.get(f"{PROMOTION_PREFIX}.previous_version", "") != previous:
            retrying(client.set_model_version_tag, name, holder, f"{PROMOTION_PREFIX}.previous_version", previous)
        for field in ("previous_version", "time", "user", "version"):  # version last: it marks the record done
            retrying(client.set_registered_model_tag, name, f"{key}.{field}", record[field])


def _displaced(client, name: str, alias: str, holder: str, tags: dict) -> str:
    """The version the holder's promotion took `alias` from ("" for none): the one it read, unless
    other promotions that read the same one moved the alias in between (the latest of them)."""
    seen = tags.get(f"{PROMOTION_PREFIX}.previous_version", "")
    at = datetime.fromisoformat(tags[f"{PROMOTION_PREFIX}.time"])
    since = None
    if seen:
        seen_time = client.get_model_version(name, seen).tags.get(f"{PROMOTION_PREFIX}.time")
        since = datetime.fromisoformat(seen_time) if seen_time else None
    racers = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        other = mv.tags or {}
        if str(mv.version) in (holder, seen) or other.get(f"{PROMOTION_PREFIX}.alias") != alias:
            continue
        if other.get(f"{PROMOTION_PREFIX}.previous_version", "") != seen or f"{PROMOTION_PREFIX}.time" not in other:
            continue
        when = datetime.fromisoformat(other[f"{PROMOTION_PREFIX}.time"])
        if abs((when - at).total_seconds()) <= RACE_WINDOW_S and (since is None or when > since):
            racers.append((when, str(mv.version)))
    return max(racers)[1] if racers else seen


def _audit(client, result: PromotionResult) -> None:
    gates = json.dumps([asdict(g) for g in result.gates])
    user = getpass.getuser()
    for key, value in (("alias", result.alias), ("previous_version", result.previous_version or ""),
                       ("time", result.time), ("gates", gates), ("user", user)):
        retrying(client.set_model_version_tag, result.name, result.version, f"{PROMOTION_PREFIX}.{key}", value)
    for key, value in (("version", result.version), ("previous_version", result.previous_version or ""),
                       ("time", result.time), ("user", user)):
        retrying(client.set_registered_model_tag, result.name, f"{PROMOTION_PREFIX}.{result.alias}.{key}", value)
