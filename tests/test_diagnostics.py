"""Numerai diagnostics in `mlflow_numerai.scoring` (issue 14): parity with numerai-tools on data
with ties, NaN targets and unsorted ids, per era and with top_bottom; hand-computed cases for the
summaries, churn and the payout estimate; bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring as nt
from numerai_tools import signals as nt_signals

from mlflow_numerai import scoring
from mlflow_numerai.scoring import ScoringError

TOL = 1e-9


def make_data(seed: int = 0, n_eras: int = 4, rows: int = 120, k: int = 3, n_features: int = 4):
    """Unsorted ids, tied predictions (rounded), NaN targets, bucket targets, a meta model and
    a benchmark correlated with the target, and integer features."""
    rng = np.random.default_rng(seed)
    n = n_eras * rows
    ids = pd.Index([f"id{i:05d}" for i in rng.permutation(n)], name="id")
    eras = pd.Series(np.repeat([f"{e:04d}" for e in range(1, n_eras + 1)], rows), index=ids, name="era")
    signal = rng.standard_normal(n)
    buckets = np.digitize(signal + rng.standard_normal(n), [-1.5, -0.5, 0.5, 1.5]) / 4.0
    target = pd.Series(buckets, index=ids, name="target")
    target[rng.random(n) < 0.05] = np.nan
    preds = pd.DataFrame(
        {f"p{c}": np.round(0.3 * signal + rng.standard_normal(n), 1) for c in range(k)}, index=ids
    )  # rounding: many ties
    meta = pd.Series(0.5 * signal + rng.standard_normal(n), index=ids, name="meta")
    bench = pd.Series(np.round(0.4 * signal + rng.standard_normal(n), 2), index=ids, name="bench")
    features = pd.DataFrame(rng.integers(0, 5, size=(n, n_features)).astype(float), index=ids,
                            columns=[f"feature_{i}" for i in range(n_features)])
    return preds, target, eras, meta, bench, features


def per_era_nt(fn, eras: pd.Series, *frames) -> pd.DataFrame:
    """numerai-tools' ``fn`` applied to each era's slice of ``frames`` (sorted by id)."""
    out = {}
    for era, idx in eras.groupby(eras).groups.items():
        out[era] = fn(*[f.loc[idx].sort_index() for f in frames])
    return pd.DataFrame(out).T.rename_axis("era")


def assert_frames_close(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    ref = ref.reindex(index=ours.index, columns=ours.columns).astype(float)
    assert np.isfinite(ours.to_numpy()).all()
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), rtol=0, atol=TOL)


@pytest.mark.parametrize("top_bottom", [None, 20])
def test_numerai_corr_parity(top_bottom):
    preds, target, eras, *_ = make_data()
    ours = scoring.per_era_numerai_corr(preds, target, eras, top_bottom=top_bottom)
    ref = per_era_nt(lambda p, t: nt.numerai_corr(p, t, top_bottom=top_bottom), eras, preds, target)
    assert_frames_close(ours, ref)
    whole = scoring.numerai_corr(preds, target, top_bottom=top_bottom)
    ref = nt.numerai_corr(preds.sort_index(), target.sort_index(), top_bottom=top_bottom)
    np.testing.assert_allclose(whole, ref[whole.index], atol=TOL)


def test_top_bottom_changes_the_score():
    preds, target, eras, *_ = make_data()
    full = scoring.per_era_numerai_corr(preds, target, eras)
    tb = scoring.per_era_numerai_corr(preds, target, eras, top_bottom=20)
    assert not np.allclose(full.to_numpy(), tb.to_numpy())


@pytest.mark.parametrize("top_bottom", [None, 20])
def test_mmc_and_bmc_parity(top_bottom):
    preds, target, eras, meta, bench, _ = make_data(1)
    for fn, other in ((scoring.per_era_correlation_contribution, meta), (scoring.per_era_bmc, bench)):
        ours = fn(preds, other, target, eras, top_bottom=top_bottom)
        ref = per_era_nt(
            lambda p, m, t: nt.correlation_contribution(p, m, t, top_bottom=top_bottom), eras, preds, other, target
        )
        assert_frames_close(ours, ref)


@pytest.mark.parametrize("top_bottom", [None, 20])
def test_feature_neutral_corr_parity(top_bottom):
    preds, target, eras, _, _, features = make_data(2)
    ours = scoring.per_era_feature_neutral_corr(preds, features, target, eras, top_bottom=top_bottom)
    ref = per_era_nt(
        lambda p, f, t: nt.feature_neutral_corr(p, f, t, top_bottom=top_bottom), eras, preds, features, target
    )
    assert_frames_close(ours, ref)


def test_corr_with_meta_model_parity():
    preds, _, eras, meta, bench, _ = make_data(3)

    def ref(p: pd.DataFrame, m: pd.Series) -> pd.Series:
        gm = nt.gaussian(nt.tie_kept_rank(m.to_frame())).iloc[:, 0]
        gp = nt.gaussian(nt.tie_kept_rank(p))
        return gp.apply(lambda col: nt.pearson_correlation(gm, col))

    for other in (meta, bench):
        assert_frames_close(scoring.per_era_corr_with(preds, other, eras), per_era_nt(ref, eras, preds, other))


@pytest.mark.parametrize("top_bottom", [None, 15])
def test_churn_parity_on_shared_ids(top_bottom):
    preds, _, eras, *_ = make_data(4)
    rng = np.random.default_rng(9)
    previous = pd.Series(preds["p0"].to_numpy() + 0.5 * rng.standard_normal(len(preds)), index=preds.index)
    previous = previous.round(1).drop(preds.index[::7])  # ties; a version scored on fewer ids
    ours, n_shared = scoring.per_era_churn(preds, previous, eras, top_bottom=top_bottom)
    assert n_shared == len(previous)

    def ref(p: pd.DataFrame, prev: pd.Series) -> pd.Series:
        prev = prev.dropna()  # shared ids, sorted
        return p.loc[prev.index].apply(lambda col: nt_signals.churn(col, prev, top_bottom=top_bottom))

    assert_frames_close(ours, per_era_nt(ref, eras, preds, previous.reindex(preds.index)))


def test_churn_hand_computed():
    ids = pd.Index(["a", "b", "c", "d"])
    eras = pd.Series("1", index=ids)
    now = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}, index=ids)
    same, _ = scoring.per_era_churn(now, pd.Series([10.0, 20, 30, 40], index=ids), eras)
    reverse, _ = scoring.per_era_churn(now, pd.Series([4.0, 3, 2, 1], index=ids), eras)
    assert same.iloc[0, 0] == pytest.approx(0.0)
    assert reverse.iloc[0, 0] == pytest.approx(2.0)
    # swap of the two middle ids: ranks 1 3 2 4 -> spearman 1 - 6*2/(4*15) = 0.8
    swap, _ = scoring.per_era_churn(now, pd.Series([1.0, 3, 2, 4], index=ids), eras)
    assert swap.iloc[0, 0] == pytest.approx(0.2)
    # top_bottom=1: top id d kept, bottom a -> b swapped: churn = 1 - (1 + 0) / 2
    tb, _ = scoring.per_era_churn(now, pd.Series([2.0, 1, 3, 4], index=ids), eras, top_bottom=1)
    assert tb.iloc[0, 0] == pytest.approx(0.5)


def test_additive_max_drawdown_hand_computed():
    # cumsum 0.1 0.3 0.0 -0.1 0.3: peak 0.3, trough -0.1 -> 0.4 (a compounding drawdown differs)
    s = pd.Series([0.1, 0.2, -0.3, -0.1, 0.4])
    assert scoring.max_drawdown(s) == pytest.approx(0.4)
    assert scoring.max_drawdown(pd.Series([0.1, 0.2])) == pytest.approx(0.0)


def test_smart_sharpe_hand_computed():
    x = pd.Series([0.01, 0.03, 0.02, 0.04, 0.00])
    a, b = x.to_numpy()[:-1], x.to_numpy()[1:]
    rho = ((a - a.mean()) * (b - b.mean())).sum() / np.sqrt(((a - a.mean()) ** 2).sum() * ((b - b.mean()) ** 2).sum())
    n = 5
    penalty = np.sqrt(1 + 2 * sum((n - i) / n * abs(rho) ** i for i in range(1, n)))
    assert scoring.autocorr_penalty(x) == pytest.approx(penalty, abs=1e-12)
    assert scoring.smart_sharpe(x) == pytest.approx(x.mean() / x.std() / penalty, abs=1e-12)
    # alternating scores (rho < 0) are penalized too; the penalty is > 1
    alt = pd.Series([0.02, -0.01, 0.03, -0.02, 0.04, 0.0])
    assert scoring.autocorr_penalty(alt) > 1
    assert abs(scoring.smart_sharpe(alt)) < abs(scoring.sharpe(alt))


def test_positive_share_and_summary_columns():
    s = pd.Series([0.1, -0.2, np.nan, 0.3, 0.0])
    assert scoring.positive_share(s) == pytest.approx(2 / 4)
    summary = scoring.score_summary(s.to_frame("c"))
    assert {"smart_sharpe", "positive_share"} <= set(summary.columns)
    assert summary.loc["c", "n_eras"] == 4


def test_payout_estimate_hand_computed():
    corr = pd.Series([0.02, 0.10, -0.04, np.nan])
    mmc = pd.Series([0.01, 0.02, -0.03, 0.01])
    out = scoring.payout_estimate(corr, mmc, preset=None, w_corr=0.5, w_mmc=2.0, clip=0.05)
    np.testing.assert_allclose(out.to_numpy()[:3], [0.03, 0.05, -0.05])
    assert np.isnan(out.iloc[3])
    preset = scoring.PAYOUT_PRESETS[scoring.DEFAULT_PAYOUT_PRESET]
    default = scoring.payout_estimate(corr, mmc)
    want = (preset.corr * corr + preset.mmc * mmc).clip(-preset.clip, preset.clip)
    np.testing.assert_allclose(default.to_numpy()[:3], want[:3])
    with pytest.raises(ScoringError, match="unknown payout preset"):
        scoring.payout_estimate(corr, mmc, preset="nope")


def test_meta_model_covering_too_few_ids_names_column_and_share():
    preds, target, eras, meta, bench, _ = make_data(5)
    partial = meta.iloc[::2]  # half the ids of every era
    with pytest.raises(ScoringError, match=r"meta_model 'meta' covers (49|50)\.\d% of the prediction ids"):
        scoring.per_era_correlation_contribution(preds, partial, target, eras)
    with pytest.raises(ScoringError, match=r"benchmark 'bench' covers"):
        scoring.per_era_bmc(preds, bench.iloc[::2], target, eras)
    with pytest.raises(ScoringError, match=r"meta_model 'meta' covers"):
        scoring.per_era_corr_with(preds, partial, eras)


def test_top_bottom_larger_than_an_era_is_nan_with_warning():
    preds, target, eras, *_ = make_data(6, rows=30)
    with pytest.warns(RuntimeWarning, match="fewer than 2 \\* top_bottom"):
        out = scoring.per_era_numerai_corr(preds, target, eras, top_bottom=20)
    assert out.isna().all().all()
    with pytest.raises(ScoringError, match="top_bottom"):
        scoring.per_era_numerai_corr(preds, target, eras, top_bottom=1.5)


def test_many_columns_top_bottom_match_one_at_a_time():
    preds, target, eras, meta, *_ = make_data(7, k=70)  # more than one 64-column chunk
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        many = scoring.per_era_correlation_contribution(preds, meta, target, eras, top_bottom=10)
    one = scoring.per_era_correlation_contribution(preds[["p65"]], meta, target, eras, top_bottom=10)
    np.testing.assert_allclose(many[["p65"]].to_numpy(), one.to_numpy(), atol=1e-12)


def test_meta_model_missing_whole_eras_scores_them_nan():
    """Numerai's meta_model.parquet covers only the later validation eras."""
    preds, target, eras, meta, *_ = make_data(8)
    later = meta[eras.reindex(meta.index).isin(["0003", "0004"])]
    with pytest.warns(RuntimeWarning, match="2 era"):
        out = scoring.per_era_correlation_contribution(preds, later, target, eras)
    assert out.loc[["0001", "0002"]].isna().all().all() and out.loc[["0003", "0004"]].notna().all().all()
