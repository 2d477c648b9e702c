"""Shared helpers of the Streamlit dashboard (app.py, pages/). Never imported by hrtem_core."""
