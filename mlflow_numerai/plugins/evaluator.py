"""The `numerai` MLflow model evaluator (entry point group `mlflow.model_evaluator`).

    mlflow.models.evaluate(model_uri, data=validation_df, targets="target", model_type="regressor",
                           evaluators=["numerai"], evaluator_config={"numerai": {...}})

(with `evaluators="numerai"`, a string, MLflow takes the flat `evaluator_config={...}`.)

The model gets the whole frame (id index, `era`, `data_type`, every feature) without the target
columns (every column whose name starts with "target") and without a meta-model column, like a
live frame. Its predictions are scored with `mlflow_numerai.scoring`, era by era.

Logged to the run (names in docs/ARCHITECTURE.md): `numerai_corr_mean`, `numerai_corr_std`,
`numerai_corr_sharpe`, `numerai_corr_max_drawdown`; `mmc_mean`, `mmc_std`, `mmc_sharpe` when a
meta model is given; `fnc_mean`, `fnc_sharpe` when `feature_neutral` is on (each of these for
every target, suffixed `_<target>` for targets other than the main one, the `targets=` of
`evaluate`); `max_feature_exposure` (mean over eras of the largest absolute correlation with a
feature); `n_eras`. Artifacts: `numerai_eval/per_era_corr.csv` (index era, one column per target),
`numerai_eval/per_era_mmc.csv` (with a meta model), `numerai_eval/summary.csv` and
`numerai_eval/cumulative_corr.png`.

`evaluator_config` keys:

* `era_col` (default "era"): the era column of the data;
* `targets`: more target columns to score (a name or a list); the main target comes first;
* `meta_model`: the meta model or a benchmark model for MMC, either a column of the data or a
  `pd.Series` indexed by id (e.g. a column of `validation_benchmark_models.parquet`);
* `feature_cols` (a list), or `feature_set` with `data_dir` (read from `features.json`): the
  features for max feature exposure; default every data column starting with "feature_";
  `[]` turns exposure off; a NaN feature counts as the middle bin 2 (as in the models);
* `feature_neutral` (default False): also score feature-neutral corr (slower: a least-squares
  fit per era);
* `max_filtered_ratio` (default 0.2, as numerai-tools): the largest share of an era's ids that
  may lack a target (None: no check).

Data without the era column and no `evaluator_config` is not Numerai data: the evaluator then
steps aside with a warning (it may run under `evaluators=None` next to MLflow's own); with a
config, that is an error.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from mlflow_numerai import scoring
from mlflow_numerai.data.cache import MIDDLE_BIN  # a NaN feature counts as that, as in the models

EVAL_DIR = "numerai_eval"
PER_ERA_CORR_FILE = "per_era_corr.csv"
PER_ERA_MMC_FILE = "per_era_mmc.csv"
SUMMARY_FILE = "summary.csv"
PLOT_FILE = "cumulative_corr.png"
DIAGNOSTICS_FILE = "per_era_diagnostics.csv"
DIAGNOSTICS_PLOT_FILE = "diagnostics.png"
PREDICTIONS_FILE = "predictions.parquet"
CHURN_TAG = "numerai.churn"
DEFAULT_TOP_BOTTOM = 200  # Numerai's TB200
CONFIG_KEYS = ("era_col", "targets", "meta_model", "benchmark", "feature_cols", "feature_set", "data_dir",
               "feature_neutral", "max_filtered_ratio", "top_bottom", "churn_model", "previous_predictions",
               "payout_preset")


class NumeraiEvaluationError(ValueError):
    """The data, the config or the model's output cannot be evaluated as given."""


