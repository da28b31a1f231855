"""The suite owns its state: each test starts from an empty temporary folder and a home folder no earlier run has
seen, and what one test sets in the environment is gone for the next. A fresh machine is the only kind CI trusts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def test_temporary_folder_is_the_tests_own_and_empty():
    tmp = Path(tempfile.gettempdir())
    assert tmp != Path("/tmp") and os.environ["TMPDIR"] == str(tmp)
    assert not any(tmp.iterdir()), f"{tmp} holds {sorted(p.name for p in tmp.iterdir())}"
    (tmp / "left-behind").write_text("for the next test to not see")


def test_next_test_sees_nothing_the_last_one_left():
    assert not (Path(tempfile.gettempdir()) / "left-behind").exists()


def test_home_is_an_empty_folder_of_the_session():
    home = Path.home()
    assert home != Path("/root") and not (home / ".cache" / "huggingface").exists()
    assert not (home / ".kaggle").exists() and not (home / ".netrc").exists()


def test_environment_set_by_a_test_is_put_back_first():
    os.environ["VLM_PAGE"] = "leaked-by-a-test"


def test_environment_set_by_a_test_is_put_back_second():
    assert os.environ.get("VLM_PAGE") != "leaked-by-a-test"
