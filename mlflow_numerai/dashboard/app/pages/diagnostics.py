"""Diagnostics: Numerai's tiles for a registered model version, the cumulative CORR/MMC/BMC of
several versions on one chart, and the per-era table to download (the `numerai` evaluator's)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

st.title("Diagnostics")
uri = ui.require_store()
versions = ui.versions(uri)
versions = versions[versions["run_id"].notna()] if not versions.empty else versions
if versions.empty:
    ui.empty_state("No registered model versions yet", "registry", uri)
    st.stop()

runs = ui.runs(uri).set_index("run_id")
name = st.selectbox("Model", sorted(versions["name"].unique()), key="diag_model")
mine = versions[versions["name"] == name].assign(n=lambda v: v["version"].astype(int)).sort_values("n", ascending=False)
run_of = {
    f"v{r['version']}"
    + (" " + " ".join(f"@{a}" for a in r["aliases"].split(", ") if a) if ui.present(r["aliases"]) else ""): r["run_id"]
    for _, r in mine.iterrows()
}
version_of = dict(zip(run_of, mine["version"]))
picked = st.selectbox("Version", list(run_of), key="diag_version")
run_id = run_of[picked]
metrics = {c[len("metrics."):]: v for c, v in runs.loc[run_id].items() if c.startswith("metrics.") and pd.notna(v)} \
    if run_id in runs.index else {}

tiles = queries.diagnostic_tiles(metrics)
TILES_PER_ROW = 4  # six to a row cut a signed 4-digit value ("-0.0011") to "-0.0…" in the browser
for start in range(0, len(tiles), TILES_PER_ROW):
    cols = st.columns(TILES_PER_ROW)
    for col, (label, value, digits) in zip(cols, tiles[start : start + TILES_PER_ROW]):
        col.metric(label, ui.fmt(value, digits) if value is not None else "—")
note = runs.loc[run_id].get("tags.numerai.churn") if run_id in runs.index else None
if ui.present(note):
    st.caption(f"Churn: {note}")

per_era = ui.artifact_frame(uri, "diagnostics", run_id)
if per_era.empty:
    st.caption(f"This version's run did not log `{queries.PER_ERA_DIAGNOSTICS_ARTIFACT}` (the `numerai` evaluator's).")
    st.stop()

st.subheader("Cumulative scores")
compare = st.multiselect("Versions", list(run_of), default=list(run_of)[:3], key="diag_versions")
curves = queries.cumulative_diagnostics(
    {label: ui.artifact_frame(uri, "diagnostics", run_of[label]) for label in compare}
)
if curves.empty:
    st.caption("Pick versions whose runs logged per-era diagnostics.")
else:
    st.altair_chart(
        alt.Chart(curves).mark_line().encode(
            x=alt.X("era:N", title="era"), y=alt.Y("cumulative:Q", title="cumulative score"),
            color=alt.Color("version:N", title="version"), strokeDash=alt.StrokeDash("score:N", title="score"),
            tooltip=["version", "score", "era", alt.Tooltip("value:Q", format=".4f"),
                     alt.Tooltip("cumulative:Q", format=".4f")],
        ).properties(height=380),
        width="stretch",
    )

st.subheader(f"Per era ({picked})")
bars = queries.cumulative_diagnostics({picked: per_era})
st.altair_chart(
    alt.Chart(bars).mark_bar().encode(
        x=alt.X("era:N", title="era"), xOffset="score:N", y=alt.Y("value:Q", title="per-era score"),
        color=alt.Color("score:N", title=None), tooltip=["score", "era", alt.Tooltip("value:Q", format=".4f")],
    ).properties(height=260),
    width="stretch",
)
st.dataframe(ui.rounded(per_era.set_index("era")), width="stretch")
st.download_button(
    "Download the per-era table (CSV)", per_era.to_csv(index=False).encode(),
    file_name=f"{name}-v{version_of[picked]}-per_era_diagnostics.csv",
    mime="text/csv", key="diag_download",
)
