"""The model registry as the dashboard shows it: versions, upload states, history, promotions.

Owns the registry's tables: every registered version with its aliases and current upload state
(a validator that died is shown, and recorded once, as Error validator_lost), the upload-state
transitions, the state counts and badge colours, and the promotion audit trail.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mlflow_numerai.conventions import (
    FAMILY_TAG,
    PROMOTION_PREFIX,
    UPLOAD_HISTORY_TAG,
    UPLOAD_MESSAGE_TAG,
    UPLOAD_REASON_TAG,
    UPLOAD_STATE_TAG,
    VALIDATION_RUN_TAG,
)
from mlflow_numerai.dashboard.queries.store import get_client
from mlflow_numerai.registry import correct_lost

PROMOTION = PROMOTION_PREFIX + "."  # numerai.promotion.<key> on versions and registered models

UPLOAD_STATES = ("Pending", "Running", "Validating", "Success", "Failed", "Error")
# Badge colours per upload state (Streamlit's named colours).
STATE_COLORS = {
    "Success": "green",
    "Failed": "red",
    "Error": "orange",
    "Pending": "gray",
    "Running": "blue",
    "Validating": "blue",
}

VERSION_COLUMNS = [
    "name",
    "version",
    "aliases",
    "run_id",
    "family",
    "created",
    "upload_state",
    "upload_reason",
    "upload_message",
    "state_time",
    "validation_run_id",
    "validation_corr_mean",
    "validation_corr_sharpe",
    "numerai_corr_mean",
    "color",
]
HISTORY_COLUMNS = ["name", "version", "state", "time", "reason", "message"]


# ---------------------------------------------------------------------------------------------
# Registry: versions, upload states, promotions


def parse_time(value: object) -> pd.Timestamp:
    """A UTC timestamp from ISO text or epoch seconds/milliseconds; NaT when unreadable."""
    if value is None or value == "":
        return pd.NaT
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return pd.to_datetime(value, utc=True, errors="coerce")
    return pd.to_datetime(number, unit="ms" if number > 1e11 else "s", utc=True)


def parse_history(raw: str | None) -> list[dict]:
    """The `numerai.upload_history` tag as a list of {state, time, reason}; [] when absent or bad."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except (TypeError, ValueError):
        return []
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, dict) and "state" in i]


def _aliases_by_version(client) -> dict[tuple[str, str], list[str]]:
    """(model name, version) -> its aliases, from the registered models (version searches may
    leave aliases out)."""
    out: dict[tuple[str, str], list[str]] = {}
    for model in client.search_registered_models(max_results=1000):
        aliases = model.aliases or {}
        pairs = aliases.items() if isinstance(aliases, dict) else ((a.alias, a.version) for a in aliases)
        for alias, version in pairs:
            out.setdefault((model.name, str(version)), []).append(str(alias))
    return out


