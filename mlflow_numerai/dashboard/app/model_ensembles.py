"""The Ensembles page's section on model ensembles (`mlflow-numerai ensemble`): blends of
registered models, each member against the blend per era, the weights and the members'
correlation matrix. Rendering only: the numbers come from `mlflow_numerai.dashboard.queries`."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

BLEND = "ensemble"  # the blend's row/column name in the artifacts


@st.cache_data(ttl=ui.TTL_SECONDS, show_spinner=False)
def _artifact(uri: str, kind: str, run_id: str) -> pd.DataFrame:
    readers = {"weights": queries.ensemble_weights, "side_by_side": queries.ensemble_side_by_side,
               "per_era": queries.ensemble_per_era, "member_corr": queries.ensemble_member_corr}
    return readers[kind](uri, run_id)


def render_model_ensembles(uri: str) -> None:
    """The section; only a caption when no ensemble was built yet."""
    st.subheader("Model ensembles: blends of registered models")
    table = queries.ensemble_table(ui.runs(uri, ("ensemble",)))
    if table.empty:
        st.caption(f"No model ensemble yet: `{queries.CREATE_COMMANDS['ensemble']}`.")
        return
    st.dataframe(ui.rounded(table.drop(columns=["run_id"]).set_index("run_name")), width="stretch")
    options = dict(zip(table["run_name"].astype(str) + " (" + table["run_id"].str[:6] + ")", table["run_id"]))
    run_id = options[st.selectbox("Ensemble", list(options), key="model_ens_run")]
    row = table[table["run_id"] == run_id].iloc[0]
    c = st.columns(3)
    c[0].metric("Blend corr", ui.fmt(row["numerai_corr_mean"]),
                delta=ui.fmt(row["blend_minus_best_member_corr"]), help="delta: versus the best member")
    c[1].metric("Best member corr", ui.fmt(row["best_member_corr_mean"]))
    c[2].metric("Mean member rank corr", ui.fmt(row["mean_member_rank_corr"], 3))

    side = _artifact(uri, "side_by_side", run_id)
    if not side.empty:
        st.caption("The numerai evaluator's scores of each member and of the blend, on validation.")
        keep = [k for k in ("numerai_corr_mean", "numerai_corr_sharpe", "numerai_corr_max_drawdown", "mmc_mean",
                            "mmc_sharpe", "max_feature_exposure") if k in side.columns]
        st.dataframe(ui.rounded(side[keep]), width="stretch")
    left, right = st.columns([2, 1])
    per_era = _artifact(uri, "per_era", run_id)
    if not per_era.empty:
        lines = alt.Chart(per_era).mark_line().encode(
            x=alt.X("era:N", title="era", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("cumulative:Q", title="cumulative corr"),
            color=alt.Color("model:N", title=None),
            strokeWidth=alt.condition(alt.datum.model == BLEND, alt.value(3.5), alt.value(1.5)),
            tooltip=["era", "model", alt.Tooltip("corr:Q", format=".4f")],
        )
        left.altair_chart(lines.properties(height=320, title="members vs blend, per era"), width="stretch")
    weights = _artifact(uri, "weights", run_id)
    if not weights.empty:
        bars = alt.Chart(weights).mark_bar().encode(
            x=alt.X("weight:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("member:N", title=None),
            tooltip=["member", "uri", alt.Tooltip("weight:Q", format=".4f")],
        )
        right.altair_chart(bars.properties(height=320, title="weights"), width="stretch")
    matrix = _artifact(uri, "member_corr", run_id)
    if not matrix.empty:
        long = queries.js_long(matrix).rename(columns={"js": "corr"})
        heat = alt.Chart(long).mark_rect().encode(
            x=alt.X("model_b:N", title=None, sort=list(matrix.columns)),
            y=alt.Y("model_a:N", title=None, sort=list(matrix.index)),
            color=alt.Color("corr:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True)),
            tooltip=["model_a", "model_b", alt.Tooltip("corr:Q", format=".3f")],
        )
        text = alt.Chart(long).mark_text(fontSize=11).encode(
            x=alt.X("model_b:N", sort=list(matrix.columns)), y=alt.Y("model_a:N", sort=list(matrix.index)),
            text=alt.Text("corr:Q", format=".2f"),
        )
        st.caption("Members' rank correlation (mean over validation eras): low correlation is what a blend gains from.")
        st.altair_chart((heat + text).properties(height=60 + 40 * len(matrix)), width="stretch")
