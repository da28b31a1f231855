"""Credential checks: found where the services look, and a message that says exactly what to set when missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.credentials import kaggle_credentials_problem, wandb_mode

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_kaggle_missing_names_every_option(tmp_path: Path) -> None:
    message = kaggle_credentials_problem(env={}, home=tmp_path)
    assert message is not None
    for needed in ("KAGGLE_API_TOKEN", "kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY", "Settings", "API"):
        assert needed in message


def test_kaggle_missing_uses_real_environment_when_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name == "XDG_CONFIG_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert "KAGGLE_API_TOKEN" in (kaggle_credentials_problem() or "")


@pytest.mark.parametrize(
    "env",
    [{"KAGGLE_API_TOKEN": "KGAT_abc"}, {"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "k"}],
)
def test_kaggle_environment_credentials(tmp_path: Path, env: dict[str, str]) -> None:
    assert kaggle_credentials_problem(env=env, home=tmp_path) is None


def test_kaggle_username_without_key_says_which_is_missing(tmp_path: Path) -> None:
    message = kaggle_credentials_problem(env={"KAGGLE_USERNAME": "me"}, home=tmp_path)
    assert message and "KAGGLE_USERNAME is set but KAGGLE_KEY is not" in message


def test_kaggle_json_in_home(tmp_path: Path) -> None:
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "me", "key": "k"}))
    assert kaggle_credentials_problem(env={}, home=tmp_path) is None


def test_kaggle_json_in_config_dir(tmp_path: Path) -> None:
    config_dir = tmp_path / "elsewhere"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "me", "key": "k"}))
    assert kaggle_credentials_problem(env={"KAGGLE_CONFIG_DIR": str(config_dir)}, home=tmp_path / "home") is None
    # With KAGGLE_CONFIG_DIR set, the kaggle package ignores ~/.kaggle: so must we.
    message = kaggle_credentials_problem(env={"KAGGLE_CONFIG_DIR": str(tmp_path / "empty")}, home=tmp_path)
    assert message and "$KAGGLE_CONFIG_DIR" in message


def test_broken_kaggle_json_is_reported(tmp_path: Path) -> None:
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text("{not json")
    message = kaggle_credentials_problem(env={}, home=tmp_path)
    assert message and "kaggle.json exists but cannot be read as JSON" in message


def test_kaggle_access_token_file(tmp_path: Path) -> None:
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "access_token").write_text("KGAT_abc")
    assert kaggle_credentials_problem(env={}, home=tmp_path) is None


def test_download_cli_exits_2_without_importing_kaggle(tmp_path: Path) -> None:
    # Run in a fresh interpreter with no credentials: importing kaggle there would print its own help and exit 1.
    script = (
        "import sys\n"
        "from image_vlm.data import main\n"
        f"code = main(['download', '--dest', {str(tmp_path / 'data')!r}])\n"
        "assert 'kaggle' not in sys.modules, 'kaggle was imported'\n"
        "sys.exit(code)\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    for needed in ("KAGGLE_API_TOKEN", "kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        assert needed in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("report_to", "env", "mode"),
    [
        ("auto", {"WANDB_API_KEY": "k"}, "online"),
        ("wandb", {"WANDB_API_KEY": "k"}, "online"),
        ("auto", {}, "offline"),
        (["wandb", "tensorboard"], {}, "offline"),
        ("none", {"WANDB_API_KEY": "k"}, "disabled"),
        ("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "disabled"}, "disabled"),
        ("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),
    ],
)
def test_wandb_mode(tmp_path: Path, report_to, env: dict[str, str], mode: str) -> None:
    assert wandb_mode(report_to, env=env, home=tmp_path)[0] == mode


def test_wandb_offline_message_says_what_to_set(tmp_path: Path) -> None:
    mode, message = wandb_mode("auto", env={}, home=tmp_path)
    assert mode == "offline" and "set WANDB_API_KEY" in message


def test_wandb_login_in_netrc_counts_as_online(tmp_path: Path) -> None:
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode("auto", env={}, home=tmp_path)[0] == "online"


