"""HRTEM crystal analysis dashboard: ``streamlit run app.py``.

The entry point only configures the page and the navigation; each page is a thin script in
``app_pages/`` (widgets, one call into :mod:`hrtem_core`, a figure) and shared UI helpers live in
``ui/``. The app opens on the Analyze page, which analyses the bundled example on first load.

The folder is deliberately not called ``pages/``: Streamlit (1.67) switches to its older
multipage mode when a ``pages/`` folder sits beside the main script, and a visitor who opens a
page's URL first would then get the folder's files as pages, bypassing this navigation.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(
    page_title="HRTEM crystal analysis",
    page_icon=":material/blur_on:",
    layout="wide",
    initial_sidebar_state="expanded",
)

PAGES = [
    st.Page("app_pages/analyze.py", title="Analyze", icon=":material/biotech:", default=True),
    st.Page("app_pages/series.py", title="Defocus series", icon=":material/stacked_line_chart:"),
    st.Page("app_pages/cards.py", title="PDF cards", icon=":material/table_view:"),
    st.Page("app_pages/about.py", title="About", icon=":material/info:"),
]

page = st.navigation(PAGES)
try:
    page.run()
except Exception as exc:  # last resort: one st.error line, never a traceback in the browser
    from ui.common import show_error

    show_error(exc)
