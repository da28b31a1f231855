"""Notices from the libraries we load that tell a user nothing, silenced at their source, by exact match.

torchao is imported by transformers' quantizers and by PEFT whenever it is installed, so by every command that
loads a model or a Trainer, not only by bf16 full fine-tuning, which uses it. On import it registers its enums
with torch.compile's pytree, and torch 2.10+ logs a deprecation notice for each, in the CLI and in every
train.log: "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile ...".
Only those records are dropped: the notice about another library's enum, and every other torch log, still show.
"""

from __future__ import annotations

import logging

_PYTREE_LOGGER = "torch.utils._pytree"
_ENUM_NOTICE = "is an Enum subclass and is now natively supported by torch.compile"


class TorchaoEnumNotices(logging.Filter):
    """Drops torch's "Enum subclass" deprecation notice when the enum is torchao's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _ENUM_NOTICE not in str(record.msg):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        module = getattr(args[0], "__module__", "") if args else ""
        return not str(module).startswith("torchao")


def silence_library_notices() -> None:
    """Install the filters once per process; cheap (no library is imported), so core's import does it."""
    logger = logging.getLogger(_PYTREE_LOGGER)
    if not any(isinstance(existing, TorchaoEnumNotices) for existing in logger.filters):
        logger.addFilter(TorchaoEnumNotices())
