"""ui.auth: the optional editor password of the card database (no browser needed)."""

from __future__ import annotations

import pytest

from hrtem_core.errors import CardDatabaseError
from ui import auth


class _Secrets(dict):
    """Stands in for st.secrets (a mapping)."""


class _NoSecrets:
    """st.secrets without a secrets.toml: every access raises."""

    def get(self, key, default=None):
        raise FileNotFoundError("no secrets.toml")


def test_password_from_the_environment_first(monkeypatch) -> None:
    monkeypatch.setenv(auth.PASSWORD_ENV, "s3cret")
    assert auth.configured_password(_Secrets(cards_password="other")) == "s3cret"
    monkeypatch.delenv(auth.PASSWORD_ENV)
    assert auth.configured_password(_Secrets(cards_password="other")) == "other"
    assert auth.configured_password(_Secrets(cards_password="  ")) is None
    assert auth.configured_password(_Secrets()) is None
    assert auth.configured_password(_NoSecrets()) is None


def test_without_a_password_everyone_edits(monkeypatch) -> None:
    monkeypatch.delenv(auth.PASSWORD_ENV, raising=False)
    assert auth.can_edit({}, _Secrets())
    monkeypatch.setattr(auth, "configured_password", lambda secrets=None: None)
    auth.require_editor({})  # no exception


def test_with_a_password_read_only_until_unlocked(monkeypatch) -> None:
    monkeypatch.setenv(auth.PASSWORD_ENV, "s3cret")
    state: dict = {}
    assert not auth.can_edit(state)
    with pytest.raises(CardDatabaseError, match="read-only here: enter the editor password"):
        auth.require_editor(state)
    assert auth.try_unlock(state, "wrong", "s3cret", now=0.0) == "wrong password"
    assert not auth.can_edit(state)
    assert auth.try_unlock(state, "s3cret", "s3cret", now=1.0) is None
    assert auth.can_edit(state)
    auth.require_editor(state)


def test_repeated_wrong_attempts_pause_the_session() -> None:
    state: dict = {}
    for i in range(auth.MAX_ATTEMPTS - 1):
        assert auth.try_unlock(state, "x", "pw", now=float(i)) == "wrong password"
    assert "too many attempts" in auth.try_unlock(state, "x", "pw", now=10.0)
    # even the right password waits for the pause to end
    assert "try again in" in auth.try_unlock(state, "pw", "pw", now=11.0)
    assert auth.try_unlock(state, "pw", "pw", now=10.0 + auth.LOCKOUT_S + 1) is None


def test_comparison_is_exact() -> None:
    assert auth.password_matches("pässword", "pässword")
    assert not auth.password_matches("password", "password ")
    assert not auth.password_matches("", "x")


def test_cards_page_is_read_only_until_the_password(tmp_path, monkeypatch) -> None:
    import shutil

    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO
    from ui import common

    dest = tmp_path / "pdf_cards.xlsx"
    shutil.copyfile(REPO / "data" / "pdf_cards.xlsx", dest)
    monkeypatch.setenv(common.CARDS_ENV, str(dest))
    monkeypatch.setenv(auth.PASSWORD_ENV, "s3cret")
    before = dest.read_bytes()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/cards.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("read-only" in i.value for i in at.info)
    key = at.data_editor[0].key
    at.session_state[key] = {
        "edited_rows": {0: {"notes": "edited without the password"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert at.button(key="cards_save").disabled  # a valid edit, but no password
    at.text_input(key="cards_editor_password").input("wrong").run()
    at.button(key="cards_editor_unlock").click().run()
    assert [e.value for e in at.error] == ["wrong password"]
    at.text_input(key="cards_editor_password").input("s3cret").run()
    at.button(key="cards_editor_unlock").click().run()
    assert not at.error, [e.value for e in at.error]
    assert not at.button(key="cards_save").disabled
    at.button(key="cards_save").click().run()
    assert not at.exception and dest.read_bytes() != before
