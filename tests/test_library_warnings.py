"""Commands print no library notices that say nothing to a user: torchao's torch.compile deprecation notices
("<enum 'KernelPreference'> is an Enum subclass ...") came with every command that loads transformers' Trainer
or PEFT, in the CLI and in every train.log."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize(
    "arguments",
    [
        ["-m", "image_vlm.data", "--help"],
        ["-m", "video_vlm.train", "--help"],
        ["-c", "import video_vlm.collator"],  # what video training loads: transformers' Trainer, so torchao
        ["-c", "import core.models, peft"],  # what image training and every model load bring in
    ],
    ids=["image-data-help", "video-train-help", "video-collator", "peft"],
)
def test_loading_the_libraries_prints_no_torchao_enum_notice(arguments):
    result = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Enum subclass" not in result.stderr + result.stdout


def test_other_pytree_warnings_still_show():
    """Only torchao's enums are silenced: the same notice about another library's enum still shows."""
    code = (
        "import enum, logging, core, torch\n"
        "class Mine(enum.Enum):\n    A = 1\n"
        "logging.getLogger('torch.utils._pytree').warning('%s is an Enum subclass and is now natively supported by "
        "torch.compile as an opaque value type.', Mine)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Mine'> is an Enum subclass" in result.stderr
