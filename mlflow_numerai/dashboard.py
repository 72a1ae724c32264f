"""Data access for the dashboard: plain functions over MLflow tracking + registry -> DataFrames.

Everything the Streamlit pages show comes from here, read through MLflow's client only, using
the tags, metrics and artifacts named in docs/ARCHITECTURE.md ("MLflow conventions"). Nothing
here imports Streamlit, so it is tested (and usable in a notebook) without it. The pages cache
these calls; the functions themselves are uncached and side-effect free.

Also the `mlflow-numerai dashboard` command, which starts `streamlit run` on the packaged app.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

import click
import numpy as np
import pandas as pd

FAMILY_TAG = "numerai.family"
FAMILIES = ("baseline", "keras_stream", "bayes_nn", "bnn_study", "varmax", "ensemble")
UPLOAD_STATE_TAG = "numerai.upload_state"
UPLOAD_REASON_TAG = "numerai.upload_reason"
UPLOAD_HISTORY_TAG = "numerai.upload_history"
VALIDATION_RUN_TAG = "numerai.validation_run_id"
UPLOAD_MESSAGE_TAG = "numerai.upload_message"
PROMOTION_PREFIX = "numerai.promotion."

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

# The command that creates what a page needs, shown when there is nothing to show yet.
CREATE_COMMANDS = {
    "any": "mlflow-numerai train baseline",
    "registry": "mlflow-numerai train baseline && mlflow-numerai validate models:/<name>/1",
    "bayes_nn": "mlflow-numerai train bnn-study",
    "keras_stream": "mlflow-numerai train keras-stream",
    "varmax": "mlflow-numerai train varmax",
    "ensemble": "mlflow-numerai ensemble numerai-ensemble --member models:/<a>/1 --member models:/<b>/1",
}

SUMMARY_METRICS = (
    "numerai_corr_mean",
    "numerai_corr_std",
    "numerai_corr_sharpe",
    "numerai_corr_max_drawdown",
    "mmc_mean",
    "max_feature_exposure",
)
BNN_METRICS = (
    "ensemble_corr_mean",
    "ensemble_sharpe",
    "member_corr_mean_mean",
    "member_corr_mean_std",
    "member_sharpe_mean",
    "member_sharpe_std",
    "burn_auc",
    "n_burn_eras",
)
BNN_PARAMS = ("prior", "hidden", "target_model", "n_samples")
KERAS_METRICS = ("loss", "val_loss", "val_corr_mean", "val_corr_sharpe", "rows_per_sec")

PER_ERA_CORR_ARTIFACT = "numerai_eval/per_era_corr.csv"
PER_ERA_DIAGNOSTICS_ARTIFACT = "numerai_eval/per_era_diagnostics.csv"
# Numerai's diagnostics tiles: (label, metric logged by the `numerai` evaluator, digits)
DIAGNOSTIC_TILES = (
    ("CORR", "numerai_corr_mean", 4),
    ("MMC", "mmc_mean", 4),
    ("BMC", "bmc_mean", 4),
    ("CWMM", "cwmm_mean", 4),
    ("TB200", "numerai_corr_tb200_mean", 4),
    ("FNC", "fnc_mean", 4),
    ("Max exposure", "max_feature_exposure", 4),
    ("Churn", "churn_mean", 4),
    ("Payout est.", "payout_mean", 4),
    ("Sharpe", "numerai_corr_sharpe", 3),
    ("Smart Sharpe", "numerai_corr_smart_sharpe", 3),
    ("Max drawdown", "numerai_corr_max_drawdown", 4),
)
DIAGNOSTIC_CURVES = ("corr", "mmc", "bmc")
LOWER_IS_BETTER = {"max_feature_exposure", "churn_mean", "numerai_corr_max_drawdown"}
BNN_PER_ERA_ARTIFACT = "bnn/per_era.csv"
BNN_MEMBERS_ARTIFACT = "bnn/members.csv"
BNN_ROC_ARTIFACT = "bnn/roc.csv"
BNN_JS_ARTIFACT = "bnn/js_divergence.csv"
VARMAX_ORDER_ARTIFACT = "varmax/order_search.csv"
VARMAX_FORECAST_ARTIFACT = "varmax/test_forecast.csv"

RUN_COLUMNS = [
    "run_id",
    "run_name",
    "experiment_id",
    "experiment",
    "family",
    "status",
    "start_time",
    "parent_run_id",
]
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


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or read."""


