"""`mlflow-numerai ensemble NAME --member URI ...` (MLproject entry point `ensemble`).

Blends registered Numerai models into one self-contained `predict.pkl`:

1. each member URI (`models:/a@champion`, `models:/b/3`, `runs:/...`) is pinned to its version,
   must be a Numerai model (metadata `numerai_profile` "numerai": a VARMAX forecast is refused),
   and its raw `predict.pkl` is loaded and run on live (must meet the output contract);
2. every member predicts validation; weights are equal or fitted per era (`ensembles.fit_weights`);
3. the blend (`ensembles.make_ensemble_predict`, optionally neutralized) is logged with
   `log_numerai_model`, evaluated by the `numerai` evaluator, the members and the blend are scored
   side by side (the evaluator's `numerai_scores`), and it is registered as a new version whose
   tags and metadata carry the lineage. It is then validated and promoted like any model
   (`mlflow-numerai validate models:/NAME/V`, `mlflow-numerai promote NAME --version V`).

Any failure before the registration (bad member, member failing on live or validation) names
the member and registers nothing.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import mlflow
import numpy as np
import pandas as pd

from mlflow_numerai import ensembles
from mlflow_numerai.conventions import (
    ENSEMBLE_MEMBERS_TAG,
    ENSEMBLE_NEUTRALIZATION_TAG,
    ENSEMBLE_OBJECTIVE_TAG,
    ENSEMBLE_WEIGHTS_TAG,
    MODEL_ARTIFACT,
)
from mlflow_numerai.data import io as data_io
from mlflow_numerai.ensembles import EnsembleError, call_member
from mlflow_numerai.entrypoints import options
from mlflow_numerai.entrypoints.common import (
    evaluate_numerai,
    log_new_params,
    numerai_evaluator_config,
    read_split,
    start_family_run,
)
from mlflow_numerai.entrypoints.common import (
    register as register_version,
)
from mlflow_numerai.packaging import (
    OutputContractError,
    PackagingError,
    check_numerai_output,
    download_predict_pkl,
    load_predict,
    log_numerai_model,
    predict_arity,
)
from mlflow_numerai.plugins.evaluator import model_input, numerai_scores, parse_config
from mlflow_numerai.registry import RegistryError, resolve_model_version
from mlflow_numerai.tracking import ensure_tracking_uri

FAMILY = "ensemble"
ARTIFACT_DIR = "ensemble"
WEIGHTS_FILE = "weights.csv"
CANDIDATES_FILE = "weight_candidates.csv"
SIDE_BY_SIDE_FILE = "side_by_side.csv"
PER_ERA_FILE = "per_era_corr.csv"
MEMBER_CORR_FILE = "member_corr.csv"
PLOT_FILE = "members_vs_blend.png"
LINEAGE_TAG = ENSEMBLE_MEMBERS_TAG  # the names the tests and older code use
WEIGHTS_TAG = ENSEMBLE_WEIGHTS_TAG
NEUTRALIZATION_TAG = ENSEMBLE_NEUTRALIZATION_TAG
OBJECTIVE_TAG = ENSEMBLE_OBJECTIVE_TAG
BLEND_NAME = "ensemble"


@dataclass
class LoadedMember:
    """A member resolved, pinned and loaded."""

    uri: str  # as given
    pinned_uri: str  # models:/name/version when the URI was a registry URI
    label: str  # short display name, e.g. numerai-baseline/3
    predict: object
    arity: int
    registered_name: str | None = None
    version: str | None = None
    run_id: str | None = None
    metadata: dict = field(default_factory=dict)

    def lineage(self, weight: float) -> dict:
        return {"uri": self.uri, "pinned_uri": self.pinned_uri, "name": self.registered_name,
                "version": self.version, "run_id": self.run_id, "weight": float(weight),
                "feature_set": self.metadata.get("feature_set"),
                "data_version": self.metadata.get("data_version")}


def split_members(values: tuple[str, ...] | list[str]) -> list[str]:
    """Member URIs from repeated `--member` values, each possibly a comma-separated list."""
    uris = [u.strip() for v in values for u in v.split(",") if u.strip()]
    duplicated = sorted({u for u in uris if uris.count(u) > 1})
    if duplicated:
        raise click.BadParameter(f"member(s) given twice: {duplicated}", param_hint="'--member'")
    if len(uris) < 2:
        raise click.BadParameter(f"an ensemble needs at least 2 members, got {len(uris)}", param_hint="'--member'")
    return uris


def load_member(uri: str, workdir: Path) -> LoadedMember:
    """Resolve, check and load one member; EnsembleError naming it when it cannot be a member."""
    try:
        resolved = resolve_model_version(uri)
    except RegistryError as exc:
        raise EnsembleError(f"member {uri!r}: {exc}") from exc
    pinned = f"models:/{resolved[0]}/{resolved[1]}" if resolved else uri
    label = f"{resolved[0]}/{resolved[1]}" if resolved else uri
    try:
        info = mlflow.models.get_model_info(pinned)
    except Exception as exc:
        raise EnsembleError(f"member {uri!r} cannot be read: {exc}") from exc
    metadata = dict(info.metadata or {})
    profile = metadata.get("numerai_profile")
    if profile != "numerai":
        what = f"a {profile!r} model" if profile else "not a mlflow_numerai model"
        raise EnsembleError(f"member {uri!r} is {what}, not a Numerai model (numerai_profile 'numerai'): "
                            "only Numerai tournament models can be blended")
    try:
        pkl = download_predict_pkl(pinned, workdir / re.sub(r"[^\w.-]", "_", label))
        predict = load_predict(pkl)
        arity = predict_arity(predict)
    except PackagingError as exc:
        raise EnsembleError(f"member {uri!r}: {exc}") from exc
    run_id = info.run_id
    return LoadedMember(uri, pinned, label, predict, arity, resolved and resolved[0], resolved and resolved[1],
                        run_id, metadata)


def check_members_on_live(members: list[LoadedMember], live, benchmarks) -> None:
    """Every member must run on live and meet the output contract; EnsembleError naming it."""
    for m in members:
        try:
            out = call_member(m.label, m.predict, m.arity, live, benchmarks)
            check_numerai_output(out.to_frame("prediction"), live)
        except OutputContractError as exc:
            raise EnsembleError(f"member {m.uri!r} fails on live: {exc}") from exc
        except Exception as exc:
            raise EnsembleError(f"member {m.uri!r} fails on live ({len(live)} rows): {exc}") from exc


def member_predictions(members: list[LoadedMember], frame, benchmarks=None):
    """Each member's predictions on `frame` (ids x member labels); EnsembleError naming a failure."""
    columns = {}
    for m in members:
        started = time.perf_counter()
        try:
            columns[m.label] = call_member(m.label, m.predict, m.arity, frame, benchmarks)
        except Exception as exc:
            raise EnsembleError(f"member {m.uri!r} fails on validation: {exc}") from exc
        seconds = time.perf_counter() - started
        click.echo(f"ensemble: {m.label} predicted {len(frame)} validation rows in {seconds:.1f}s")
    return pd.DataFrame(columns, index=frame.index)


