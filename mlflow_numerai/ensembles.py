"""Ensembles of Numerai predict functions: rank-average blend, weights, neutralization (maths only).

No MLflow here (the command is `entrypoints/ensemble.py`). The pieces:

- `era_rank(frame, eras)`: tie-kept rank per era of each column, ``(rank(average) - 0.5) / count``
  (the whole frame is one era when `eras` is None).
- `rank_blend(member_predictions, weights, eras)`: Numerai's usual blend: tie-kept rank per member
  and era, weighted mean, tie-kept rank again -> values in (0, 1).
- `neutralize_blend(blend, features, eras, proportion)`: per era, numerai-tools' `neutralize`
  (least squares on the features plus an intercept, pseudo-inverse rcond 1e-6, minus `proportion`
  times the fit), then ranked again so the output stays in (0, 1). NaN features count as the
  middle bin, as in the models.
- `fit_weights(member_predictions, target, eras, objective)`: non-negative weights summing to 1
  ("equal", or fitted with scipy's SLSQP to maximise the mean ("corr") or Sharpe ("sharpe") of the
  per-era correlation of the weighted rank mean with the target raised to 1.5 (a smooth stand-in
  for numerai_corr). The equal weights and every single member are kept as candidates, and the
  candidate with the best real per-era numerai_corr objective wins, so on the fitting eras the
  fitted blend never scores below the best member.
- `make_ensemble_predict(members, weights, ...)`: one Numerai `predict` calling each member's own
  predict function and blending; it captures only the members' functions, names, weights and
  feature names (and this module's functions, pickled by value), so its `predict.pkl` needs
  neither MLflow nor this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlflow_numerai import scoring
from mlflow_numerai.conventions import MIDDLE_BIN  # what a NaN feature counts as
from mlflow_numerai.scoring import neutralize

OBJECTIVES = ("equal", "corr", "sharpe")


class EnsembleError(ValueError):
    """Members, weights or data that cannot make an ensemble; the message names the culprit."""


def era_rank(frame: pd.DataFrame, eras: pd.Series | None = None) -> pd.DataFrame:
    """Tie-kept rank of each column within each era: ``(rank(average) - 0.5) / count``."""
    if eras is None:
        return (frame.rank(method="average") - 0.5) / frame.count()
    groups = frame.groupby(np.asarray(eras), sort=False)
    return (groups.rank(method="average") - 0.5) / groups.transform("count")


def rank_blend(member_predictions: pd.DataFrame, weights: Sequence[float],
               eras: pd.Series | None = None) -> pd.Series:
    """Rank each member per era, take the weighted mean, rank again per era: a Series in (0, 1)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (member_predictions.shape[1],):
        raise EnsembleError(f"{len(w)} weight(s) for {member_predictions.shape[1]} member(s)")
    ranks = era_rank(member_predictions, eras)
    mean = pd.DataFrame({"blend": ranks.to_numpy() @ w}, index=member_predictions.index)
    return era_rank(mean, eras)["blend"].rename("prediction")


def neutralize_blend(blend: pd.Series, features: pd.DataFrame, eras: pd.Series | None,
                     proportion: float) -> pd.Series:
    """Per era, `blend` minus `proportion` times its least-squares fit on `features` (numerai-tools'
    `neutralize`), ranked again per era."""
    x = features.to_numpy(dtype=np.float64, na_value=np.nan)
    x = np.where(np.isnan(x), float(MIDDLE_BIN), x)
    values = blend.to_numpy(dtype=np.float64)
    out = np.empty_like(values)
    codes = np.zeros(len(values), dtype=np.int64) if eras is None else pd.factorize(np.asarray(eras))[0]
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        out[rows] = neutralize(values[rows, None], x[rows], proportion)[:, 0]
    neutral = pd.DataFrame({"prediction": out}, index=blend.index)
    return era_rank(neutral, eras)["prediction"]