# ---------------------------------------------------------------------------------------------
# Connecting


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, or None for other stores."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    path = unquote(parsed.path)
    # sqlite:////abs/path -> path "//abs/path"; sqlite:///rel -> "/rel" (relative to cwd).
    if path.startswith("//"):
        return Path(path[1:])
    return Path(path.lstrip("/")) if path not in ("", "/", "/:memory:") else None


@functools.lru_cache(maxsize=8)
def get_client(tracking_uri: str):
    """An MlflowClient bound to `tracking_uri` for both tracking and the registry (one per URI:
    building a SQL store costs a schema check)."""
    from mlflow.tracking import MlflowClient

    _quiet_downloads()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _fail_fast_http() -> None:
    """Unreachable HTTP servers fail in seconds instead of MLflow's minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def check_tracking(tracking_uri: str) -> bool:
    """True if the store answers; False if it is a SQLite file that does not exist yet (nothing
    logged, and we do not create it by looking). Raises TrackingUnavailable naming the URI and
    the cause when the store cannot be read."""
    if not tracking_uri or not isinstance(tracking_uri, str):
        raise TrackingUnavailable(f"tracking URI must be a non-empty string, got {tracking_uri!r}")
    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        if not db.parent.is_dir():
            raise TrackingUnavailable(
                f"cannot open tracking store {tracking_uri!r}: directory {str(db.parent)!r} does not exist"
            )
        return False
    _fail_fast_http()
    try:
        get_client(tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # any backend error becomes one clear message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingUnavailable(f"cannot reach tracking store {tracking_uri!r}: {first[:300]}") from exc
    return True


# ---------------------------------------------------------------------------------------------
# Runs


def _run_row(run, experiments: dict[str, str]) -> dict:
    info, data = run.info, run.data
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name or data.tags.get("mlflow.runName") or info.run_id[:8],
        "experiment_id": info.experiment_id,
        "experiment": experiments.get(info.experiment_id, info.experiment_id),
        "family": data.tags.get(FAMILY_TAG),
        "status": info.status,
        "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True) if info.start_time else pd.NaT,
        "parent_run_id": data.tags.get("mlflow.parentRunId"),
    }
    row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
    row.update({f"params.{k}": v for k, v in data.params.items()})
    row.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
    return row


def runs_table(tracking_uri: str, families: Iterable[str] | None = None, max_runs: int = 5000) -> pd.DataFrame:
    """Every active run tagged with a `numerai.family` (optionally only `families`), newest first.

    Columns: RUN_COLUMNS, then `metrics.<key>` (latest value), `params.<key>`, `tags.<key>`.
    """
    client = get_client(tracking_uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    runs, token = [], None
    wanted = None if families is None else list(families)
    if wanted is not None:
        unknown = sorted(set(wanted) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    while experiments and len(runs) < max_runs:
        page = client.search_runs(
            list(experiments),
            filter_string=f"tags.`{FAMILY_TAG}` != ''",
            max_results=min(1000, max_runs - len(runs)),
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows = [_run_row(r, experiments) for r in runs]
    df = pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)
    if wanted is not None and not df.empty:
        df = df[df["family"].isin(wanted)]
    return df.reset_index(drop=True)


def metric_columns(runs: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """`runs` reduced to run_id, run_name, family and the given metrics (NaN where not logged)."""
    out = runs[["run_id", "run_name", "family"]].copy()
    for name in names:
        col = f"metrics.{name}"
        out[name] = runs[col].astype(float) if col in runs else np.nan
    return out


def run_label(runs: pd.DataFrame) -> pd.Series:
    """A short unique label per run: `<run_name> (<first 6 of run_id>)`."""
    return runs["run_name"].astype(str) + " (" + runs["run_id"].str[:6] + ")"


# ---------------------------------------------------------------------------------------------
# Artifacts


def read_artifact_csv(tracking_uri: str, run_id: str, path: str, **read_csv: object) -> pd.DataFrame | None:
    """A CSV artifact of a run as a DataFrame, or None when the run did not log it."""
    client = get_client(tracking_uri)
    parent = str(Path(path).parent) if "/" in path else None
    try:
        listed = {f.path for f in client.list_artifacts(run_id, parent)}
    except Exception:
        return None
    if path not in listed:
        return None
    with tempfile.TemporaryDirectory(prefix="mlflow_numerai_dash_") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return pd.read_csv(local, **read_csv)


def _quiet_downloads() -> None:
    """No tqdm bar per artifact read (the dashboard reads many small files)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def read_artifact_text(tracking_uri: str, run_id: str, path: str, max_chars: int = 200_000) -> str | None:
    """A text artifact (e.g. a validation log), or None when missing; long logs keep their tail."""
    client = get_client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mlflow_numerai_dash_") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:
            return None
        text = Path(local).read_text(errors="replace")
    return text if len(text) <= max_chars else "...\n" + text[-max_chars:]


