"""Models & uploads: registered versions, aliases, upload states, their history and promotions."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

st.title("Models & uploads")
uri = ui.require_store()
versions = ui.versions(uri)
if versions.empty:
    ui.empty_state("No registered model versions yet", "registry", uri)
    st.stop()

counts = queries.state_counts(versions)
cols = st.columns(2 + len(counts))
cols[0].metric("Registered models", versions["name"].nunique())
cols[1].metric("Versions", len(versions))
for col, (state, n) in zip(cols[2:], counts.items()):
    col.metric(state, int(n))

st.subheader("Versions")
lines = [
    "| Model | Version | Aliases | Family | Upload state | Reason | Since | Validation corr | Eval corr |",
    "| --- | ---: | --- | --- | --- | --- | --- | ---: | ---: |",
]
for _, v in versions.iterrows():
    since = v["state_time"].strftime("%Y-%m-%d %H:%M:%S") if pd.notna(v["state_time"]) else "—"
    aliases = " ".join(f"`@{a}`" for a in v["aliases"].split(", ") if a) or "—"
    reason = f"`{v['upload_reason']}`" if ui.present(v["upload_reason"]) else "—"
    lines.append(
        f"| **{v['name']}** | {v['version']} | {aliases} | {v['family'] if ui.present(v['family']) else '—'} "
        f"| {ui.badge(v['upload_state'])} "
        f"| {reason} | {since} | {ui.fmt(v['validation_corr_mean'])} | {ui.fmt(v['numerai_corr_mean'])} |"
    )
st.markdown("\n".join(lines))
st.caption("Validation corr: the sandbox's diagnostics run; Eval corr: the `numerai` evaluator on the training run.")

history = queries.upload_history(versions)
if not history.empty:
    st.subheader("Upload state timeline")
    h = history.assign(model=history["name"] + " v" + history["version"].astype(str))
    spans = h.groupby("model", sort=False)["time"].agg(["min", "max"]).reset_index()
    y = alt.Y("model:N", title=None, sort=list(spans["model"]), axis=alt.Axis(labelLimit=260))
    x_axis = alt.Axis(format="%m-%d %H:%M:%S", labelOverlap=True, tickCount=6)
    lines = alt.Chart(spans).mark_rule(color="#bbbbbb", size=2).encode(
        x=alt.X("min:T", title="time (UTC)", axis=x_axis), x2="max:T", y=y
    )
    points = alt.Chart(h).mark_circle(size=140, opacity=1).encode(
        x=alt.X("time:T", axis=x_axis),
        y=y,
        color=alt.Color("state:N", scale=ui.STATE_SCALE, title="state"),
        tooltip=["model", "state", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S"), "reason"],
    )
    height = max(220, 48 * len(spans))  # includes the x axis; nominal rows need room for labels
    st.altair_chart((lines + points).properties(height=height), width="stretch", height=height)

st.subheader("Version details")
labels = [f"{n} v{v}" for n, v in zip(versions["name"], versions["version"])]
choice = st.selectbox("Version", labels, key="models_version")
v = versions.iloc[labels.index(choice)]
left, right = st.columns([2, 3])
with left:
    st.markdown(f"**{choice}** {ui.badge(v['upload_state'])}")
    if ui.present(v["upload_reason"]):
        st.markdown(f"Failure reason: `{v['upload_reason']}`")
    if ui.present(v["upload_message"]):
        st.caption(str(v["upload_message"])[:1000])
    st.markdown(f"Source run: `{v['run_id']}`")
    own = history[(history["name"] == v["name"]) & (history["version"] == v["version"])]
    if own.empty:
        st.caption("No upload history recorded for this version.")
    else:
        shown = own[["state", "time", "reason"]].assign(time=own["time"].dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3])
        st.table(shown.fillna("—").reset_index(drop=True))
with right:
    run_id = v["validation_run_id"]
    if ui.present(run_id):
        st.markdown(f"Validation run: `{run_id}`")
        if uri.startswith(("http://", "https://")):
            st.link_button("Open the validation run in MLflow", f"{uri.rstrip('/')}/#/runs/{run_id}")
        found = ui.logs(uri, run_id)
        for i, (path, text) in enumerate(found):
            name = path.rsplit("/", 1)[-1]
            st.download_button(f"Download {name}", text, file_name=name, key=f"dl_log_{i}")
            with st.expander(f"Log: {path}", expanded=(i == 0 and v["upload_state"] in ("Failed", "Error"))):
                st.code(text[-20_000:], language="text")
        if not found:
            st.caption("The validation run has no log artifact.")
    else:
        st.caption("Not validated yet: `mlflow-numerai validate models:/{}/{}`".format(v["name"], v["version"]))

st.subheader("Promotion audit trail")
audit = ui.promotions(uri)
if audit.empty:
    st.caption("No promotions yet: `mlflow-numerai promote NAME --version V --alias champion`.")
else:
    shown = audit.assign(time=audit["time"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    st.table(shown.astype(object).where(shown.notna(), "—").reset_index(drop=True))
