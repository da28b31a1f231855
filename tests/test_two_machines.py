"""A launch for two machines trains as one job or not at all: a machine whose process ends up alone is refused.

The containers' scenario (two machines on host networking, one killed mid-run) is in test_containers_live.py.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_accelerate_cpu_launch_for_two_machines_is_refused_not_trained_alone(tmp_path):
    """`accelerate launch --cpu --num_machines 2` starts each machine's process alone (the issue measured each one
    training by itself on the shared run folder): refused in one line, exit 2, before the run folder exists."""
    env = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_machines", "2", "--num_processes", "2",
        "--machine_rank", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", "29581", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--quiet", "-m", "image_vlm.train", "--config", "image_vlm/configs/tiny.yaml",
        "warm_start.enabled=false", "train.max_steps=1", f"data.root={tmp_path / 'data'}", "--run-dir", str(tmp_path / "run"),
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert len(errors) == 1 and "asked for a job of several processes (MASTER_ADDR=127.0.0.1:29581)" in errors[0], proc.stderr[-2000:]
    assert "accelerate launch --cpu starts each machine's process alone" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists(), "a refused launch creates no run folder"