def member_column(output: object, index: pd.Index, name: str) -> pd.Series:
    """A member's output as one float Series on `index`; ValueError naming the member otherwise."""
    if not isinstance(output, pd.DataFrame) or "prediction" not in output.columns:
        got = list(output.columns) if isinstance(output, pd.DataFrame) else type(output).__name__
        raise ValueError(f"ensemble member {name!r} must return a DataFrame with a 'prediction' column, got {got}")
    column = output["prediction"]
    if not column.index.equals(index):
        raise ValueError(f"ensemble member {name!r} returned {len(column)} rows not indexed like the "
                         f"{len(index)} input ids")
    values = column.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"ensemble member {name!r} returned {int((~np.isfinite(values)).sum())} NaN or "
                         "infinite prediction(s)")
    return pd.Series(values, index=index, name=name)


def call_member(name: str, predict: Callable, arity: int, live_features: pd.DataFrame,
                live_benchmark_models: pd.DataFrame | None) -> pd.Series:
    """One member's predictions on `live_features`; an error from the member names it."""
    try:
        if arity == 2:
            bench = live_benchmark_models
            if bench is None:
                bench = pd.DataFrame(index=live_features.index)
            output = predict(live_features, bench)
        else:
            output = predict(live_features)
    except ValueError as exc:
        raise ValueError(f"ensemble member {name!r} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise RuntimeError(f"ensemble member {name!r} failed: {type(exc).__name__}: {exc}") from exc
    return member_column(output, live_features.index, name)


@dataclass
class Member:
    """One member of an ensemble: a display name (e.g. `numerai-baseline/3`) and its predict."""

    name: str
    predict: Callable
    arity: int = 1


def make_ensemble_predict(members: Sequence[Member], weights: Sequence[float],
                          neutralize_features: Sequence[str] | None = None,
                          proportion: float = 0.0) -> Callable:
    """A Numerai `predict` for the blend of `members` (two parameters if any member takes two)."""
    if len(members) < 1:
        raise EnsembleError("an ensemble needs at least one member")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(members),) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise EnsembleError(f"weights must be {len(members)} non-negative numbers summing to 1, got {list(w)}")
    if not 0.0 <= proportion <= 1.0:
        raise EnsembleError(f"neutralization proportion must lie in [0, 1], got {proportion}")
    # Plain values only in the closure: the pickle holds the members' functions and nothing else.
    names = [m.name for m in members]
    functions = [m.predict for m in members]
    arities = [int(m.arity) for m in members]
    features = list(neutralize_features or []) if proportion > 0 else []

    def blend(live_features: pd.DataFrame, live_benchmark_models: pd.DataFrame | None) -> pd.DataFrame:
        outputs = [call_member(n, f, a, live_features, live_benchmark_models)
                   for n, f, a in zip(names, functions, arities)]
        predictions = pd.concat(outputs, axis=1)
        eras = live_features["era"] if "era" in live_features.columns else None
        result = rank_blend(predictions, w, eras)
        if features:
            missing = [c for c in features if c not in live_features.columns]
            if missing:
                raise KeyError(f"live_features lacks {len(missing)} neutralization feature(s), e.g. {missing[:5]}")
            result = neutralize_blend(result, live_features[features], eras, proportion)
        return result.to_frame("prediction")

    if 2 in arities:
        def predict(live_features: pd.DataFrame, live_benchmark_models: pd.DataFrame) -> pd.DataFrame:
            return blend(live_features, live_benchmark_models)
    else:
        def predict(live_features: pd.DataFrame) -> pd.DataFrame:
            return blend(live_features, None)
    return predict


# --------------------------------------------------------------------------- weights


def _era_statistics(member_predictions: pd.DataFrame, target: pd.Series, eras: pd.Series):
    """Per era (rows with a target): a_e = R_c' t_c, C_e = R_c' R_c and |t_c|, with R the members'
    tie-kept ranks and t the target centered and raised to 1.5 (as numerai_corr)."""
    keep = target.notna().to_numpy()
    ranks = era_rank(member_predictions, eras).to_numpy()[keep]
    t = target.to_numpy(dtype=np.float64)[keep]
    codes = pd.factorize(np.asarray(eras)[keep])[0]
    stats = []
    for code in np.unique(codes):
        rows = codes == code
        if rows.sum() < 2:
            continue
        r = ranks[rows] - ranks[rows].mean(axis=0)
        tc = t[rows] - t[rows].mean()
        tc = np.sign(tc) * np.abs(tc) ** 1.5
        tc = tc - tc.mean()
        norm = np.linalg.norm(tc)
        if norm == 0:
            continue
        stats.append((r.T @ tc, r.T @ r, norm))
    if not stats:
        raise EnsembleError("no era of the validation data has two rows with a non-constant target")
    a = np.stack([s[0] for s in stats])
    c = np.stack([s[1] for s in stats])
    n = np.array([s[2] for s in stats])
    return a, c, n


