"""Optional sign-in for the pages: one shared password, set by VLM_UI_PASSWORD, asked once per browser session.

The box is shared, and 127.0.0.1 is open to every account on it. Streamlit's own `st.login` needs an OIDC
provider, which a box on a LAN rarely has, so the gate is a password form. Unset or empty: no gate. The
password is read from the environment on each run and never logged, shown or stored in the session (only the
signed-in flag is). docs/security.md says how this fits with SSH tunnels and reverse proxies.
"""

from __future__ import annotations

import hmac
import os
import time

import streamlit as st

PASSWORD_ENV = "VLM_UI_PASSWORD"
SIGNED_IN = "vlm:signed_in"
WRONG_PASSWORD = "Wrong password."
# A wrong guess costs a second, so guessing through one session's websocket is slow; a long password does the rest.
WRONG_PASSWORD_DELAY_S = 1.0


def required_password() -> str | None:
    """The password the pages ask for, or None when the gate is off (variable unset or empty)."""
    return os.environ.get(PASSWORD_ENV) or None


def password_matches(given: str, expected: str) -> bool:
    """Whether `given` is the password, in time that does not depend on where they differ.

    Compared as UTF-8 bytes: `hmac.compare_digest` refuses non-ASCII `str`.

    >>> password_matches("correct horse", "correct horse")
    True
    >>> password_matches("correct hors", "correct horse")
    False
    >>> password_matches("pässwort", "pässwort")
    True
    """
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def signed_in() -> bool:
    """Whether this browser session may see the pages: no password is set, or it was given here."""
    return required_password() is None or st.session_state.get(SIGNED_IN) is True


def sign_in_page() -> None:
    """Only a password form; the right password marks the session and reruns into the pages."""
    expected = required_password()
    st.title("VLM fine-tuning")
    st.caption("This server asks for a password. Ask the person who runs it.")
    # clear_on_submit: the typed password does not stay in the widget after a try.
    with st.form("sign-in", clear_on_submit=True):
        given = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted or expected is None:
        return
    if password_matches(given, expected):
        st.session_state[SIGNED_IN] = True
        st.rerun()
    time.sleep(WRONG_PASSWORD_DELAY_S)
    st.error(WRONG_PASSWORD)