@dataclass
class EvalConfig:
    """A validated `evaluator_config`, resolved against one data frame."""

    era_col: str = "era"
    targets: list[str] = field(default_factory=list)  # main target first
    meta_model: pd.Series | None = None
    meta_model_col: str | None = None  # when the meta model is a column of the data
    benchmark: pd.Series | None = None
    benchmark_col: str | None = None
    feature_cols: list[str] = field(default_factory=list)
    feature_neutral: bool = True
    max_filtered_ratio: float | None = scoring.DEFAULT_MAX_FILTERED_RATIO
    top_bottom: int | None = DEFAULT_TOP_BOTTOM
    churn_model: str | None = None  # registered model name: churn against @champion or the latest version
    previous_predictions: pd.Series | None = None  # or given directly
    payout_preset: str = scoring.DEFAULT_PAYOUT_PRESET


def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise NumeraiEvaluationError(f"evaluator_config[{key!r}] must be a column name or a list of names, got {value!r}")


def _series_option(value: Any, frame: pd.DataFrame, key: str) -> tuple[str | None, pd.Series | None]:
    """(column name, Series) of a config value that is a column of the data or a Series by id."""
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in frame.columns:
            raise NumeraiEvaluationError(f"{key} column {value!r} is not in the data")
        return value, frame[value]
    if isinstance(value, pd.DataFrame):
        if value.shape[1] != 1:
            raise NumeraiEvaluationError(
                f"{key} must be one column; got a DataFrame with columns {list(value.columns)}: pick one"
            )
        return None, value.iloc[:, 0]
    if isinstance(value, pd.Series):
        return None, value
    raise NumeraiEvaluationError(f"{key} must be a column name or a pandas Series indexed by id, got {type(value).__name__}")


