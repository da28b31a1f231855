"""The app's router and the runs page (ui/app.py, ui/pages/), with AppTest."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from conftest import UI_APP, UI_TIMEOUT, app, make_run, texts
from core.config import to_yaml
from image_vlm.config import ImageConfig


@pytest.mark.parametrize("page", ["image", "video", "runs"])
def test_page_renders_without_exception(dirs, page):
    at = app(page)
    assert not at.exception, at.exception
    assert at.title, "every page has a title"
    assert not at.error, texts(at.error)


@pytest.mark.parametrize("page", ["image", "video"])
def test_vlm_page_selects_pages(dirs, page):
    """A container serving one recipe shows that recipe's page first, and never the other recipe's."""
    at = app(page)
    titles = texts(at.title)
    assert ("Image VLM" if page == "image" else "Video VLM") in titles


def test_runs_page_lists_a_cli_made_run(dirs):
    runs, _ = dirs
    run = runs / "my-cli-experiment"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 6, "total": 6, "pid": 1,
                                                  "started": "2026-01-01T10:00:00+00:00", "ended": "2026-01-01T10:05:00+00:00"}))
    (run / "config.yaml").write_text(to_yaml(ImageConfig()))
    make_run(runs, "video-20260101-100000", "stopped", recipe="video")
    at = app("runs")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    rows = {row["run"]: row for row in table.to_dict("records")}
    assert rows["my-cli-experiment"]["recipe"] == "image"  # from the shape of its config
    assert rows["my-cli-experiment"]["state"] == "finished" and rows["my-cli-experiment"]["step"] == "6/6"
    assert rows["video-20260101-100000"]["recipe"] == "video" and rows["video-20260101-100000"]["state"] == "stopped"
    # The detail view shows the config and offers Resume for the stopped run.
    opener = [s for s in at.selectbox if s.label == "Open run"][0]
    opener.set_value("video-20260101-100000").run()
    assert any("tiny:internvl" in str(c.value) for c in at.code)
    assert [b for b in at.button if b.label == "Resume training"]


def test_runs_page_survives_a_deleted_run(dirs):
    runs, _ = dirs
    run = make_run(runs, "image-20260101-100000", "finished")
    at = app("runs")
    shutil.rmtree(run)
    at.run()
    assert not at.exception
    assert "No runs yet" in texts(at.info) or "no longer exists" in texts(at.warning)


def test_ui_doctests():
    """The ui package's doctests (pyproject's testpaths do not collect ui/)."""
    import doctest

    import ui.charts
    import ui.compare_models
    import ui.estimate
    import ui.evaluation
    import ui.form
    import ui.recipes
    import ui.run_view
    import ui.runs_page
    import ui.signin
    import ui.uploads
    import ui.widgets

    modules = (ui.charts, ui.estimate, ui.evaluation, ui.form, ui.compare_models, ui.recipes, ui.run_view, ui.runs_page,
               ui.signin, ui.uploads, ui.widgets)
    assert sum(len(t.examples) for m in modules for t in doctest.DocTestFinder().find(m)) > 20
    for module in modules:
        result = doctest.testmod(module)
        assert result.failed == 0, f"{module.__name__}: {result.failed} doctest(s) failed"


def test_runs_page_on_a_single_recipe_server_opens_its_own_recipe(dirs):
    """The video container's Runs page opens the newest video run, though a newer image run exists."""
    runs, _ = dirs
    video = make_run(runs, "video-20260101-090000", "finished", recipe="video")
    image = make_run(runs, "image-20260101-100000", "finished")
    os.utime(video / "status.json", (1_000, 1_000))
    os.utime(image / "status.json", (2_000, 2_000))
    os.environ["VLM_PAGE"] = "video"
    at = AppTest.from_file(UI_APP, default_timeout=UI_TIMEOUT)
    at.run()
    at.switch_page("pages/runs.py").run()
    opener = [s for s in at.selectbox if s.label == "Open run"][0]
    assert opener.value == "video-20260101-090000"
    assert [row["run"] for row in at.dataframe[0].value.to_dict("records")][0] == "image-20260101-100000"


def test_an_uncaught_error_sends_the_browser_no_message_and_no_traceback(monkeypatch):
    """The repository's .streamlit/config.toml (read from the folder Streamlit starts in) keeps an uncaught error's
    message and traceback in the server log: the browser gets the error's type and Streamlit's generic line."""
    from pathlib import Path

    from streamlit import config

    monkeypatch.chdir(Path(UI_APP).parents[1])
    config.get_config_options(force_reparse=True)
    assert config.get_option("client.showErrorDetails") in ("type", "none")
    secret = "/home/alice/notes.txt holds: the API key"
    at = AppTest.from_string(f"raise ValueError({secret!r})", default_timeout=UI_TIMEOUT).run()
    [error] = at.exception
    assert error.stack_trace == [], error.stack_trace
    assert "original error message is redacted" in error.message
    assert secret not in str(error.proto) and "notes.txt" not in str(error.proto)
