"""Dashboard pages (one Streamlit script each; run through `st.navigation` in common.run_app)."""