def parse_config(config: dict | None, frame: pd.DataFrame, main_target: str) -> EvalConfig:
    """Check `config` against the data `frame` (which holds every column, the main target too)."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise NumeraiEvaluationError(f"unknown evaluator_config key(s) {unknown}; known keys: {list(CONFIG_KEYS)}")
    cfg = EvalConfig()
    cfg.era_col = config.get("era_col", "era")
    if not isinstance(cfg.era_col, str) or cfg.era_col not in frame.columns:
        raise NumeraiEvaluationError(f"era column {cfg.era_col!r} is not in the data (set evaluator_config['era_col'])")
    targets = [main_target] + [t for t in _as_list(config.get("targets"), "targets") if t != main_target]
    missing = [t for t in targets if t not in frame.columns]
    if missing:
        raise NumeraiEvaluationError(f"target column(s) {missing} are not in the data")
    cfg.targets = targets

    cfg.meta_model_col, cfg.meta_model = _series_option(config.get("meta_model"), frame, "meta_model")
    cfg.benchmark_col, cfg.benchmark = _series_option(config.get("benchmark"), frame, "benchmark")
    _, cfg.previous_predictions = _series_option(config.get("previous_predictions"), frame, "previous_predictions")
    churn_model = config.get("churn_model")
    if churn_model is not None and not (isinstance(churn_model, str) and churn_model.strip()):
        raise NumeraiEvaluationError(f"churn_model must be a registered model name, got {churn_model!r}")
    cfg.churn_model = churn_model
    tb = config.get("top_bottom", DEFAULT_TOP_BOTTOM)
    if tb is not None and (isinstance(tb, bool) or not isinstance(tb, int) or tb < 1):
        raise NumeraiEvaluationError(f"top_bottom must be a positive integer or None, got {tb!r}")
    cfg.top_bottom = tb
    preset = config.get("payout_preset", scoring.DEFAULT_PAYOUT_PRESET)
    if preset not in scoring.PAYOUT_PRESETS:
        raise NumeraiEvaluationError(f"payout_preset {preset!r} is not one of {sorted(scoring.PAYOUT_PRESETS)}")
    cfg.payout_preset = preset

    if "feature_cols" in config:
        cfg.feature_cols = _as_list(config["feature_cols"], "feature_cols")
    elif "feature_set" in config:
        if "data_dir" not in config:
            raise NumeraiEvaluationError("evaluator_config['feature_set'] needs evaluator_config['data_dir'] (features.json)")
        from mlflow_numerai.data import io as data_io

        cfg.feature_cols = data_io.feature_columns(data_io.resolve_data_dir(config["data_dir"]), config["feature_set"])
    else:
        cfg.feature_cols = [c for c in frame.columns if isinstance(c, str) and c.startswith("feature_")]
    missing = [c for c in cfg.feature_cols if c not in frame.columns]
    if missing:
        raise NumeraiEvaluationError(f"{len(missing)} feature column(s) are not in the data, e.g. {missing[:3]}")

    cfg.feature_neutral = bool(config.get("feature_neutral", bool(cfg.feature_cols)))
    if cfg.feature_neutral and not cfg.feature_cols:
        raise NumeraiEvaluationError("feature_neutral needs feature columns (feature_cols or feature_set)")
    ratio = config.get("max_filtered_ratio", scoring.DEFAULT_MAX_FILTERED_RATIO)
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0 <= ratio <= 1):
        raise NumeraiEvaluationError(f"max_filtered_ratio must be a number in [0, 1] or None, got {ratio!r}")
    cfg.max_filtered_ratio = ratio
    return cfg


def model_input(frame: pd.DataFrame, cfg: EvalConfig) -> pd.DataFrame:
    """What the model sees: the frame without target columns and the meta-model column."""
    drop = [c for c in frame.columns if (isinstance(c, str) and c.startswith("target")) or c in cfg.targets]
    drop += [c for c in (cfg.meta_model_col, cfg.benchmark_col) if c is not None and c not in drop]
    return frame.drop(columns=drop)


def predictions_series(output: Any, index: pd.Index, column: str | None = None) -> pd.Series:
    """The model's output as one float Series indexed like the input.

    Accepts a DataFrame (column `prediction`, the `predictions` column named to `evaluate`, or
    its only column), a Series or a 1-D array. Indexed output must carry the input's ids."""
    if isinstance(output, pd.DataFrame):
        if column is not None and column in output.columns:
            output = output[column]
        elif "prediction" in output.columns:
            output = output["prediction"]
        elif output.shape[1] == 1:
            output = output.iloc[:, 0]
        else:
            raise NumeraiEvaluationError(
                f"the model returned columns {list(output.columns)[:5]}; expected one column 'prediction' "
                "(or name one with evaluate(..., predictions=...))"
            )
    if isinstance(output, pd.Series):
        if output.index.equals(index):
            series = output
        elif len(output) == len(index) and output.index.is_unique and set(output.index) == set(index):
            series = output.reindex(index)
        elif len(output) == len(index) and isinstance(output.index, pd.RangeIndex):
            series = pd.Series(output.to_numpy(), index=index)  # positional output of a generic model
        else:
            raise NumeraiEvaluationError(
                f"the model's predictions are indexed by {len(output)} ids that are not the input's "
                f"{len(index)} ids (e.g. {list(output.index[:3])} vs {list(index[:3])})"
            )
    else:
        values = np.asarray(output)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or len(values) != len(index):
            raise NumeraiEvaluationError(
                f"the model returned shape {values.shape}; expected {len(index)} predictions, one per row"
            )
        series = pd.Series(values, index=index)
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise NumeraiEvaluationError(f"the model's predictions must be numbers, got dtype {series.dtype}")
    series = series.astype(np.float64).rename("prediction")
    n_bad = int((~np.isfinite(series.to_numpy())).sum())
    if n_bad:
        raise NumeraiEvaluationError(f"the model returned {n_bad} NaN or infinite predictions")
    return series


def _suffix(target: str, main_target: str) -> str:
    return "" if target == main_target else f"_{target}"


_LOGGED_SUMMARIES = {  # for targets other than the main one
    "numerai_corr": ("mean", "std", "sharpe", "max_drawdown"),
    "mmc": ("mean", "std", "sharpe"),
    "fnc": ("mean", "sharpe"),
}
# the main target: every summary of every diagnostic
_MAIN_SUMMARIES = ("mean", "std", "sharpe", "smart_sharpe", "max_drawdown", "positive_share")
_TB_SUMMARIES = ("mean", "sharpe")


