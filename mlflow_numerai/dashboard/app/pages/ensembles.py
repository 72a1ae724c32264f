"""Ensembles: blends of registered models (members vs blend, weights, member correlations), then
a Bayesian NN's posterior ensemble versus its members, across priors and architectures, and the
JS divergence between the models' corr distributions."""

from __future__ import annotations

import altair as alt
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

st.title("Ensembles")
uri = ui.require_store()
from mlflow_numerai.dashboard.app.model_ensembles import render_model_ensembles  # noqa: E402

render_model_ensembles(uri)
st.subheader("Bayesian NN: posterior ensembles")
runs = ui.family_runs(uri, ("bayes_nn", "bnn_study"), "bayes_nn", "No Bayesian-NN runs yet")
table = queries.bnn_table(runs)
if table.empty:
    ui.empty_state("No Bayesian-NN run has logged its ensemble metrics yet", "bayes_nn", uri)
    st.stop()

st.subheader("Ensemble versus members, per model")
shown = table[
    ["model", "prior", "hidden", "target_model", "ensemble_corr_mean", "member_corr_mean_mean", "member_corr_mean_std",
     "ensemble_sharpe", "member_sharpe_mean", "member_sharpe_std", "ensemble_beats_members"]
]
st.table(ui.rounded(shown.dropna(axis=1, how="all").set_index("model")))
bayesian = table[table["member_corr_mean_mean"].notna()]
beats = int((bayesian["ensemble_beats_members"] == True).sum())  # noqa: E712 - object column
st.caption(f"The ensemble beats its average member in {beats} of {len(bayesian)} Bayesian models.")
if bayesian.empty:
    st.stop()

st.subheader("Member distribution")
options = dict(zip(bayesian["model"].astype(str) + " (" + bayesian["run_id"].str[:6] + ")", bayesian["run_id"]))
label = st.selectbox("Model", list(options), key="ens_run")
row = bayesian[bayesian["run_id"] == options[label]].iloc[0]
# One number per tile: "mean ± std" in a quarter-width tile was cut to "0.0167 ± 0.0...".
c = st.columns(3)
c[0].metric("Ensemble corr", ui.fmt(row["ensemble_corr_mean"]),
            delta=ui.fmt(row["ensemble_corr_mean"] - row["member_corr_mean_mean"]),
            help="delta: versus the average member")
c[1].metric("Members corr (mean)", ui.fmt(row["member_corr_mean_mean"]), help="mean over the posterior samples")
c[2].metric("Members corr (std)", ui.fmt(row["member_corr_mean_std"]), help="std over the posterior samples")
c = st.columns(3)
c[0].metric("Ensemble Sharpe", ui.fmt(row["ensemble_sharpe"], 3),
            delta=ui.fmt(row["ensemble_sharpe"] - row["member_sharpe_mean"], 3))
c[1].metric("Members Sharpe (mean)", ui.fmt(row["member_sharpe_mean"], 3))
c[2].metric("Members Sharpe (std)", ui.fmt(row["member_sharpe_std"], 3))

members = ui.artifact_frame(uri, "bnn_members", row["run_id"])
if members.empty:
    st.caption(f"This run did not log `{queries.BNN_MEMBERS_ARTIFACT}`.")
else:
    st.caption(f"{len(members)} posterior samples; the red line is the ensemble (mean prediction).")
    hists = st.columns(2)
    for col, field, marker in ((hists[0], "corr_mean", "ensemble_corr_mean"), (hists[1], "sharpe", "ensemble_sharpe")):
        bars = alt.Chart(members).mark_bar(opacity=0.8).encode(
            x=alt.X(f"{field}:Q", bin=alt.Bin(maxbins=40), title=f"member {field}"),
            y=alt.Y("count():Q", title="samples"),
        )
        rule = alt.Chart({"values": [{"v": float(row[marker])}]}).mark_rule(color="red", size=3).encode(x="v:Q")
        col.altair_chart((bars + rule).properties(height=260), width="stretch")

st.subheader("Jensen-Shannon divergence between models")
studies = queries.study_runs(runs)
matrix = None
for study_id in studies["run_id"] if not studies.empty else []:
    matrix = ui.artifact_frame(uri, "js_divergence", study_id)
    if not matrix.empty:
        st.caption(f"From study run `{study_id}` (normal approximations of each model's corr-mean distribution).")
        break
if matrix is None or matrix.empty:
    st.caption(f"No study has logged `{queries.BNN_JS_ARTIFACT}` yet: `{queries.CREATE_COMMANDS['bayes_nn']}`.")
else:
    long = queries.js_long(matrix)
    heat = alt.Chart(long).mark_rect().encode(
        x=alt.X("model_b:N", title=None, sort=list(matrix.columns)),
        y=alt.Y("model_a:N", title=None, sort=list(matrix.index)),
        color=alt.Color("js:Q", scale=alt.Scale(scheme="viridis"), title="JS"),
        tooltip=["model_a", "model_b", alt.Tooltip("js:Q", format=".4f")],
    )
    text = alt.Chart(long).mark_text(fontSize=11).encode(
        x=alt.X("model_b:N", sort=list(matrix.columns)), y=alt.Y("model_a:N", sort=list(matrix.index)),
        text=alt.Text("js:Q", format=".3f"),
        color=alt.condition(alt.datum.js > float(long["js"].max()) / 2, alt.value("black"), alt.value("white")),
    )
    st.altair_chart((heat + text).properties(height=60 + 40 * len(matrix)), width="stretch")
