"""A tiny model is built whole on every machine of a distributed job.

Two machines each build into their own cache (their own disk). Inside a process group transformers writes a
model's weights on global rank 0 only, so rank 1 once got a folder with no config or weights, and its next
lookup died with `OSError: [Errno 39] Directory not empty` renaming a fresh build over it.
"""

import json
import os
import socket
from pathlib import Path

import torch.multiprocessing as mp

from core import tiny
from core.tiny import BUILDER_VERSION


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_main(rank: int, port: int, caches: list[Path], out: Path) -> None:
    """One machine of a two-machine job: joins the gloo group, then looks the tiny model up twice (the processor,
    then the model), as a recipe does."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        VLM_TINY_DIR=str(caches[rank]),
    )
    import torch.distributed as dist

    dist.init_process_group("gloo")
    result: dict = {}
    try:
        paths = [tiny.resolve_model_name("tiny:qwen2_5_vl") for _ in range(2)]
        result["files"] = sorted(path.name for path in Path(paths[-1]).iterdir())
    except OSError as err:
        result["error"] = str(err)
    (out / f"machine-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def test_every_machine_of_a_job_builds_a_whole_tiny_model(tmp_path):
    caches = [tmp_path / "machine0", tmp_path / "machine1"]
    mp.start_processes(machine_main, args=(free_port(), caches, tmp_path), nprocs=2, join=True, start_method="fork")
    for rank in (0, 1):
        result = json.loads((tmp_path / f"machine-{rank}.json").read_text())
        assert "error" not in result, f"machine {rank}: {result['error']}"
        assert {"config.json", "model.safetensors", "tokenizer.json", "tiny_model.json"} <= set(result["files"]), (rank, result)


def test_an_incomplete_cached_folder_is_rebuilt_not_a_crash(tmp_path, monkeypatch):
    """The folder an older builder left on rank 1 (processor files, no config or weights) is replaced."""
    monkeypatch.setenv("VLM_TINY_DIR", str(tmp_path))
    target = tmp_path / f"internvl-v{BUILDER_VERSION}"
    target.mkdir()
    (target / "tokenizer.json").write_text("{}")

    def build(kind, out_dir, seed=0):
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            Path(out_dir, name).write_text("built")
        return Path(out_dir)

    monkeypatch.setattr(tiny, "build_tiny_model", build)
    assert tiny.tiny_model_path("internvl") == target
    assert sorted(path.name for path in target.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert [path.name for path in tmp_path.iterdir() if path.is_dir()] == [target.name], "no staging folder is left"
