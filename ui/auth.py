"""Optional editor password for the shared card database.

When a password is configured, by the environment variable :data:`PASSWORD_ENV`
(``HRTEM_CARDS_PASSWORD``) or the Streamlit secret :data:`SECRET_KEY` (``cards_password`` in
``.streamlit/secrets.toml``), the card page is read-only until the password is entered in this
browser session; without one, everyone may edit (a local, single-user dashboard). The comparison
is constant-time (:func:`hmac.compare_digest`) and a session is paused after repeated wrong
attempts. This is a guard against casual edits of a shared demo, not an account system: put the
dashboard behind TLS so the password does not travel in clear text.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from hrtem_core.errors import CardDatabaseError

#: Environment variable holding the editor password.
PASSWORD_ENV = "HRTEM_CARDS_PASSWORD"
#: Key of the editor password in ``st.secrets``.
SECRET_KEY = "cards_password"
#: Wrong attempts after which a session waits :data:`LOCKOUT_S` seconds.
MAX_ATTEMPTS = 5
LOCKOUT_S = 60.0

_OK = "cards_editor_ok"
_FAILS = "cards_editor_failures"
_UNTIL = "cards_editor_locked_until"


def configured_password(secrets: Any = None) -> str | None:
    """The editor password, or None when none is configured (then everyone may edit).

    Parameters
    ----------
    secrets : mapping, optional
        Where to look after the environment (default ``st.secrets``; a missing secrets file
        counts as no password).
    """
    value = os.environ.get(PASSWORD_ENV, "")
    if value.strip():
        return value
    if secrets is None:
        try:
            import streamlit as st

            secrets = st.secrets
        except Exception:  # no streamlit, or no runtime
            return None
    try:
        value = secrets.get(SECRET_KEY, "") if hasattr(secrets, "get") else ""
    except Exception:  # st.secrets raises when there is no secrets.toml
        return None
    value = str(value or "")
    return value if value.strip() else None


def password_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of two passwords (UTF-8)."""
    return hmac.compare_digest(str(given).encode("utf-8"), str(expected).encode("utf-8"))


def try_unlock(state: Any, given: str, expected: str, *, now: float | None = None) -> str | None:
    """Check ``given`` for the session ``state``; None when unlocked, else the reason (one line).

    ``state`` is a mutable mapping (``st.session_state``); after :data:`MAX_ATTEMPTS` wrong
    attempts the session must wait :data:`LOCKOUT_S` seconds.
    """
    now = time.monotonic() if now is None else now
    until = float(state.get(_UNTIL, 0.0))
    if now < until:
        return f"too many wrong attempts: try again in {until - now:.0f} s"
    if password_matches(given, expected):
        state[_OK] = True
        state[_FAILS] = 0
        return None
    fails = int(state.get(_FAILS, 0)) + 1
    state[_FAILS] = fails
    if fails >= MAX_ATTEMPTS:
        state[_FAILS] = 0
        state[_UNTIL] = now + LOCKOUT_S
        return f"wrong password; too many attempts: wait {LOCKOUT_S:.0f} s"
    return "wrong password"


def can_edit(state: Any, secrets: Any = None) -> bool:
    """True when no password is configured or this session entered it."""
    return configured_password(secrets) is None or bool(state.get(_OK, False))


def require_editor(state: Any = None) -> None:
    """Raise :class:`CardDatabaseError` unless this session may edit the card database."""
    if state is None:
        import streamlit as st

        state = st.session_state
    if not can_edit(state):
        raise CardDatabaseError(
            "the card database is read-only here: enter the editor password to save changes"
        )


def editor_gate() -> bool:
    """Show the password box when a password is set; return whether this session may edit."""
    import streamlit as st

    expected = configured_password()
    state = st.session_state
    if expected is None:
        return True
    if state.get(_OK, False):
        col_text, col_button = st.columns([5, 1])
        col_text.caption("Editing unlocked for this session.")
        if col_button.button("Lock", key="cards_editor_lock"):
            state[_OK] = False
            st.rerun()
        return True
    st.info(
        "The card database is read-only: enter the editor password to edit, import or save. "
        "Reading, computing and downloading need no password."
    )
    given = st.text_input("Editor password", type="password", key="cards_editor_password")
    if st.button("Unlock editing", key="cards_editor_unlock"):
        problem = try_unlock(state, given, expected)
        if problem is None:
            st.rerun()
        st.error(problem)
    return False