@dataclass
class NumeraiScores:
    """Everything the evaluator logs, computed from predictions and data only."""

    metrics: dict[str, float]
    per_era_corr: pd.DataFrame  # eras x targets
    per_era_mmc: pd.DataFrame | None  # eras x targets
    summary: pd.DataFrame  # one row per (score, target)
    per_era: pd.DataFrame | None = None  # eras x diagnostics of the main target
    notes: list[str] = field(default_factory=list)


def _tb_name(name: str, tb: int) -> str:
    return f"{name}_tb{tb}"


def numerai_scores(
    predictions: pd.Series, frame: pd.DataFrame, cfg: EvalConfig, previous: pd.Series | None = None
) -> NumeraiScores:
    """Per-era diagnostics of `predictions` on `frame` and their summaries: corr (each target),
    MMC (meta model), BMC and corr with the benchmark, CWMM, FNC, the top/bottom variants, churn
    against `previous` (shared ids), the payout estimate and max feature exposure."""
    main = cfg.targets[0]
    eras = frame[cfg.era_col]
    preds = predictions.to_frame("prediction")
    kw = {"max_filtered_ratio": cfg.max_filtered_ratio}
    notes: list[str] = []
    corr, mmc, fnc = {}, {}, {}
    for target in cfg.targets:
        corr[target] = scoring.per_era_numerai_corr(preds, frame[target], eras, **kw)["prediction"]
        if cfg.meta_model is not None:
            mmc[target] = scoring.per_era_correlation_contribution(
                preds, cfg.meta_model, frame[target], eras, **kw
            )["prediction"]
        if cfg.feature_neutral and target == main:
            fnc[target] = scoring.per_era_feature_neutral_corr(
                preds, frame[cfg.feature_cols], frame[target], eras, nan_fill=MIDDLE_BIN, **kw
            )["prediction"]
    per_era_corr = pd.DataFrame(corr).rename_axis("era")
    per_era_mmc = pd.DataFrame(mmc).rename_axis("era") if mmc else None

    # the main target's diagnostics, one column each
    target = frame[main]
    diag: dict[str, pd.Series] = {"corr": corr[main]}
    if cfg.meta_model is not None:
        diag["mmc"] = mmc[main]
        diag["cwmm"] = scoring.per_era_corr_with(preds, cfg.meta_model, eras, **kw)["prediction"]
    if cfg.benchmark is not None:
        diag["bmc"] = scoring.per_era_bmc(preds, cfg.benchmark, target, eras, **kw)["prediction"]
        diag["corr_with_benchmark"] = scoring.per_era_corr_with(
            preds, cfg.benchmark, eras, name="benchmark", **kw
        )["prediction"]
    if fnc:
        diag["fnc"] = fnc[main]
    tb = cfg.top_bottom
    if tb is not None:
        sizes = target.notna().groupby(eras).sum()
        if (sizes >= 2 * tb).any():
            with warnings.catch_warnings():  # eras too small for top_bottom: NaN, counted in n_eras
                warnings.simplefilter("ignore", RuntimeWarning)
                diag[_tb_name("corr", tb)] = scoring.per_era_numerai_corr(preds, target, eras, top_bottom=tb, **kw)["prediction"]
                if cfg.meta_model is not None:
                    diag[_tb_name("mmc", tb)] = scoring.per_era_correlation_contribution(
                        preds, cfg.meta_model, target, eras, top_bottom=tb, **kw
                    )["prediction"]
                if cfg.benchmark is not None:
                    diag[_tb_name("bmc", tb)] = scoring.per_era_bmc(
                        preds, cfg.benchmark, target, eras, top_bottom=tb, **kw
                    )["prediction"]
                if fnc:
                    diag[_tb_name("fnc", tb)] = scoring.per_era_feature_neutral_corr(
                        preds, frame[cfg.feature_cols], target, eras, nan_fill=MIDDLE_BIN, top_bottom=tb, **kw
                    )["prediction"]
        else:
            notes.append(f"top_bottom={tb} skipped: every era has fewer than {2 * tb} scored rows")
    metrics: dict[str, float] = {"n_eras": float(per_era_corr[main].notna().sum())}
    if previous is not None:
        churn, n_shared = scoring.per_era_churn(preds, previous, eras)
        diag["churn"] = churn["prediction"]
        metrics["churn_n_ids"] = float(n_shared)
        if tb is not None and churn["prediction"].notna().any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                churn_tb, _ = scoring.per_era_churn(preds, previous, eras, top_bottom=tb)
            if churn_tb["prediction"].notna().any():
                diag[_tb_name("churn", tb)] = churn_tb["prediction"]
    if "mmc" in diag:
        diag["payout"] = scoring.payout_estimate(diag["corr"], diag["mmc"], preset=cfg.payout_preset)
    per_era = pd.DataFrame(diag).rename_axis("era")

    rows = []
    for name, table in (("numerai_corr", per_era_corr), ("mmc", per_era_mmc)):
        if table is None:
            continue
        summary = scoring.score_summary(table)
        for t, row in summary.iterrows():
            rows.append({"score": name, "target": t, **row.to_dict()})
            if t != main:
                for key in _LOGGED_SUMMARIES[name]:
                    metrics[f"{name}_{key}_{t}"] = float(row[key])
    diag_summary = scoring.score_summary(per_era)
    for name, row in diag_summary.iterrows():
        metric = f"numerai_{name}" if name == "corr" or name.startswith("corr_tb") else name
        if name not in ("corr", "mmc"):
            rows.append({"score": metric, "target": main, **row.to_dict()})
        if name.startswith("churn"):
            metrics[f"{metric}_mean"] = float(row["mean"])
            continue
        keys = _TB_SUMMARIES if name.endswith(f"_tb{tb}") or name.startswith(("cwmm", "corr_with")) else _MAIN_SUMMARIES
        for key in keys:
            metrics[f"{metric}_{key}"] = float(row[key])
    if cfg.feature_cols:
        exposure = scoring.per_era_max_feature_exposure(preds, frame[cfg.feature_cols], eras, nan_fill=MIDDLE_BIN)["prediction"]
        metrics["max_feature_exposure"] = float(exposure.mean())
        per_era["max_feature_exposure"] = exposure
    return NumeraiScores(metrics, per_era_corr, per_era_mmc, pd.DataFrame(rows), per_era, notes)