def _proxy_per_era(w: np.ndarray, a: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Pearson corr per era of the weighted rank mean with the powered target."""
    var = np.einsum("i,eij,j->e", w, c, w)
    return (a @ w) / (np.sqrt(np.maximum(var, 1e-300)) * n)


def _objective_value(per_era: np.ndarray, objective: str) -> float:
    per_era = per_era[np.isfinite(per_era)]
    if per_era.size == 0:
        return -np.inf
    if objective == "sharpe":
        std = per_era.std(ddof=1) if per_era.size > 1 else 0.0
        return float(per_era.mean() / std) if std > 0 else -np.inf
    return float(per_era.mean())


@dataclass
class WeightFit:
    """The chosen weights and how they were chosen."""

    weights: np.ndarray
    objective: str
    value: float  # the objective of the chosen blend (real numerai_corr per era)
    candidates: pd.DataFrame = field(default_factory=pd.DataFrame)  # candidate -> weights, value
    per_era: pd.DataFrame = field(default_factory=pd.DataFrame)  # eras x candidates (numerai_corr)


def fit_weights(member_predictions: pd.DataFrame, target: pd.Series, eras: pd.Series,
                objective: str = "corr") -> WeightFit:
    """Non-negative weights summing to 1 for `rank_blend`, fitted on these eras (see module doc)."""
    from scipy.optimize import minimize

    if objective not in OBJECTIVES:
        raise EnsembleError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    m = member_predictions.shape[1]
    equal = np.full(m, 1.0 / m)
    candidates = {"equal": equal}
    if objective != "equal":
        for i, name in enumerate(member_predictions.columns):
            candidates[f"only {name}"] = np.eye(m)[i]
        a, c, n = _era_statistics(member_predictions, target, eras)

        def loss(w):
            return -_objective_value(_proxy_per_era(w, a, c, n), objective)

        constraints = [{"type": "eq", "fun": lambda w: w.sum() - 1.0}]
        for start_name, start in list(candidates.items()):
            res = minimize(loss, start, method="SLSQP", bounds=[(0.0, 1.0)] * m, constraints=constraints,
                           options={"maxiter": 200, "ftol": 1e-10})
            w = np.where(res.x > 1e-9, res.x, 0.0)  # SLSQP leaves ~1e-18 for a dropped member
            if np.isfinite(w).all() and w.sum() > 0:
                candidates[f"fitted from {start_name}"] = w / w.sum()
    blends = pd.DataFrame({k: rank_blend(member_predictions, w, eras) for k, w in candidates.items()})
    per_era = scoring.per_era_numerai_corr(blends, target, eras, on_constant="nan")
    values = {k: _objective_value(per_era[k].to_numpy(), "corr" if objective == "equal" else objective)
              for k in candidates}
    table = pd.DataFrame([{"candidate": k, "value": values[k], **dict(zip(member_predictions.columns, w))}
                          for k, w in candidates.items()]).set_index("candidate")
    best = "equal" if objective == "equal" else max(values, key=lambda k: (values[k], k.startswith("fitted")))
    return WeightFit(np.asarray(candidates[best], dtype=np.float64), objective, values[best], table, per_era)


def member_correlations(member_predictions: pd.DataFrame, eras: pd.Series) -> pd.DataFrame:
    """Mean over eras of the Spearman correlation between members' predictions (members x members)."""
    ranks = era_rank(member_predictions, eras)
    per_era = ranks.groupby(np.asarray(eras), sort=False).corr()
    names = list(member_predictions.columns)
    return per_era.groupby(level=1, sort=False).mean().loc[names, names]
