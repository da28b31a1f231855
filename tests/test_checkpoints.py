"""Checkpoints are complete or ignored: checksums, truncation, bit rot, half-deleted folders, set-aside."""

import json
from pathlib import Path

import pytest

from conftest import fake_checkpoint
from core.checkpoints import (
    CHECKSUMS,
    NoUsableCheckpoint,
    checkpoint_folders,
    checkpoint_problem,
    choose_resume_checkpoint,
    complete_checkpoints,
    record_checksums,
    set_aside,
)


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_good_checkpoint_passes_both_checks(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 2)
    record = json.loads((ckpt / CHECKSUMS).read_text())
    assert record["algorithm"] == "xxh3_64"
    assert "processor/tokenizer_config.json" in record["files"] and CHECKSUMS not in record["files"]
    assert record["files"]["optimizer.pt"]["size"] == (ckpt / "optimizer.pt").stat().st_size
    assert not list(ckpt.glob("*.tmp")) and not list(ckpt.glob(".*"))
    assert checkpoint_problem(ckpt) is None
    assert checkpoint_problem(ckpt, full=True) is None
    assert complete_checkpoints(tmp_path) == [ckpt]


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "optimizer.pt"])
def test_a_truncated_file_is_not_complete(tmp_path, name):
    ckpt = fake_checkpoint(tmp_path, 2)
    truncate(ckpt / name)
    assert name in checkpoint_problem(ckpt)
    assert complete_checkpoints(tmp_path) == []


def test_a_safetensors_file_truncated_before_the_checksums_fails_its_header_check(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 2, record=False)
    weights = ckpt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    record_checksums(ckpt)
    assert "adapter_model.safetensors" in checkpoint_problem(ckpt)

    garbage = fake_checkpoint(tmp_path / "other", 2, record=False)
    (garbage / "model.safetensors").write_bytes(b"\xff" * 16)  # a header length beyond the file
    record_checksums(garbage)
    assert "model.safetensors" in checkpoint_problem(garbage)


def test_a_bad_folder_gives_a_reason_instead_of_raising(tmp_path):
    (tmp_path / "checkpoint-2").write_text("not a folder")
    ckpt = fake_checkpoint(tmp_path, 4)
    escape = {"../../etc/passwd": {"size": 1, "hash": "0"}}
    (ckpt / CHECKSUMS).write_text(json.dumps({"algorithm": "xxh3_64", "files": escape}))
    assert checkpoint_problem(tmp_path / "checkpoint-2") is not None
    assert "outside" in checkpoint_problem(ckpt)
    assert checkpoint_folders(tmp_path) == [ckpt]


def test_a_flipped_byte_passes_the_cheap_check_and_resume_falls_back_to_the_previous_one(tmp_path):
    older, newer = fake_checkpoint(tmp_path, 2), fake_checkpoint(tmp_path, 4)
    weights = newer / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data, so the header still adds up
    weights.write_bytes(bytes(data))
    assert checkpoint_problem(newer) is None
    assert "adapter_model.safetensors" in checkpoint_problem(newer, full=True)

    lines = []
    assert choose_resume_checkpoint(tmp_path, log=lines.append) == older
    moved = tmp_path / "set-aside-checkpoint-4"
    assert not newer.exists() and moved.is_dir()
    assert "adapter_model.safetensors" in (moved / "SET_ASIDE.txt").read_text()
    assert len(lines) == 1
    assert lines[0].startswith(f"checkpoint-4 in {tmp_path} is unusable (")
    assert lines[0].endswith(f"; set aside as {moved}")
    assert checkpoint_folders(tmp_path) == [older]


def test_a_half_deleted_checkpoint_does_not_count(tmp_path):
    good = fake_checkpoint(tmp_path, 2)
    lost_file = fake_checkpoint(tmp_path, 4)
    (lost_file / "scheduler.pt").unlink()
    lost_state = fake_checkpoint(tmp_path, 10)  # sorts after 4 by step, before it by name
    (lost_state / "trainer_state.json").unlink()
    assert "scheduler.pt" in checkpoint_problem(lost_file)
    assert "trainer_state.json" in checkpoint_problem(lost_state)
    assert checkpoint_folders(tmp_path) == [good, lost_file, lost_state]
    assert complete_checkpoints(tmp_path) == [good]


def test_a_checkpoint_without_checksums_is_not_complete(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 2, record=False)
    assert CHECKSUMS in checkpoint_problem(ckpt)
    (ckpt / CHECKSUMS).write_text("{not json")
    assert CHECKSUMS in checkpoint_problem(ckpt, full=True)
    assert complete_checkpoints(tmp_path) == []


def test_no_usable_checkpoint_raises_unless_restart(tmp_path):
    for step in (2, 4):
        (fake_checkpoint(tmp_path / "a", step) / "trainer_state.json").unlink()
        (fake_checkpoint(tmp_path / "b", step) / "trainer_state.json").unlink()
    with pytest.raises(NoUsableCheckpoint, match=r"none of the 2 checkpoints .* --restart") as caught:
        choose_resume_checkpoint(tmp_path / "a", log=lambda line: None)
    assert "\n" not in str(caught.value) and str(tmp_path / "a") in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["set-aside-checkpoint-2", "set-aside-checkpoint-4"]

    lines = []
    assert choose_resume_checkpoint(tmp_path / "b", restart=True, log=lines.append) is None
    assert len(lines) == 3 and "step 0" in lines[-1]


def test_an_empty_or_missing_folder_is_a_fresh_start(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "runs").mkdir()  # not a checkpoint-N name
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        assert choose_resume_checkpoint(folder, log=pytest.fail) is None
        assert checkpoint_folders(folder) == [] and complete_checkpoints(folder) == []


def test_set_aside_names_escape_the_trainers_rotation_glob(tmp_path):
    first = set_aside(fake_checkpoint(tmp_path, 6, record=False), "first")
    second = set_aside(fake_checkpoint(tmp_path, 6, record=False), "second")
    assert (first.name, second.name) == ("set-aside-checkpoint-6", "set-aside-checkpoint-6-2")
    assert (second / "SET_ASIDE.txt").read_text() == "second\n"
    assert list(tmp_path.glob("checkpoint-*")) == []
    assert checkpoint_folders(tmp_path) == []
