"""Distributed runs take one path on every rank: resume decisions are rank 0's, and the log names the mode.

Two real processes with the gloo backend, each with its own "local disk" (a folder of its own), as two
DGX Sparks without shared storage would have.
"""

import json
import os
import socket
from pathlib import Path

import torch.multiprocessing as mp

from conftest import fake_checkpoint
from core.checkpoints import complete_checkpoints, record_checksums
from core.processes import distributed_mode
from core.runs import RunDir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_main(rank: int, port: int, disks: list[Path], out: Path) -> None:
    from accelerate.state import PartialState

    PartialState._reset_state()  # the forked child must not inherit the parent's single-process state
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from core.checkpoints import NoUsableCheckpoint, resume_point

    result = {"newest_on_own_disk": complete_checkpoints(disks[rank] / "a")[-1].name}
    result["resumes_from"] = resume_point(disks[rank] / "a").name
    try:
        result["b"] = resume_point(disks[rank] / "b").name
    except NoUsableCheckpoint as err:
        result["b"] = f"refused: {err}"
    (out / f"rank-{rank}.json").write_text(json.dumps(result))
    import torch.distributed as dist

    dist.destroy_process_group()


def test_ranks_whose_disks_disagree_resume_from_the_same_step(tmp_path):
    disks = [tmp_path / "disk0", tmp_path / "disk1"]
    # Folder a: rank 1's disk also holds step 6 (rank 0's save of it never finished there).
    for step in (2, 4):
        fake_checkpoint(disks[0] / "a", step)
        fake_checkpoint(disks[1] / "a", step)
    fake_checkpoint(disks[1] / "a", 6)
    fake_checkpoint(disks[0] / "a", 6, record=False)  # no checksums: incomplete
    # Folder b: rank 0 holds step 4, which rank 1's disk lacks.
    fake_checkpoint(disks[0] / "b", 4)
    record_checksums(fake_checkpoint(disks[1] / "b", 2))

    mp.start_processes(rank_main, args=(free_port(), disks, tmp_path), nprocs=2, join=True, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]

    # Each rank's own disk disagrees, and a per-rank decision would resume rank 1 two steps ahead of rank 0.
    assert [r["newest_on_own_disk"] for r in ranks] == ["checkpoint-4", "checkpoint-6"]
    assert [r["resumes_from"] for r in ranks] == ["checkpoint-4", "checkpoint-4"]
    # A rank that cannot follow rank 0 says so, instead of training from another step or hanging.
    assert ranks[0]["b"] == "checkpoint-4"
    assert ranks[1]["b"].startswith("refused: rank 1: rank 0 resumes from") and "checkpoint-4" in ranks[1]["b"]
    assert "shares" in ranks[1]["b"]


def test_the_log_names_the_distributed_mode(monkeypatch):
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "ACCELERATE_USE_FSDP", "FSDP_VERSION", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(key, raising=False)
    assert distributed_mode() == "single process"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert distributed_mode(cuda=True) == "FSDP2, 2 processes"
    # accelerate forms FSDP on GPUs only: a CPU launch of the FSDP config is data-parallel, and the log says so.
    assert distributed_mode(cuda=False).startswith("DDP over gloo on CPU, 2 processes (FSDP was asked for")


def skip_rank_main(rank: int, port: int, logs: list[Path], out: Path) -> None:
    from accelerate.state import PartialState

    PartialState._reset_state()
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from video_vlm.skipped_clips import SkippedClipsCallback, TooManySkippedClips

    callback = SkippedClipsCallback(RunDir(logs[rank].parent), dataset_size=10, max_fraction=0.1)
    outcome = "trained on"
    for step in (1, 2):
        if step == 2 and rank == 1:  # between steps, rank 1's loader skips three clips on its own machine
            logs[1].write_text("".join(json.dumps({"video": f"clip{i}.mp4", "start_s": 0.0, "end_s": 4.0, "kind": "decode", "stage": None}) + "\n" for i in range(3)))
        try:
            callback.on_step_end(None, None, None)
        except TooManySkippedClips as err:
            outcome = f"stopped at step {step}: {err}"
            break
    (out / f"skip-rank-{rank}.json").write_text(json.dumps(outcome))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def test_every_rank_stops_at_the_same_step_when_one_sees_too_many_skips(tmp_path):
    """One rank failing alone leaves the others waiting in the next collective until the NCCL timeout."""
    logs = [tmp_path / "disk0" / "skipped.jsonl", tmp_path / "disk1" / "skipped.jsonl"]
    for log in logs:
        log.parent.mkdir()
    mp.start_processes(skip_rank_main, args=(free_port(), logs, tmp_path), nprocs=2, join=True, start_method="fork")
    outcomes = [json.loads((tmp_path / f"skip-rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(outcome.startswith("stopped at step 2: 3 of 10 training clips could not be used (rank 1's count)") for outcome in outcomes), outcomes
