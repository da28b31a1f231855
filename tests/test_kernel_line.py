"""A family whose layers have optional fast kernels (Qwen3.5's linear attention: flash-linear-attention and
causal-conv1d) says in the run's log, in one line, which path is in use and, on the slow one, what to install."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest

from core.families import family_by_key

KERNELS = (("fla", "flash-linear-attention"), ("causal_conv1d", "causal-conv1d"))


@pytest.fixture
def installed(monkeypatch):
    """Which of the kernels' modules this test pretends are installed."""
    present: set[str] = set()
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in present else
                        (None if name in dict(KERNELS) else find_spec(name, *a)))
    return present


def test_the_slow_path_is_named_with_what_to_install(installed):
    family = replace(family_by_key("qwen3_vl"), title="Hybrid", kernel_packages=KERNELS)
    installed.add("fla")
    assert family.kernel_line() == ("kernels: Hybrid runs the slow torch path (causal-conv1d not installed; "
                                    "`pip install causal-conv1d` on a CUDA machine for the fast one)")
    installed.add("causal_conv1d")
    assert family.kernel_line() == ("kernels: Hybrid's flash-linear-attention and causal-conv1d kernels are "
                                    "installed: the fast path is in use")


def test_qwen3_5_runs_say_which_path_they_take(installed):
    from core.architectures import family_lines
    from core.config import ModelSection

    lines = family_lines(ModelSection(name="tiny:qwen3_5"), "image")
    assert lines[0] == "model family: Qwen3.5"
    assert lines[1].startswith("kernels: Qwen3.5 runs the slow torch path (flash-linear-attention, causal-conv1d "
                               "not installed"), lines
    assert family_by_key("gemma3").kernel_line() is None
    assert family_lines(ModelSection(name="tiny:gemma3"), "image") == ["model family: Gemma 3"]