def plot_cumulative_corr(per_era_corr: pd.DataFrame, path: str | os.PathLike, per_era_mmc: pd.DataFrame | None = None) -> Path:
    """Per-era corr of the main target (bars) and the cumulative corr of every target (lines)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    main = per_era_corr.columns[0]
    x = np.arange(len(per_era_corr))
    fig = Figure(figsize=(10, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    values = per_era_corr[main].fillna(0).to_numpy()
    ax1.bar(x, values, color=np.where(values >= 0, "tab:green", "tab:red"))
    ax1.axhline(0, color="black", linewidth=0.5)
    ax1.set_ylabel(f"corr ({main})")
    for target in per_era_corr.columns:
        ax2.plot(x, per_era_corr[target].fillna(0).cumsum().to_numpy(), label=f"corr {target}")
    if per_era_mmc is not None:
        for target in per_era_mmc.columns:
            ax2.plot(x, per_era_mmc[target].fillna(0).cumsum().to_numpy(), linestyle="--", label=f"mmc {target}")
    ax2.axhline(0, color="black", linewidth=0.5)
    ax2.set_ylabel("cumulative")
    ax2.set_xlabel("era")
    ax2.legend(loc="best", fontsize="small")
    step = max(1, len(x) // 12)
    ax2.set_xticks(x[::step], [str(e) for e in per_era_corr.index[::step]], rotation=45)
    fig.suptitle("numerai evaluation: per-era and cumulative corr")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


_DIAG_COLORS = {"corr": "tab:blue", "mmc": "tab:orange", "bmc": "tab:green"}


def plot_diagnostics(per_era: pd.DataFrame, path: str | os.PathLike, title: str = "diagnostics") -> Path:
    """Numerai's diagnostics chart: cumulative CORR, MMC and BMC (top) and their per-era bars
    side by side (bottom)."""
    from matplotlib.figure import Figure

    shown = [c for c in ("corr", "mmc", "bmc") if c in per_era.columns]
    x = np.arange(len(per_era))
    fig = Figure(figsize=(11, 6.5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / len(shown)
    for i, name in enumerate(shown):
        values = per_era[name].fillna(0).to_numpy()
        label = f"{name.upper()} (mean {per_era[name].mean():+.4f})"
        ax1.plot(x, values.cumsum(), color=_DIAG_COLORS[name], label=label)
        ax2.bar(x + (i - (len(shown) - 1) / 2) * width, values, width=width, color=_DIAG_COLORS[name], label=name.upper())
    for ax in (ax1, ax2):
        ax.axhline(0, color="black", linewidth=0.5)
    ax1.set_ylabel("cumulative")
    ax1.legend(loc="upper left", fontsize="small")
    ax2.set_ylabel("per era")
    ax2.set_xlabel("era")
    step = max(1, len(x) // 12)
    ax2.set_xticks(x[::step], [str(e) for e in per_era.index[::step]], rotation=45)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def previous_predictions(churn_model: str, frame: pd.DataFrame, cfg: EvalConfig) -> tuple[pd.Series | None, str]:
    """The predictions of the registered model's @champion (else its latest version) to score
    churn against, and a note saying which (or why there are none). Read from the version's
    run (`numerai_eval/predictions.parquet`), else the version's model is run on the data."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        try:
            mv, which = client.get_model_version_by_alias(churn_model, "champion"), "@champion"
        except Exception:
            versions = client.search_model_versions(f"name='{churn_model}'")
            if not versions:
                return None, f"churn skipped: {churn_model!r} has no registered version yet"
            mv, which = max(versions, key=lambda v: int(v.version)), "latest version"
    except Exception as err:  # registry unreachable or no such model
        return None, f"churn skipped: no registered model {churn_model!r} ({type(err).__name__})"
    label = f"{churn_model}/{mv.version} ({which})"
    run_id = (mv.tags or {}).get("numerai.run_id") or mv.run_id
    if run_id:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{EVAL_DIR}/{PREDICTIONS_FILE}")
            return pd.read_parquet(local)["prediction"], f"churn against {label}, from its evaluation"
        except Exception:
            pass
    try:
        model = mlflow.pyfunc.load_model(f"models:/{churn_model}/{mv.version}")
        output = model.predict(model_input(frame, cfg))
        return predictions_series(output, frame.index), f"churn against {label}, predicted now"
    except Exception as err:
        return None, f"churn skipped: {label} could not predict ({type(err).__name__}: {str(err)[:200]})"


