"""The optional sign-in (VLM_UI_PASSWORD, ui/signin.py) as a person meets it in ui/app.py, with AppTest."""

from __future__ import annotations

import logging
import os

from streamlit.testing.v1 import AppTest

from conftest import UI_APP, UI_TIMEOUT, texts

PASSWORD = "correct horse battery stäple"
IMAGE_TITLE = "Image VLM: wildfire detection"


def signed_out_app(vlm_page: str = "image", **query: str) -> AppTest:
    os.environ["VLM_PAGE"] = vlm_page
    os.environ["VLM_UI_PASSWORD"] = PASSWORD
    at = AppTest.from_file(UI_APP, default_timeout=UI_TIMEOUT)
    at.query_params.update(query)
    return at.run()


def sign_in(at: AppTest, password: str) -> AppTest:
    [field] = at.text_input
    field.input(password)
    [submit] = at.button
    return submit.click().run()


def everything_shown(at: AppTest) -> str:
    """Every text a person could read on the screen, of the element kinds the app uses."""
    kinds = (at.title, at.header, at.subheader, at.markdown, at.caption, at.error, at.warning, at.info, at.success,
             at.code)
    return "\n".join(texts(kind) for kind in kinds)


def assert_only_the_form(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert texts(at.title) == "VLM fine-tuning"
    assert [f.label for f in at.text_input] == ["Password"]
    assert [b.label for b in at.button] == ["Sign in"]
    # Nothing of a page: no tabs, run table, form fields or the recipe's words, and no router flag for the pages.
    assert not at.tabs and not at.dataframe and not at.selectbox and not at.number_input and not at.expander
    assert "wildfire" not in everything_shown(at).lower() and "Runs" not in everything_shown(at)
    assert "vlm:router" not in at.session_state


def test_no_page_content_before_the_password(dirs):
    at = signed_out_app()
    assert_only_the_form(at)
    assert "asks for a password" in texts(at.caption)


def test_a_wrong_password_gets_one_line_and_is_never_echoed(dirs, caplog, capsys):
    wrong = "hunter2-not-it"
    with caplog.at_level(logging.DEBUG):
        at = sign_in(signed_out_app(), wrong)
        assert [e.value for e in at.error] == ["Wrong password."]
        at = sign_in(at, wrong + "-again")
    assert [e.value for e in at.error] == ["Wrong password."], "one line per try, not a pile"
    assert_only_the_form(at)
    out = capsys.readouterr()
    for secret in (wrong, PASSWORD):
        assert secret not in everything_shown(at)
        assert secret not in caplog.text and secret not in out.out and secret not in out.err


def test_the_right_password_shows_the_page_and_stays_signed_in(dirs):
    at = sign_in(signed_out_app(), PASSWORD)
    assert not at.exception, at.exception
    assert texts(at.title) == IMAGE_TITLE
    assert not at.error
    assert "Password" not in [f.label for f in at.text_input]
    assert {"Train", "Compare", "Evaluate"} <= {t.label for t in at.tabs}
    at.run()  # a later rerun of the same session (a click, a live refresh) does not ask again
    assert texts(at.title) == IMAGE_TITLE


def test_a_page_link_opened_before_signing_in_opens_after_it(dirs):
    """A fresh server sends a page URL back to the router as ?page=<name>; the form keeps it."""
    at = signed_out_app("all", page="runs")
    assert_only_the_form(at)
    at = sign_in(at, PASSWORD)
    assert not at.exception, at.exception
    assert texts(at.title) == "Runs"


def test_only_a_set_variable_asks(dirs):
    """Unset or empty, nothing changes: the page comes at once. Set, the same start shows only the form."""
    os.environ["VLM_PAGE"] = "image"
    for password, gated in ((None, False), ("", False), (PASSWORD, True)):
        os.environ.pop("VLM_UI_PASSWORD", None)
        if password is not None:
            os.environ["VLM_UI_PASSWORD"] = password
        at = AppTest.from_file(UI_APP, default_timeout=UI_TIMEOUT).run()
        assert not at.exception, at.exception
        if gated:
            assert_only_the_form(at)
        else:
            assert texts(at.title) == IMAGE_TITLE, f"VLM_UI_PASSWORD={password!r}"
            assert "Password" not in [f.label for f in at.text_input]