def metric_key(label: str) -> str:
    """A metric-name-safe form of a member label (numerai-baseline/3 -> numerai-baseline_v3)."""
    return re.sub(r"[^\w.-]", "_", label.replace("/", "_v"))


def side_by_side(predictions, validation, cfg) -> tuple:
    """(summary table: one row per member and the blend, per-era corr: eras x columns), scored by
    the `numerai` evaluator's own `numerai_scores`."""
    rows, per_era = [], {}
    for column in predictions.columns:
        scores = numerai_scores(predictions[column], validation, cfg)
        per_era[column] = scores.per_era_corr[cfg.targets[0]]
        rows.append({"model": column, **scores.metrics})
    return pd.DataFrame(rows).set_index("model"), pd.DataFrame(per_era).rename_axis("era")


def plot_members_vs_blend(per_era, weights: dict[str, float], corr_matrix, path: Path) -> Path:
    """Cumulative per-era corr of each member and the blend, the weights, the member correlations."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5))
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [3, 1.2, 1.6]})
    x = np.arange(len(per_era))
    for column in per_era.columns:
        blend = column == BLEND_NAME
        ax1.plot(x, per_era[column].fillna(0).cumsum(), label=column, linewidth=2.5 if blend else 1.2,
                 color="black" if blend else None)
    ax1.set_title("cumulative validation corr")
    ax1.set_xlabel("era")
    ax1.legend(fontsize="small")
    names = list(weights)
    ax2.barh(names, [weights[n] for n in names])
    ax2.set_xlim(0, 1)
    ax2.set_title("weights")
    ax2.tick_params(axis="y", labelsize="small")
    image = ax3.imshow(corr_matrix.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    ax3.set_xticks(range(len(corr_matrix)), corr_matrix.columns, rotation=45, ha="right", fontsize="small")
    ax3.set_yticks(range(len(corr_matrix)), corr_matrix.index, fontsize="small")
    for i in range(len(corr_matrix)):
        for j in range(len(corr_matrix)):
            ax3.text(j, i, f"{corr_matrix.iat[i, j]:.2f}", ha="center", va="center", fontsize="small")
    ax3.set_title("member rank corr (mean over eras)")
    fig.colorbar(image, ax=ax3, shrink=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def build_ensemble(name: str, member_uris: list[str], *, data_dir: str = "synthetic", target: str = "target",
                   objective: str = "corr", neutralize_feature_set: str | None = None,
                   proportion: float = 0.0, feature_set: str = "small", register: bool = True) -> dict:
    """Load, check, fit, log, evaluate and (if `register`) register the ensemble. Returns a summary
    dict (run_id, model_uri, version, weights, scores). EnsembleError on bad members/options."""
    if objective not in ensembles.OBJECTIVES:
        raise ensembles.EnsembleError(f"objective must be one of {list(ensembles.OBJECTIVES)}, got {objective!r}")
    if not 0.0 <= proportion <= 1.0:
        raise ensembles.EnsembleError(f"--proportion must lie in [0, 1], got {proportion}")
    path = data_io.resolve_data_dir(data_dir)
    neutral_features: list[str] = []
    if neutralize_feature_set and proportion > 0:
        neutral_features = data_io.feature_columns(path, neutralize_feature_set)

    # Everything that can fail because of a member happens before the run starts.
    with tempfile.TemporaryDirectory(prefix="mlflow_numerai_ensemble_") as tmp:
        members = []
        for uri in member_uris:
            members.append(load_member(uri, Path(tmp)))
            click.echo(f"ensemble: member {members[-1].label} ({uri}) loaded, {members[-1].arity}-parameter predict")
    labels = [m.label for m in members]
    if len(set(labels)) != len(labels):
        raise ensembles.EnsembleError(f"two member URIs point at the same model version: {labels}")
    live = read_split(path, "live")
    bench_path = path / "live_benchmark_models.parquet"
    benchmarks = None
    if bench_path.exists():
        benchmarks = pd.read_parquet(bench_path)
        benchmarks = benchmarks.set_index("id") if "id" in benchmarks.columns else benchmarks
    check_members_on_live(members, live, benchmarks)
    validation = read_split(path, "validation")
    config = numerai_evaluator_config(path, feature_set, target)
    cfg = parse_config(config, validation, target)
    preds = member_predictions(members, model_input(validation, cfg))
    eras = validation[cfg.era_col]

    with start_family_run(FAMILY, run_name=f"ensemble {name}") as run:
        log_new_params({"name": name, "members": ",".join(member_uris),
                        "pinned_members": ",".join(m.pinned_uri for m in members),
                        "objective": objective, "neutralize_feature_set": neutralize_feature_set or "",
                        "proportion": proportion, "data_dir": data_dir, "target": target, "feature_set": feature_set,
                        "n_members": len(members)})
        fit = ensembles.fit_weights(preds, validation[target], eras, objective)
        weights = dict(zip(labels, (float(w) for w in fit.weights)))
        click.echo("ensemble: weights (" + objective + "): " + ", ".join(f"{k}={v:.4f}" for k, v in weights.items()))
        mlflow.log_metrics({f"weight_{metric_key(k)}": v for k, v in weights.items()})

        predict = ensembles.make_ensemble_predict(
            [ensembles.Member(m.label, m.predict, m.arity) for m in members], fit.weights,
            neutral_features, proportion)
        neutralization = {"feature_set": neutralize_feature_set if neutral_features else None,
                          "proportion": proportion if neutral_features else 0.0,
                          "n_features": len(neutral_features), "definition": "numerai-tools neutralize, per era"}
        lineage = [m.lineage(weights[m.label]) for m in members]
        info = log_numerai_model(predict, MODEL_ARTIFACT, data_dir=path, data_version=data_io.data_version(path),
                                 metadata={"ensemble": {"members": lineage, "objective": objective,
                                                        "neutralization": neutralization}})
        click.echo(f"ensemble: logged {info.model_uri}")

        blend_in = model_input(validation, cfg)
        blend = ensembles.rank_blend(preds, fit.weights, eras)
        if neutral_features:
            blend = ensembles.neutralize_blend(blend, blend_in[neutral_features], eras, proportion)
        scored = preds.assign(**{BLEND_NAME: blend})
        table, per_era = side_by_side(scored, validation, cfg)
        corr_matrix = ensembles.member_correlations(preds, eras)
        best_member = table.drop(index=BLEND_NAME)["numerai_corr_mean"].max()
        mlflow.log_metrics({
            **{f"member_{metric_key(m)}_{k}": float(v) for m in labels for k, v in table.loc[m].items()
               if k in ("numerai_corr_mean", "numerai_corr_sharpe", "mmc_mean")},
            "best_member_corr_mean": float(best_member),
            "blend_minus_best_member_corr": float(table.loc[BLEND_NAME, "numerai_corr_mean"] - best_member),
            "mean_member_rank_corr": float(corr_matrix.to_numpy()[~np.eye(len(corr_matrix), dtype=bool)].mean()),
        })
        with tempfile.TemporaryDirectory() as out_tmp:
            out = Path(out_tmp)
            pd.DataFrame({"member": labels, "uri": [m.pinned_uri for m in members],
                          "weight": fit.weights}).to_csv(out / WEIGHTS_FILE, index=False)
            fit.candidates.to_csv(out / CANDIDATES_FILE)
            table.to_csv(out / SIDE_BY_SIDE_FILE)
            per_era.to_csv(out / PER_ERA_FILE)
            corr_matrix.to_csv(out / MEMBER_CORR_FILE)
            plot_members_vs_blend(per_era, weights, corr_matrix, out / PLOT_FILE)
            mlflow.log_artifacts(str(out), ARTIFACT_DIR)
        shown = table[[c for c in ("numerai_corr_mean", "numerai_corr_sharpe", "mmc_mean") if c in table.columns]]
        click.echo("ensemble: validation, members and blend side by side\n" + shown.round(4).to_string())

        metrics = evaluate_numerai(info.model_uri, validation, target, config)
        click.echo(f"ensemble: evaluator numerai_corr_mean={metrics.get('numerai_corr_mean', float('nan')):.4f}")
        version = None
        if register:
            tags = {LINEAGE_TAG: json.dumps(lineage), WEIGHTS_TAG: json.dumps(weights),
                    NEUTRALIZATION_TAG: json.dumps(neutralization), OBJECTIVE_TAG: objective}
            version = register_version(info.model_uri, name, FAMILY, run.info.run_id, **tags).version
            click.echo(f"ensemble: next: mlflow-numerai validate models:/{name}/{version}, "
                       f"then mlflow-numerai promote {name} --version {version}")
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "version": version, "weights": weights,
            "side_by_side": table, "per_era": per_era, "member_corr": corr_matrix, "fit": fit}


@click.command("ensemble")
@click.argument("name")
@click.option("--member", "members", multiple=True, required=True, metavar="URI",
              help="Member model URI (models:/name@alias, models:/name/3, runs:/...); repeat, or comma-separate.")
@options.data_dir_option('Numerai data directory (live checks, validation fit), or "synthetic".')
@options.target_option("Target the weights are fitted and scored on.")
@click.option("--objective", type=click.Choice(["equal", "corr", "sharpe"]), default="corr", show_default=True,
              help="equal weights, or fitted per era on validation to maximise mean corr or its Sharpe.")
@click.option("--neutralize-feature-set", default="",
              help="Feature set of features.json to neutralize the blend to (empty: none).")
@click.option("--proportion", type=options.FiniteFloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Neutralization proportion (numerai-tools' neutralize); 0: none.")
@options.feature_set_option("Feature set for the evaluator's feature exposure.")
@options.tracking_uri_option()
def ensemble(name: str, members: tuple[str, ...], data_dir: str, target: str, objective: str,
             neutralize_feature_set: str, proportion: float, feature_set: str, tracking_uri: str | None) -> None:
    """Blend registered Numerai models into one predict.pkl registered as NAME (a new version)."""
    uris = split_members(members)
    if proportion > 0 and not neutralize_feature_set.strip():
        raise click.BadParameter("a proportion > 0 needs --neutralize-feature-set", param_hint="'--proportion'")
    ensure_tracking_uri(tracking_uri)
    try:
        build_ensemble(name, uris, data_dir=data_dir, target=target, objective=objective,
                       neutralize_feature_set=neutralize_feature_set.strip() or None, proportion=proportion,
                       feature_set=feature_set)
    except (EnsembleError, data_io.DataError) as exc:
        raise click.ClickException(f"{exc} (nothing registered)") from exc
