"""Credential checks shared by both recipes: Kaggle, Hugging Face and Weights & Biases.

Each check looks for credentials without contacting any service and, when
something is missing, returns a message that says exactly what to set.
Nothing here imports `kaggle`: that package authenticates at import time
and exits the whole process when it finds no credentials.
"""

from __future__ import annotations

import json
import netrc
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "KAGGLE_TOKEN_URL",
    "WANDB_KEY_URL",
    "kaggle_credentials_problem",
    "wandb_mode",
]

KAGGLE_TOKEN_URL = "https://www.kaggle.com/settings/api"
WANDB_KEY_URL = "https://wandb.ai/authorize"

# `report_to` values that turn W&B on: "auto" is the config default (online with a key, offline without).
_REPORT_TO_WANDB = {"auto", "wandb", "all"}
# `report_to` values that mean "no experiment tracking at all".
_REPORT_TO_OFF = {"", "none", "off", "false", "no", "disabled", "0"}


# One line for messages that name a Kaggle download before anyone runs it.
KAGGLE_CREDENTIALS = (
    f"it needs Kaggle credentials: KAGGLE_API_TOKEN, ~/.kaggle/kaggle.json, or KAGGLE_USERNAME + KAGGLE_KEY ({KAGGLE_TOKEN_URL})"
)


def kaggle_credentials_problem(env: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """Say what is missing for the Kaggle API to authenticate, or None when credentials exist.

    Accepted, in the order the kaggle package tries them: a `KAGGLE_API_TOKEN`
    variable (or `~/.kaggle/access_token`), `KAGGLE_USERNAME` plus
    `KAGGLE_KEY`, a `kaggle.json` in `$KAGGLE_CONFIG_DIR`, `~/.kaggle` or
    `~/.config/kaggle`, and the OAuth file `~/.kaggle/credentials.json` left by
    `kaggle auth login`.

    Args:
        env: Environment variables to inspect; defaults to `os.environ`.
        home: Home folder to look in; defaults to `Path.home()`.

    Returns:
        None when some credential is present, else a multi-line message.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else Path(home)

    if env.get("KAGGLE_API_TOKEN", "").strip():
        return None
    if env.get("KAGGLE_USERNAME", "").strip() and env.get("KAGGLE_KEY", "").strip():
        return None
    kaggle_dir = home / ".kaggle"
    for token_file in (kaggle_dir / "access_token", kaggle_dir / "access_token.txt", kaggle_dir / "credentials.json"):
        if _non_empty_file(token_file):
            return None

    config_problems = []
    for config_file in _kaggle_json_candidates(env, home):
        if not config_file.is_file():
            continue
        problem = _kaggle_json_problem(config_file)
        if problem is None:
            return None
        config_problems.append(problem)

    lines = ["Kaggle credentials not found."]
    lines += config_problems
    if env.get("KAGGLE_USERNAME", "").strip() and not env.get("KAGGLE_KEY", "").strip():
        lines.append("KAGGLE_USERNAME is set but KAGGLE_KEY is not.")
    if env.get("KAGGLE_KEY", "").strip() and not env.get("KAGGLE_USERNAME", "").strip():
        lines.append("KAGGLE_KEY is set but KAGGLE_USERNAME is not.")
    config_dir = env.get("KAGGLE_CONFIG_DIR", "").strip()
    json_location = f"{config_dir}/kaggle.json ($KAGGLE_CONFIG_DIR)" if config_dir else "~/.kaggle/kaggle.json"
    lines += [
        f"Create an API token on kaggle.com -> Settings -> API ({KAGGLE_TOKEN_URL}), then do one of:",
        "  1. export KAGGLE_API_TOKEN=<the token>",
        f"  2. save the downloaded kaggle.json as {json_location} and run chmod 600 on it",
        "  3. export KAGGLE_USERNAME=<your username> and KAGGLE_KEY=<your key>",
    ]
    return "\n".join(lines)


def wandb_mode(
    report_to: str | Iterable[str] | None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> tuple[str, str]:
    """Choose how Weights & Biases runs and explain the choice.

    Online needs an API key (`WANDB_API_KEY`, or `wandb login`, which stores it
    in `~/.netrc`); without one W&B logs offline so training never blocks on a
    login prompt. `WANDB_MODE=offline|disabled` set by the user wins.

    Args:
        report_to: The config's `report_to` value: "auto" or "wandb" (W&B on), "none", or a list.
        env: Environment variables to inspect; defaults to `os.environ`.
        home: Home folder holding `.netrc`; defaults to `Path.home()`.

    Returns:
        `(mode, message)` where mode is "online", "offline" or "disabled".

    >>> wandb_mode("none", env={})
    ('disabled', 'W&B disabled (report_to=none)')
    >>> wandb_mode("auto", env={"WANDB_API_KEY": "k"})[0]
    'online'
    """
    env = os.environ if env is None else env
    targets = [report_to] if report_to is None or isinstance(report_to, str) else list(report_to)
    targets = [str(target or "").strip().lower() for target in targets]
    if not any(target in _REPORT_TO_WANDB for target in targets):
        shown = ",".join(target for target in targets if target not in _REPORT_TO_OFF) or "none"
        return "disabled", f"W&B disabled (report_to={shown})"

    forced = env.get("WANDB_MODE", "").strip().lower()
    if forced in ("disabled", "offline", "dryrun"):
        mode = "disabled" if forced == "disabled" else "offline"
        return mode, f"W&B {mode}: WANDB_MODE={forced} is set in the environment"
    if env.get("WANDB_API_KEY", "").strip() or _wandb_netrc_login(home):
        return "online", "W&B online: runs sync to wandb.ai"
    return "offline", (
        "W&B offline: set WANDB_API_KEY to sync runs to wandb.ai "
        f"(key at {WANDB_KEY_URL}); offline runs can be uploaded later with `wandb sync`"
    )


def _kaggle_json_candidates(env: Mapping[str, str], home: Path) -> list[Path]:
    config_dir = env.get("KAGGLE_CONFIG_DIR", "").strip()
    if config_dir:
        # The kaggle package looks only here when the variable is set.
        return [Path(config_dir).expanduser() / "kaggle.json"]
    xdg_config = Path(env.get("XDG_CONFIG_HOME", "").strip() or home / ".config")
    return [home / ".kaggle" / "kaggle.json", xdg_config / "kaggle" / "kaggle.json"]


def _kaggle_json_problem(config_file: Path) -> str | None:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{config_file} exists but cannot be read as JSON ({error})."
    if not isinstance(config, dict) or not config.get("username") or not config.get("key"):
        return f'{config_file} exists but lacks "username" and "key".'
    return None


def _non_empty_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _wandb_netrc_login(home: Path | None) -> bool:
    netrc_path = (Path.home() if home is None else Path(home)) / ".netrc"
    if not netrc_path.is_file():
        return False
    try:
        return netrc.netrc(str(netrc_path)).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False
