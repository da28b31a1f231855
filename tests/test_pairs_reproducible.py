"""A stopped and resumed pairs stage samples exactly what an uninterrupted one would: the DPO stage after it, and
so the run, does not depend on when a stop came."""

from __future__ import annotations

import json

import torch

from conftest import StopAfter
from core.preference import sample_pairs
from core.runs import RunDir


def sample(batch):
    """Answers drawn from torch's generator, as a model's sampling draws them."""
    return [[str(int(torch.randint(0, 1000, ()))) for _ in range(4)] for _ in batch]


def score(prompt, answers):
    return [float(answer) for answer in answers]


def candidates(tmp_path, name: str, stop_after: int | None) -> list[dict]:
    run = RunDir(tmp_path / name)
    run.path.mkdir()
    run.write_status("starting")
    prompts = [{"prompt_id": f"clip{i}"} for i in range(6)]
    arguments = dict(batch_size=2, samples_per_prompt=4, temperature=1.0, model="m")
    torch.manual_seed(0)
    if stop_after is not None:
        assert sample_pairs(run, StopAfter(stop_after), prompts, sample, score, **arguments) is None
        torch.rand(17)  # the relaunch is a new process: its generator is not where the first launch left it
    assert sample_pairs(run, StopAfter(), prompts, sample, score, **arguments) is not None
    return [json.loads(line) for line in run.candidates_path.read_text().splitlines()]


def test_a_stop_between_batches_does_not_change_what_is_sampled(tmp_path):
    whole = candidates(tmp_path, "whole", None)
    resumed = candidates(tmp_path, "resumed", 1)
    assert [c["prompt_id"] for c in resumed] == [c["prompt_id"] for c in whole]
    assert [c["answers"] for c in resumed] == [c["answers"] for c in whole]