class NumeraiEvaluator(ModelEvaluator):
    """Numerai's per-era scores for a regressor, as an MLflow evaluator plugin."""

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type == "regressor"

    def evaluate(
        self,
        *,
        model_type,
        dataset,
        run_id,
        evaluator_config,
        model=None,
        extra_metrics=None,
        custom_artifacts=None,
        predictions=None,
        **kwargs,
    ):
        import mlflow
        from mlflow.models.evaluation.artifacts import CsvEvaluationArtifact, ImageEvaluationArtifact

        features = dataset.features_data
        if not isinstance(features, pd.DataFrame):
            raise NumeraiEvaluationError("the numerai evaluator needs a pandas DataFrame as data")
        main_target = getattr(dataset, "targets_name", None)
        main_target = main_target if isinstance(main_target, str) else "target"
        era_col = (evaluator_config or {}).get("era_col", "era")
        if era_col not in features.columns and not evaluator_config:
            warnings.warn(
                f"numerai evaluator skipped: the data has no {era_col!r} column (not Numerai data; "
                "set evaluator_config={'era_col': ...} if its era column has another name)",
                UserWarning,
                stacklevel=2,
            )
            return None
        if dataset.labels_data is None:
            raise NumeraiEvaluationError("the numerai evaluator needs targets (evaluate(..., targets='target'))")
        frame = features.copy(deep=False)
        frame[main_target] = np.asarray(dataset.labels_data)
        cfg = parse_config(evaluator_config, frame, main_target)

        if model is not None:
            output = model.predict(model_input(frame, cfg))
        elif dataset.predictions_data is not None:
            output = dataset.predictions_data
        else:
            raise NumeraiEvaluationError("nothing to evaluate: no model and no predictions column")
        preds = predictions_series(output, frame.index, predictions)
        previous, churn_note = cfg.previous_predictions, "churn against the given previous_predictions"
        if previous is None and cfg.churn_model:
            previous, churn_note = previous_predictions(cfg.churn_model, frame, cfg)
        elif previous is None:
            churn_note = "churn skipped: the run registers no model (evaluator_config['churn_model'])"
        scores = numerai_scores(preds, frame, cfg, previous)
        if "churn_n_ids" in scores.metrics:
            churn_note += f" on {int(scores.metrics['churn_n_ids'])} shared ids"
        for note in [churn_note, *scores.notes]:
            warnings.warn(f"numerai evaluator: {note}", UserWarning, stacklevel=2)

        client = mlflow.MlflowClient()
        artifact_uri = client.get_run(run_id).info.artifact_uri.rstrip("/")
        artifacts = {}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / EVAL_DIR
            out.mkdir()
            scores.per_era_corr.to_csv(out / PER_ERA_CORR_FILE)
            scores.summary.to_csv(out / SUMMARY_FILE, index=False)
            scores.per_era.to_csv(out / DIAGNOSTICS_FILE)
            preds.to_frame().to_parquet(out / PREDICTIONS_FILE)  # churn of the next version reads it
            if scores.per_era_mmc is not None:
                scores.per_era_mmc.to_csv(out / PER_ERA_MMC_FILE)
            plot_cumulative_corr(scores.per_era_corr, out / PLOT_FILE, scores.per_era_mmc)
            plot_diagnostics(scores.per_era, out / DIAGNOSTICS_PLOT_FILE, f"diagnostics ({cfg.targets[0]})")
            # everything computed first: a failure above logs nothing
            mlflow.log_metrics(scores.metrics, run_id=run_id, model_id=kwargs.get("model_id"))
            client.set_tag(run_id, CHURN_TAG, churn_note)
            client.log_artifacts(run_id, str(out), EVAL_DIR)
            from PIL import Image

            plots = {}
            for key, name in (("cumulative_corr", PLOT_FILE), ("diagnostics", DIAGNOSTICS_PLOT_FILE)):
                with Image.open(out / name) as image:
                    image.load()
                    plots[key] = image.copy()
        uri = f"{artifact_uri}/{EVAL_DIR}"
        artifacts["per_era_corr"] = CsvEvaluationArtifact(f"{uri}/{PER_ERA_CORR_FILE}", scores.per_era_corr.reset_index())
        artifacts["per_era_diagnostics"] = CsvEvaluationArtifact(f"{uri}/{DIAGNOSTICS_FILE}", scores.per_era.reset_index())
        artifacts["summary"] = CsvEvaluationArtifact(f"{uri}/{SUMMARY_FILE}", scores.summary)
        if scores.per_era_mmc is not None:
            artifacts["per_era_mmc"] = CsvEvaluationArtifact(f"{uri}/{PER_ERA_MMC_FILE}", scores.per_era_mmc.reset_index())
        artifacts["cumulative_corr"] = ImageEvaluationArtifact(f"{uri}/{PLOT_FILE}", plots["cumulative_corr"])
        artifacts["diagnostics"] = ImageEvaluationArtifact(f"{uri}/{DIAGNOSTICS_PLOT_FILE}", plots["diagnostics"])
        return EvaluationResult(metrics=scores.metrics, artifacts=artifacts, run_id=run_id)
