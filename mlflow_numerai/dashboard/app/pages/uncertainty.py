"""Uncertainty: how well each Bayesian NN's era uncertainty predicts burn eras (corr < 0)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

st.title("Uncertainty")
uri = ui.require_store()
runs = ui.family_runs(uri, ("bayes_nn", "bnn_study"), "bayes_nn", "No Bayesian-NN runs yet")
table = queries.bnn_table(runs)
table = table[table["burn_auc"].notna()] if not table.empty else table
if table.empty:
    ui.empty_state("No Bayesian-NN run has logged `burn_auc` yet", "bayes_nn", uri)
    st.stop()

table = table.assign(model=table["model"].astype(str) + " (" + table["run_id"].str[:6] + ")")
table = table.sort_values("burn_auc", ascending=False)
best = table.iloc[0]
c = st.columns(3)
c[0].metric("Best burn AUC", ui.fmt(best["burn_auc"], 3),
            help="ROC AUC of era uncertainty against burn eras; 0.5 = chance")
c[1].metric("Model", str(best["model"]))
c[2].metric("Burn eras", int(best["n_burn_eras"]) if pd.notna(best["n_burn_eras"]) else "—")

st.subheader("Burn AUC per model")
# An explicit bar thickness: in the layer with the chance rule the band came out 1 px high.
BAR_PX = 18
bars = alt.Chart(table).mark_bar(size=BAR_PX).encode(
    x=alt.X("burn_auc:Q", title="burn AUC", scale=alt.Scale(domain=[0, 1])),
    y=alt.Y("model:N", sort="-x", title=None),
    color=alt.Color("prior:N", title="prior"),
    tooltip=["model", "prior", "hidden", alt.Tooltip("burn_auc:Q", format=".3f"), "n_burn_eras"],
)
# The chance line from the bars' own data (a datum), so the layer holds one data set.
chance = alt.Chart(table).mark_rule(strokeDash=[4, 4], color="gray").encode(x=alt.datum(0.5))
st.altair_chart((bars + chance).properties(height=40 + (BAR_PX + 10) * len(table)), width="stretch")
shown_columns = ["prior", "hidden", "burn_auc", "n_burn_eras", "ensemble_corr_mean"]
st.table(ui.rounded(table.set_index("model")[shown_columns].dropna(axis=1, how="all")))

st.subheader("ROC curves")
options = dict(zip(table["model"], table["run_id"]))
picked = st.multiselect("Models", list(options), default=list(options)[:4], key="unc_runs")
curves = []
for label in picked:
    roc = ui.artifact_frame(uri, "bnn_roc", options[label])
    if not roc.empty:
        curves.append(roc.assign(model=label))
if curves:
    rocs = pd.concat(curves, ignore_index=True)
    lines = alt.Chart(rocs).mark_line(interpolate="step-after").encode(
        x=alt.X("fpr:Q", title="false positive rate"), y=alt.Y("tpr:Q", title="true positive rate"),
        color=alt.Color("model:N", title=None),
    )
    diag = alt.Chart({"values": [{"a": 0, "b": 0}, {"a": 1, "b": 1}]}).mark_line(
        strokeDash=[4, 4], color="gray"
    ).encode(x="a:Q", y="b:Q")
    st.altair_chart((lines + diag).properties(height=360), width="stretch")
else:
    st.caption(f"None of the chosen runs logged `{queries.BNN_ROC_ARTIFACT}`.")

st.subheader("Era uncertainty versus era corr")
label = st.selectbox("Model", list(options), key="unc_run")
per_era = ui.artifact_frame(uri, "bnn_per_era", options[label])
if per_era.empty:
    st.caption(f"This run did not log `{queries.BNN_PER_ERA_ARTIFACT}`.")
else:
    shown = per_era.assign(kind=per_era["burn"].map({True: "burn era (corr < 0)", False: "other era"}))
    scatter = alt.Chart(shown).mark_circle(size=70).encode(
        x=alt.X("uncertainty:Q", title="mean predictive std", scale=alt.Scale(zero=False)),
        y=alt.Y("ensemble_corr:Q", title="ensemble corr"),
        color=alt.Color(
            "kind:N", scale=alt.Scale(domain=["burn era (corr < 0)", "other era"], range=["#c62828", "#1e88e5"]),
            title=None,
        ),
        tooltip=["era", alt.Tooltip("ensemble_corr:Q", format=".4f"), alt.Tooltip("uncertainty:Q", format=".4f")],
    )
    st.altair_chart(scatter.properties(height=360), width="stretch")
    st.caption(f"{int(per_era['burn'].sum())} burn eras of {len(per_era)}.")