def model_versions(tracking_uri: str) -> pd.DataFrame:
    """Every registered model version with its aliases and current upload state.

    Columns VERSION_COLUMNS plus `tags` (the version's tags as a dict). The state is
    `numerai.upload_state` (or the last history entry), `None` when never validated.
    """
    client = get_client(tracking_uri)
    aliases = _aliases_by_version(client)
    versions, token = [], None
    while True:
        page = client.search_model_versions(max_results=10_000, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    run_info: dict[str, tuple[str | None, dict]] = {}

    def run_of(run_id: str | None) -> tuple[str | None, dict]:
        """(family tag, metrics) of a run; (None, {}) when gone."""
        if not run_id:
            return None, {}
        if run_id not in run_info:
            try:
                run = client.get_run(run_id)
                run_info[run_id] = (run.data.tags.get(FAMILY_TAG), dict(run.data.metrics))
            except Exception:
                run_info[run_id] = (None, {})
        return run_info[run_id]

    rows = []
    for mv in versions:
        tags = dict(mv.tags or {})
        # A live state whose validator died is shown (and written once) as Error validator_lost.
        if correct_lost(mv.name, mv.version, client, tags=tags):
            tags = dict(client.get_model_version(mv.name, str(mv.version)).tags or {})
        history = parse_history(tags.get(UPLOAD_HISTORY_TAG))
        state = tags.get(UPLOAD_STATE_TAG) or (history[-1]["state"] if history else None)
        reason = tags.get(UPLOAD_REASON_TAG) or (history[-1].get("reason") if history else None)
        family, train_metrics = run_of(mv.run_id)
        _, val_metrics = run_of(tags.get(VALIDATION_RUN_TAG))
        rows.append(
            {
                "name": mv.name,
                "version": int(mv.version),
                "aliases": ", ".join(sorted(aliases.get((mv.name, str(mv.version)), []))),
                "run_id": mv.run_id,
                "family": family or tags.get(FAMILY_TAG),
                "created": pd.to_datetime(mv.creation_timestamp, unit="ms", utc=True),
                "upload_state": state,
                "upload_reason": reason or None,
                "upload_message": (
                    tags.get(UPLOAD_MESSAGE_TAG) or (history[-1].get("message") if history else None) or None
                ),
                "state_time": parse_time(history[-1].get("time")) if history else pd.NaT,
                "validation_run_id": tags.get(VALIDATION_RUN_TAG),
                "validation_corr_mean": val_metrics.get("validation_corr_mean", np.nan),
                "validation_corr_sharpe": val_metrics.get("validation_corr_sharpe", np.nan),
                "numerai_corr_mean": train_metrics.get("numerai_corr_mean", np.nan),
                "color": STATE_COLORS.get(state or "", "gray"),
                "tags": tags,
            }
        )
    df = pd.DataFrame(rows, columns=VERSION_COLUMNS + ["tags"])
    return df.sort_values(["name", "version"], ascending=[True, False]).reset_index(drop=True)


def upload_history(versions: pd.DataFrame) -> pd.DataFrame:
    """Every upload-state transition of every version, oldest first: HISTORY_COLUMNS."""
    rows = []
    for _, v in versions.iterrows():
        for item in parse_history((v["tags"] or {}).get(UPLOAD_HISTORY_TAG)):
            rows.append(
                {
                    "name": v["name"],
                    "version": v["version"],
                    "state": str(item["state"]),
                    "time": parse_time(item.get("time")),
                    "reason": item.get("reason") or None,
                    "message": item.get("message") or None,
                }
            )
    df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return df.sort_values(["name", "version", "time"], kind="stable").reset_index(drop=True)


def state_counts(versions: pd.DataFrame) -> pd.Series:
    """How many versions are currently in each upload state (never-validated as "Not validated")."""
    states = versions["upload_state"].fillna("Not validated")
    order = [*UPLOAD_STATES, "Not validated"]
    return states.value_counts().reindex(order, fill_value=0).loc[lambda s: s > 0]


def format_gates(raw: str | None) -> str:
    """The promotion's gates tag (JSON list of {name, value, threshold, passed}) as one line,
    e.g. `upload_state Success ✓; min_corr 0.0123 ≥ 0.01 ✓`."""
    try:
        gates = json.loads(raw) if raw else []
    except (TypeError, ValueError):
        return str(raw)
    parts = []
    for g in gates if isinstance(gates, list) else []:
        if not isinstance(g, dict):
            continue
        mark = "✓" if g.get("passed") else "✗"
        value, threshold = g.get("value"), g.get("threshold")
        if isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
            parts.append(f"{g.get('name')} {value:.4g} ≥ {threshold:.4g} {mark}")
        else:
            parts.append(f"{g.get('name')} {value} {mark}")
    return "; ".join(parts)


AUDIT_COLUMNS = ["name", "version", "event", "alias", "previous_version", "time", "user", "detail"]


def promotion_audit(tracking_uri: str, versions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The promotion audit trail, newest first: one row per promotion recorded on a version
    (`numerai.promotion.{alias,previous_version,time,gates,user}`) and per alias taken back from a
    failed version (`numerai.promotion.<alias>.revoked` on the registered model)."""
    client = get_client(tracking_uri)
    versions = model_versions(tracking_uri) if versions is None else versions
    rows: list[dict] = []
    for _, v in versions.iterrows():
        tags = v["tags"] or {}
        if PROMOTION + "alias" not in tags:
            continue
        rows.append(
            {
                "name": v["name"],
                "version": int(v["version"]),
                "event": "promoted",
                "alias": tags[PROMOTION + "alias"],
                "previous_version": tags.get(PROMOTION + "previous_version") or None,
                "time": parse_time(tags.get(PROMOTION + "time")),
                "user": tags.get(PROMOTION + "user"),
                "detail": format_gates(tags.get(PROMOTION + "gates")),
            }
        )
    for model in client.search_registered_models(max_results=1000):
        for key, value in (model.tags or {}).items():
            if not (key.startswith(PROMOTION) and key.endswith(".revoked")):
                continue
            try:
                rec = json.loads(value)
            except (TypeError, ValueError):
                rec = {"why": value}
            rows.append(
                {
                    "name": model.name,
                    "version": int(rec["version"]) if str(rec.get("version", "")).isdigit() else None,
                    "event": "revoked",
                    "alias": key[len(PROMOTION):-len(".revoked")],
                    "previous_version": None,
                    "time": parse_time(rec.get("time")),
                    "user": None,
                    "detail": rec.get("why"),
                }
            )
    df = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
    return df.sort_values("time", ascending=False, kind="stable").reset_index(drop=True)
