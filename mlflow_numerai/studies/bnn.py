"""Posterior study of a Bayesian NN (seed 002, studies 1, 2 and the appendix). Maths only.

- study 1: the ensemble (mean of the S sample predictions) against each of the S members, all
  scored per era with `scoring.per_era_numerai_corr` over all S columns of a block at once;
- study 2: uncertainty (per-row std of the S predictions, averaged per era) as a detector of
  burn eras (ensemble corr < 0): `scoring.burn_auc` and `scoring.burn_roc_curve`;
- appendix: the Jensen-Shannon divergence matrix between the normal approximations of the
  models' member corr-mean distributions (`scoring.js_divergence_normal`).

Predictions are made block by block (`bayes_nn.iter_predictive` with whole eras per block), so
S x N predictions never exist at once unless they fit the memory budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlflow_numerai import scoring
from mlflow_numerai.families.bayes_nn import DEFAULT_BUDGET_BYTES, PosteriorSamples, iter_predictive


@dataclass
class PosteriorStudy:
    """What the study finds for one model."""

    per_era: pd.DataFrame  # index era: ensemble_corr, uncertainty, burn, member_corr_mean
    members: pd.DataFrame  # index sample: corr_mean, sharpe
    roc: pd.DataFrame  # fpr, tpr, threshold (empty when burn AUC is undefined)
    metrics: dict[str, float] = field(default_factory=dict)
    prediction: pd.Series | None = None  # ensemble mean per id
    prediction_std: pd.Series | None = None  # predictive std per id


def era_order(eras: pd.Series) -> tuple[np.ndarray, list[int]]:
    """A stable order that groups rows by era, and the start position of each era in it."""
    values = eras.to_numpy()
    order = np.argsort(values, kind="stable")
    sorted_eras = values[order]
    starts = [0] + [int(i) for i in np.flatnonzero(sorted_eras[1:] != sorted_eras[:-1]) + 1]
    return order, starts


def member_summary(member_per_era: pd.DataFrame) -> pd.DataFrame:
    """Per member (column): mean corr over eras and Sharpe."""
    return pd.DataFrame(
        {"corr_mean": member_per_era.mean(axis=0), "sharpe": scoring.sharpe(member_per_era)}
    ).rename_axis("sample")


def study_metrics(per_era: pd.DataFrame, members: pd.DataFrame, auc: float) -> dict[str, float]:
    """The headline numbers: ensemble vs members, burn AUC."""
    ens = per_era["ensemble_corr"]
    return {
        "ensemble_corr_mean": float(ens.mean()),
        "ensemble_sharpe": float(scoring.sharpe(ens)),
        "member_corr_mean_mean": float(members["corr_mean"].mean()),
        "member_corr_mean_std": float(members["corr_mean"].std(ddof=1)) if len(members) > 1 else 0.0,
        "member_sharpe_mean": float(members["sharpe"].mean()),
        "member_sharpe_std": float(members["sharpe"].std(ddof=1)) if len(members) > 1 else 0.0,
        "ensemble_minus_member_corr": float(ens.mean() - members["corr_mean"].mean()),
        "frac_members_below_ensemble": float((members["corr_mean"] < ens.mean()).mean()),
        "burn_auc": float(auc),
        "n_burn_eras": float(per_era["burn"].sum()),
        "n_eras": float(len(per_era)),
        "uncertainty_mean": float(per_era["uncertainty"].mean()),
    }


def study_posterior(
    samples: PosteriorSamples,
    x: np.ndarray,
    target: pd.Series,
    eras: pd.Series,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: bool = False,
) -> PosteriorStudy:
    """Score the ensemble and every member per era, and the uncertainty as a burn detector.

    `x` (rows x features) is aligned with `target` and `eras` (indexed by id, no NaN target)."""
    if len(x) != len(target) or len(x) != len(eras):
        raise ValueError(f"x has {len(x)} rows, target {len(target)}, eras {len(eras)}: they must align")
    if target.isna().any():
        raise ValueError(f"target {target.name!r} has {int(target.isna().sum())} NaN rows: drop them first")
    original_ids = target.index
    order, starts = era_order(eras)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32)[order])
    target, eras = target.iloc[order], eras.iloc[order]
    ids = target.index
    labels = pd.Index(eras.iloc[starts].to_numpy())
    n, s = len(x), samples.n_samples

    total = np.zeros(n)
    total_sq = np.zeros(n)
    member = np.full((len(labels), s), np.nan)
    blocks = iter_predictive(samples, x, budget_bytes=budget_bytes, group_starts=starts)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="posterior predictive", leave=False)
    for rows, cols, pred in blocks:
        p = pred.double().numpy()
        total[rows] += p.sum(axis=1)
        total_sq[rows] += (p * p).sum(axis=1)
        frame = pd.DataFrame(p, index=ids[rows], columns=range(cols.start, cols.stop))
        scores = scoring.per_era_numerai_corr(frame, target.iloc[rows], eras.iloc[rows], on_constant="nan")
        member[labels.get_indexer(scores.index), cols] = scores.to_numpy()

    mean = total / s
    std = np.sqrt(np.clip(total_sq / s - mean * mean, 0.0, None))
    prediction = pd.Series(mean, index=ids, name="prediction")
    prediction_std = pd.Series(std, index=ids, name="prediction_std")
    ensemble = scoring.per_era_numerai_corr(prediction.to_frame(), target, eras, on_constant="nan")["prediction"]
    uncertainty = prediction_std.groupby(eras.to_numpy()).mean().reindex(labels)
    member_per_era = pd.DataFrame(member, index=labels)
    per_era = pd.DataFrame(
        {
            "ensemble_corr": ensemble.reindex(labels),
            "uncertainty": uncertainty,
            "burn": ensemble.reindex(labels) < 0,
            "member_corr_mean": member_per_era.mean(axis=1),
        }
    ).rename_axis("era")
    members = member_summary(member_per_era)
    both_classes = 0 < per_era["burn"].sum() < per_era["ensemble_corr"].notna().sum()
    if both_classes:
        auc = scoring.burn_auc(per_era["uncertainty"], per_era["ensemble_corr"])
        roc = scoring.burn_roc_curve(per_era["uncertainty"], per_era["ensemble_corr"])
    else:  # an AUC needs burn and non-burn eras
        auc, roc = float("nan"), pd.DataFrame(columns=["fpr", "tpr", "threshold"])
    return PosteriorStudy(
        per_era=per_era,
        members=members,
        roc=roc,
        metrics=study_metrics(per_era, members, auc),
        prediction=prediction.reindex(original_ids),
        prediction_std=prediction_std.reindex(original_ids),
    )


def js_divergence_matrix(members: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Jensen-Shannon divergence between the normal approximations N(mean, std^2) of each
    model's member corr-mean distribution; models as index and columns (symmetric, 0 diagonal)."""
    names = list(members)
    stats = {}
    for name in names:
        corr = members[name]["corr_mean"].dropna()
        if len(corr) < 2 or not corr.std(ddof=1) > 0:
            raise ValueError(f"model {name!r} needs at least 2 members with different corr_mean for a JS divergence")
        stats[name] = (float(corr.mean()), float(corr.std(ddof=1)))
    out = pd.DataFrame(0.0, index=pd.Index(names, name="model"), columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out.loc[a, b] = out.loc[b, a] = scoring.js_divergence_normal(*stats[a], *stats[b])
    return out
