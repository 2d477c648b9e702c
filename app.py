"""HRTEM crystal analysis dashboard: ``streamlit run app.py``.

The entry point only configures the page and the navigation (``st.navigation`` over the scripts
in ``pages/``); each page is a thin script (widgets, one call into :mod:`hrtem_core`, a figure)
and shared UI helpers live in ``ui/``. The app opens on the Analyze page, which shows the
analysis of the bundled example on first load.

Streamlit still has its older automatic multipage mode for a ``pages/`` folder beside the main
script: until ``st.navigation`` has run once in the process, a visitor who opens a page URL
first would get that page's script alone. Every page therefore starts with
:func:`ui.common.page_guard`, which sends such a run back through this navigation.
"""

from __future__ import annotations

import streamlit as st

from ui.common import app_run, show_error

st.set_page_config(
    page_title="HRTEM crystal analysis",
    page_icon=":material/blur_on:",
    layout="wide",
    initial_sidebar_state="expanded",
)

PAGES = [
    st.Page("pages/analyze.py", title="Analyze", icon=":material/biotech:", default=True),
    st.Page("pages/series.py", title="Defocus series", icon=":material/stacked_line_chart:"),
    st.Page("pages/cards.py", title="PDF cards", icon=":material/table_view:"),
    st.Page("pages/about.py", title="About", icon=":material/info:"),
]

page = st.navigation(PAGES)
with app_run():
    try:
        page.run()
    except Exception as exc:  # last resort: one st.error line, never a traceback in the browser
        show_error(exc)  # (st.rerun / st.stop are BaseExceptions and pass through)
