"""Whether a configured model can be loaded at all, answered in seconds, before the GPU is held.

Loading an unreachable name otherwise fails only after transformers' retries (minutes offline), and a missing
local folder reads "Repo id must be in the form ...". Each problem here is one `ConfigError` naming
`model.name` and what to do. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core.config import ConfigError
from core.families import preset_of
from core.tiny import TINY_KINDS, TINY_PREFIX

HUB_TIMEOUT_S = 5.0
# `org/name` or `name`, the shape of a Hub id; anything else is meant as a folder.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) read now, not when huggingface_hub was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def gated_hint(name: str) -> str:
    """For a shipped preset the hub gates (Gemma 3), what downloading it needs besides a connection.

    >>> gated_hint("Qwen/Qwen2.5-VL-7B-Instruct")
    ''
    """
    shipped = preset_of(name)
    if shipped is None or not shipped[1].gated:
        return ""
    return ", with HF_TOKEN set" + ("" if os.environ.get("HF_TOKEN") else " (the model is gated: accept its licence on huggingface.co first)")


def check_model_available(name: str, revision: str | None = None, timeout_s: float = HUB_TIMEOUT_S) -> None:
    """Raise ConfigError unless `name` is a known tiny model, an existing folder, or a Hub model that is in
    the local cache or answers within `timeout_s`.

    >>> check_model_available("tiny:llama")
    Traceback (most recent call last):
    ...
    core.config.ConfigError: model.name: unknown tiny model 'tiny:llama'; allowed: tiny:qwen2_5_vl | tiny:internvl | tiny:qwen3_vl | tiny:internvl3_5 | tiny:smolvlm2 | tiny:gemma3 | tiny:qwen3_5 | tiny:gemma4
    >>> check_model_available("/nowhere/my-model")
    Traceback (most recent call last):
    ...
    core.config.ConfigError: model.name: local model folder /nowhere/my-model does not exist (a Hub id has the form org/name)
    """
    if name.startswith(TINY_PREFIX):
        if name[len(TINY_PREFIX):] not in TINY_KINDS:
            allowed = " | ".join(TINY_PREFIX + kind for kind in TINY_KINDS)
            raise ConfigError(f"model.name: unknown tiny model {name!r}; allowed: {allowed}")
        return
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if not _HUB_ID.match(name):
        raise ConfigError(f"model.name: local model folder {name} does not exist (a Hub id has the form org/name)")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return  # downloaded before
    if offline():
        raise ConfigError(
            f"model.name: {name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it while online (`hf download {name}`{gated_hint(name)}) or point model.name at a local folder"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(name, revision=revision, timeout=timeout_s)
    except GatedRepoError:
        raise ConfigError(f"model.name: {name} is gated: accept its terms on huggingface.co, then set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"model.name: no model {name} on the Hugging Face Hub (check the spelling; a private model needs HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise ConfigError(f"model.revision: {revision!r} does not exist for {name}") from None
    except HfHubHTTPError:
        return  # the Hub answered with another error (rate limit, 5xx): leave it to the loader and its retries
    except Exception as err:  # noqa: BLE001 - connection refused, DNS failure, timeout: all mean "not reachable"
        raise ConfigError(
            f"model.name: cannot reach the Hugging Face Hub to fetch {name} within {timeout_s:.0f} s "
            f"({type(err).__name__}); offline? Download it while online{gated_hint(name)}, or point model.name at a local folder"
        ) from None