def list_artifact_files(tracking_uri: str, run_id: str, path: str | None = None, depth: int = 3) -> list[str]:
    """Paths of every artifact file of a run (recursively, up to `depth` folders down)."""
    client = get_client(tracking_uri)
    out: list[str] = []
    try:
        entries = client.list_artifacts(run_id, path)
    except Exception:
        return out
    for entry in entries:
        if entry.is_dir:
            if depth > 0:
                out.extend(list_artifact_files(tracking_uri, run_id, entry.path, depth - 1))
        else:
            out.append(entry.path)
    return out


def find_log_artifacts(tracking_uri: str, run_id: str) -> list[str]:
    """A validation run's log artifacts (`*.log`, sorted: the sandbox writes `child_live.log`
    then `child_validation.log`); [] when it has none."""
    return sorted(p for p in list_artifact_files(tracking_uri, run_id) if p.endswith(".log"))


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

    from mlflow_numerai.registry import correct_lost

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
                "upload_message": tags.get(UPLOAD_MESSAGE_TAG) or (history[-1].get("message") if history else None) or None,
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
        if PROMOTION_PREFIX + "alias" not in tags:
            continue
        rows.append(
            {
                "name": v["name"],
                "version": int(v["version"]),
                "event": "promoted",
                "alias": tags[PROMOTION_PREFIX + "alias"],
                "previous_version": tags.get(PROMOTION_PREFIX + "previous_version") or None,
                "time": parse_time(tags.get(PROMOTION_PREFIX + "time")),
                "user": tags.get(PROMOTION_PREFIX + "user"),
                "detail": format_gates(tags.get(PROMOTION_PREFIX + "gates")),
            }
        )
    for model in client.search_registered_models(max_results=1000):
        for key, value in (model.tags or {}).items():
            if not (key.startswith(PROMOTION_PREFIX) and key.endswith(".revoked")):
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
                    "alias": key[len(PROMOTION_PREFIX):-len(".revoked")],
                    "previous_version": None,
                    "time": parse_time(rec.get("time")),
                    "user": None,
                    "detail": rec.get("why"),
                }
            )
    df = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
    return df.sort_values("time", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Bayesian NN: ensembles and uncertainty


def _param_or_tag(runs: pd.DataFrame, param: str, tag: str) -> pd.Series:
    """A run param, else the same fact from a tag (the study tags its nested runs `bnn.*`)."""
    out = pd.Series([None] * len(runs), index=runs.index, dtype=object)
    for col in (f"params.{param}", f"tags.{tag}"):
        if col in runs:
            out = out.where(out.notna(), runs[col])
    return out


def bnn_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per Bayesian-NN model (a `bayes_nn` run or a model of a `bnn_study`, including the
    study's non-Bayesian baselines) with prior/architecture and ensemble-vs-member metrics.
    `ensemble_beats_members`: ensemble corr mean > the members' average (None without members)."""
    cols = ["run_id", "run_name", "family", "model", *BNN_PARAMS, *BNN_METRICS, "ensemble_beats_members", "parent_run_id"]
    if runs.empty or "metrics.ensemble_corr_mean" not in runs:
        return pd.DataFrame(columns=cols)
    sel = runs[runs["metrics.ensemble_corr_mean"].notna()]
    out = metric_columns(sel, BNN_METRICS)
    out["prior"] = _param_or_tag(sel, "prior", "bnn.prior")
    is_baseline = _param_or_tag(sel, "model", "bnn.model").astype(str).str.startswith("baseline")
    out.loc[is_baseline.to_numpy(), "prior"] = "baseline (MSE)"
    out["hidden"] = _param_or_tag(sel, "hidden", "bnn.hidden")
    out["target_model"] = _param_or_tag(sel, "target_model", "bnn.target_model")
    out["n_samples"] = _param_or_tag(sel, "n_samples", "bnn.n_samples")
    model = _param_or_tag(sel, "__none__", "bnn.model")
    out["model"] = model.where(model.notna(), sel["run_name"])
    beats = (out["ensemble_corr_mean"] > out["member_corr_mean_mean"]).astype(object)
    out["ensemble_beats_members"] = beats.where(out["member_corr_mean_mean"].notna(), None)
    out["parent_run_id"] = sel["parent_run_id"]
    return out[cols].reset_index(drop=True)


def bnn_members(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """Per posterior sample: corr_mean, sharpe (`bnn/members.csv`); empty when not logged."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_MEMBERS_ARTIFACT)
    if df is None or not {"corr_mean", "sharpe"} <= set(df.columns):
        return pd.DataFrame(columns=["corr_mean", "sharpe"])
    return df[["corr_mean", "sharpe"]]  # without the `sample` index column


def bnn_per_era(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """Per era: ensemble_corr, uncertainty, burn (bool) from `bnn/per_era.csv`."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_PER_ERA_ARTIFACT, dtype={"era": str})
    if df is None:
        return pd.DataFrame(columns=["era", "ensemble_corr", "uncertainty", "burn"])
    if "era" not in df:
        df = df.rename(columns={df.columns[0]: "era"})
    df["era"] = df["era"].astype(str)
    if "burn" in df:
        df["burn"] = df["burn"].astype(str).str.lower().isin(["1", "true", "1.0"])
    return df


def bnn_roc(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The burn-era ROC curve (fpr, tpr) of one run, from `bnn/roc.csv`."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_ROC_ARTIFACT)
    if df is None or not {"fpr", "tpr"} <= set(df.columns):
        return pd.DataFrame(columns=["fpr", "tpr"])
    return df[["fpr", "tpr"]]


def js_divergence(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The study's Jensen-Shannon divergence matrix (models as index and columns)."""
    df = read_artifact_csv(tracking_uri, run_id, BNN_JS_ARTIFACT, index_col=0)
    return df if df is not None else pd.DataFrame()


def js_long(matrix: pd.DataFrame) -> pd.DataFrame:
    """The square JS matrix as rows (model_a, model_b, js) for a heatmap."""
    if matrix.empty:
        return pd.DataFrame(columns=["model_a", "model_b", "js"])
    m = matrix.copy()
    m.index.name, m.columns.name = "model_a", "model_b"
    return m.stack().rename("js").reset_index().astype({"js": float})


def study_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The top-level `bnn_study` runs (they hold the JS matrix; their models are nested runs of
    the same family), newest first."""
    if runs.empty:
        return runs
    studies = runs[runs["family"] == "bnn_study"]
    nested = studies["parent_run_id"].isin(studies["run_id"])
    return studies[~nested].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Model ensembles (`mlflow-numerai ensemble`): blends of registered models

ENSEMBLE_METRICS = ("numerai_corr_mean", "numerai_corr_sharpe", "best_member_corr_mean",
                    "blend_minus_best_member_corr", "mean_member_rank_corr")
ENSEMBLE_WEIGHTS_ARTIFACT = "ensemble/weights.csv"
ENSEMBLE_SIDE_BY_SIDE_ARTIFACT = "ensemble/side_by_side.csv"
ENSEMBLE_PER_ERA_ARTIFACT = "ensemble/per_era_corr.csv"
ENSEMBLE_MEMBER_CORR_ARTIFACT = "ensemble/member_corr.csv"


def ensemble_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per `ensemble` run: name, objective, members, blend and best-member corr."""
    cols = ["run_id", "run_name", "name", "objective", "n_members", *ENSEMBLE_METRICS]
    if runs.empty or "family" not in runs:
        return pd.DataFrame(columns=cols)
    sel = runs[runs["family"] == "ensemble"]
    out = metric_columns(sel, ENSEMBLE_METRICS)
    for param in ("name", "objective", "n_members"):
        out[param] = sel[f"params.{param}"] if f"params.{param}" in sel else None
    return out[cols].reset_index(drop=True)


def ensemble_weights(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """member, uri, weight of an ensemble run (`ensemble/weights.csv`)."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_WEIGHTS_ARTIFACT)
    return df if df is not None else pd.DataFrame(columns=["member", "uri", "weight"])


def ensemble_side_by_side(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The evaluator's scores of each member and of the blend (index: model; last row the blend)."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_SIDE_BY_SIDE_ARTIFACT, index_col=0)
    return df if df is not None else pd.DataFrame()


def ensemble_per_era(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """Per era and model (members and the blend): corr and cumulative corr, long format."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_PER_ERA_ARTIFACT, dtype={"era": str})
    if df is None:
        return pd.DataFrame(columns=["era", "model", "corr", "cumulative"])
    df = df.set_index(df.columns[0])
    cumulative = df.fillna(0).cumsum()
    long = df.rename_axis("era").stack(future_stack=True).rename("corr").reset_index()
    long.columns = ["era", "model", "corr"]
    long["cumulative"] = cumulative.stack(future_stack=True).to_numpy()
    long["era"] = long["era"].astype(str)
    return long


def ensemble_member_corr(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The members' rank correlation matrix (mean over eras)."""
    df = read_artifact_csv(tracking_uri, run_id, ENSEMBLE_MEMBER_CORR_ARTIFACT, index_col=0)
    return df if df is not None else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# Keras training curves


def metric_history(tracking_uri: str, run_ids: Iterable[str], keys: Iterable[str] = KERAS_METRICS) -> pd.DataFrame:
    """Every logged value of `keys` for each run: run_id, key, step, value (long format)."""
    client = get_client(tracking_uri)
    rows = []
    for run_id in run_ids:
        for key in keys:
            for m in client.get_metric_history(run_id, key):
                rows.append({"run_id": run_id, "key": key, "step": int(m.step), "value": float(m.value)})
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def training_summary(history: pd.DataFrame) -> pd.DataFrame:
    """Per run: epochs, best val_corr_mean and its epoch, final loss, mean rows/s."""
    cols = ["run_id", "epochs", "best_epoch", "best_val_corr_mean", "final_loss", "final_val_loss", "mean_rows_per_sec"]
    if history.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for run_id, h in history.groupby("run_id", sort=False):
        by_key = {k: g.sort_values("step") for k, g in h.groupby("key")}
        corr = by_key.get("val_corr_mean")
        best = corr.loc[corr["value"].idxmax()] if corr is not None and not corr.empty else None
        rows.append(
            {
                "run_id": run_id,
                "epochs": int(h["step"].nunique()),
                "best_epoch": int(best["step"]) if best is not None else None,
                "best_val_corr_mean": float(best["value"]) if best is not None else np.nan,
                "final_loss": float(by_key["loss"]["value"].iloc[-1]) if "loss" in by_key else np.nan,
                "final_val_loss": float(by_key["val_loss"]["value"].iloc[-1]) if "val_loss" in by_key else np.nan,
                "mean_rows_per_sec": float(by_key["rows_per_sec"]["value"].mean()) if "rows_per_sec" in by_key else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------
# VARMAX forecasts

FORECAST_KINDS = ("actual", "forecast", "lower", "upper")


def tidy_forecast(wide: pd.DataFrame) -> pd.DataFrame:
    """`varmax/test_forecast.csv` (period, then `<variable>_<kind>` columns with kind in actual,
    forecast, lower, upper; `<kind>_<variable>` also read) as rows: period, variable, kinds..."""
    if wide.empty:
        return pd.DataFrame(columns=["period", "variable", *FORECAST_KINDS])
    wide = wide.copy()
    period_col = "period" if "period" in wide else wide.columns[0]
    parts: dict[str, dict[str, str]] = {}
    for col in wide.columns:
        if col == period_col:
            continue
        for kind in FORECAST_KINDS:
            for sep in ("_", ".", ":"):
                if col.endswith(sep + kind):
                    parts.setdefault(col[: -len(kind) - 1], {})[kind] = col
                elif col.startswith(kind + sep):
                    parts.setdefault(col[len(kind) + 1 :], {})[kind] = col
    if not parts:
        raise ValueError(
            f"forecast table has no '<variable>_<kind>' columns (kinds {list(FORECAST_KINDS)}); got {list(wide.columns)}"
        )
    frames = []
    for variable, kinds in parts.items():
        f = pd.DataFrame({"period": wide[period_col].astype(str), "variable": variable})
        for kind in FORECAST_KINDS:
            f[kind] = wide[kinds[kind]].astype(float) if kind in kinds else np.nan
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def varmax_forecast(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The winner's test-set forecast versus actual, tidy (see `tidy_forecast`)."""
    df = read_artifact_csv(tracking_uri, run_id, VARMAX_FORECAST_ARTIFACT)
    return tidy_forecast(df if df is not None else pd.DataFrame())


def varmax_order_search(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The order-search table (p, q, aic, bic, hqic, test_rmse, fit_seconds, converged)."""
    df = read_artifact_csv(tracking_uri, run_id, VARMAX_ORDER_ARTIFACT)
    cols = ["p", "q", "aic", "bic", "hqic", "test_rmse", "fit_seconds", "converged"]
    return df if df is not None else pd.DataFrame(columns=cols)


def forecast_coverage(forecast: pd.DataFrame) -> pd.DataFrame:
    """Per variable: RMSE of the forecast and the share of actuals inside [lower, upper]."""
    if forecast.empty:
        return pd.DataFrame(columns=["variable", "rmse", "coverage", "periods"])
    f = forecast.dropna(subset=["actual", "forecast"])
    g = f.assign(
        sq=(f["actual"] - f["forecast"]) ** 2,
        inside=(f["actual"] >= f["lower"]) & (f["actual"] <= f["upper"]),
    ).groupby("variable", sort=False)
    return pd.DataFrame(
        {"rmse": np.sqrt(g["sq"].mean()), "coverage": g["inside"].mean(), "periods": g.size()}
    ).reset_index()


# ---------------------------------------------------------------------------------------------
# Compare: per-era corr of any runs


def per_era_corr(tracking_uri: str, run_ids: Iterable[str], target: str = "target") -> pd.DataFrame:
    """Per-era validation corr of each run, long: run_id, era, corr, cumulative_corr.

    Read from the `numerai` evaluator's `numerai_eval/per_era_corr.csv` (column `target`);
    Bayesian-NN runs without it fall back to `bnn/per_era.csv` (ensemble_corr).
    """
    frames = []
    for run_id in run_ids:
        df = read_artifact_csv(tracking_uri, run_id, PER_ERA_CORR_ARTIFACT, dtype={0: str})
        if df is not None:
            era_col = df.columns[0]
            col = target if target in df else (df.columns[1] if len(df.columns) > 1 else None)
            if col is None:
                continue
            f = pd.DataFrame({"era": df[era_col].astype(str), "corr": df[col].astype(float)})
        else:
            bnn = bnn_per_era(tracking_uri, run_id)
            if bnn.empty:
                continue
            f = pd.DataFrame({"era": bnn["era"].astype(str), "corr": bnn["ensemble_corr"].astype(float)})
        f = f.sort_values("era", kind="stable")
        f.insert(0, "run_id", run_id)
        f["cumulative_corr"] = f["corr"].cumsum()
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=["run_id", "era", "corr", "cumulative_corr"])
    return pd.concat(frames, ignore_index=True)


def per_era_diagnostics(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The evaluator's per-era diagnostics of a run (era, corr, mmc, bmc, ...); empty when the
    run has none."""
    df = read_artifact_csv(tracking_uri, run_id, PER_ERA_DIAGNOSTICS_ARTIFACT, dtype={0: str})
    if df is None or df.empty:
        return pd.DataFrame(columns=["era"])
    df = df.rename(columns={df.columns[0]: "era"})
    df["era"] = df["era"].astype(str)
    return df.sort_values("era", kind="stable").reset_index(drop=True)


def cumulative_diagnostics(per_era: dict[str, pd.DataFrame], scores: Iterable[str] = DIAGNOSTIC_CURVES) -> pd.DataFrame:
    """Long: version, era, score, value, cumulative (NaN eras count 0) for several versions."""
    frames = []
    for label, df in per_era.items():
        for score in scores:
            if score in df:
                values = df[score].astype(float)
                frames.append(pd.DataFrame({"version": label, "era": df["era"], "score": score.upper(),
                                            "value": values, "cumulative": values.fillna(0).cumsum()}))
    if not frames:
        return pd.DataFrame(columns=["version", "era", "score", "value", "cumulative"])
    return pd.concat(frames, ignore_index=True)


def diagnostic_tiles(metrics: dict[str, float]) -> list[tuple[str, float | None, int]]:
    """(label, value or None when not logged, digits) for each of Numerai's tiles."""
    return [(label, metrics.get(key), digits) for label, key, digits in DIAGNOSTIC_TILES]


def era_stats(per_era: pd.DataFrame) -> pd.DataFrame:
    """Per run, computed from its per-era corr: eras, mean, std, sharpe, max drawdown, % positive."""
    cols = ["run_id", "eras", "corr_mean", "corr_std", "sharpe", "max_drawdown", "positive_eras"]
    if per_era.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for run_id, g in per_era.groupby("run_id", sort=False):
        c = g["corr"].to_numpy(dtype=float)
        cum = np.cumsum(c)
        std = float(np.std(c, ddof=1)) if len(c) > 1 else np.nan
        rows.append(
            {
                "run_id": run_id,
                "eras": len(c),
                "corr_mean": float(c.mean()),
                "corr_std": std,
                "sharpe": float(c.mean() / std) if std and std > 0 else np.nan,
                "max_drawdown": float((np.maximum.accumulate(cum) - cum).max()),
                "positive_eras": float((c > 0).mean()),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def compare_table(runs: pd.DataFrame, run_ids: Iterable[str], metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Metrics of the chosen runs side by side: one row per metric, one column per run label.

    Without `metrics`, every metric logged by at least one of them (summary metrics first)."""
    ids = list(run_ids)
    sel = runs.set_index("run_id").loc[ids].reset_index()
    if metrics is None:
        logged = [c[len("metrics."):] for c in sel.columns if c.startswith("metrics.") and sel[c].notna().any()]
        first = [m for m in (*SUMMARY_METRICS, *BNN_METRICS) if m in logged]
        metrics = first + sorted(m for m in logged if m not in first)
    table = metric_columns(sel, list(metrics)).drop(columns=["run_id", "run_name", "family"])
    table.index = run_label(sel)
    return table.T


# ---------------------------------------------------------------------------------------------
# The `mlflow-numerai dashboard` command


def app_path() -> Path:
    """The Streamlit entry script shipped inside the package (works for pip installs too)."""
    return Path(__file__).resolve().parent / "dashboard_app" / "app.py"


def streamlit_command(tracking_uri: str, port: int, address: str = "localhost", headless: bool = False) -> list[str]:
    """The `streamlit run` command line for the dashboard on `address:port`."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true" if headless else "false",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--",
        "--tracking-uri",
        tracking_uri,
    ]


@click.command("dashboard")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="Port to serve on.")
@click.option("--address", default="localhost", show_default=True, help="Address to bind (0.0.0.0 for a team server).")
@click.option("--headless", is_flag=True, help="Do not open a browser.")
def dashboard_command(tracking_uri: str | None, port: int, address: str, headless: bool) -> None:
    """Start the Streamlit dashboard on the tracking store."""
    from mlflow_numerai.tracking import ensure_tracking_uri

    try:
        import streamlit  # noqa: F401
    except ImportError as exc:
        raise click.ClickException("the dashboard needs Streamlit: pip install 'mlflow-numerai[dashboard]'") from exc
    uri = ensure_tracking_uri(tracking_uri)
    click.echo(f"Dashboard on http://{address}:{port} reading {uri}")
    try:
        code = subprocess.call(streamlit_command(uri, port, address, headless), env=os.environ.copy())
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


# --------------------------------------------------------------------------------------------
# Studies (`mlflow-numerai study`): trial runs tagged `numerai.study`, params `trial.<name>`
# --------------------------------------------------------------------------------------------

STUDY_TAG = "numerai.study"


def study_trials(runs: pd.DataFrame, objective: str = "numerai_corr_mean") -> pd.DataFrame:
    """One row per trial run of a study: study, trial, run_id, the trial's parameters (columns
    without the `trial.` prefix) and `objective`. Empty when no study was run."""
    study_col, trial_col = f"tags.{STUDY_TAG}", f"tags.{STUDY_TAG}_trial"
    if study_col not in runs or trial_col not in runs:
        return pd.DataFrame(columns=["study", "trial", "run_id", "objective"])
    sel = runs[runs[trial_col].notna()]
    params = [c for c in sel.columns if c.startswith("params.trial.")]
    out = pd.DataFrame({"study": sel[study_col], "trial": pd.to_numeric(sel[trial_col]), "run_id": sel["run_id"]})
    for col in params:
        values = sel[col]
        numeric = pd.to_numeric(values, errors="coerce")
        out[col.removeprefix("params.trial.")] = numeric if numeric.notna().all() else values
    metric = f"metrics.{objective}"
    out["objective"] = sel[metric] if metric in sel else float("nan")
    return out.sort_values(["study", "trial"]).reset_index(drop=True)
