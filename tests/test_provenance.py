"""Every run folder says what made it (`provenance.json`, core/provenance.py): the code, the libraries, the machine,
the data's fingerprint, the weights' revision, the seed, the command and the config's hash; written at the start,
completed at the end, whatever the end; never a secret. The Runs page shows it (and says when a run has none), and
evaluation copies its model and data lines into the report."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import IMAGE_SMOKE, ROOT, app, make_run, run_cli, texts
from core.cli import run_training_main
from core.processes import usable_cpus
from core.provenance import code_version, model_revision, provenance_document
from core.runs import RunDir
from image_vlm.config import ImageConfig

TINY = "image_vlm/configs/tiny.yaml"
SECRETS = {"HF_TOKEN": "hf_provenanceTestSecret0123456789", "WANDB_API_KEY": "wandb-provenance-test-secret-abcdef"}
# The agreed shape (notes/provenance_schema.md): every key, always present.
SCHEMA_KEYS = {"schema", "code", "libraries", "python", "platform", "cpu", "gpu", "data", "model", "seed", "command",
               "config_sha256", "started", "ended", "state"}
LIBRARIES = {"torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "torchao", "torchcodec"}


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, wildfire_synthetic):
    """(run, the command) of one LoRA step on the tiny image model, from the command line, with secrets in its
    environment."""
    base = tmp_path_factory.mktemp("provenance")
    run = RunDir(base / "runs" / "image-provenance")
    args = ["--config", TINY, "--run-dir", str(run.path), *IMAGE_SMOKE, "train.max_steps=1",
            "train.max_completion_length=8", f"data.root={wildfire_synthetic}"]
    done = run_cli("image_vlm.train", *args, env={"VLM_RUNS_DIR": str(base / "runs"), "OMP_NUM_THREADS": "1", **SECRETS})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run, [sys.executable, "-m", "image_vlm.train", *args]


def test_a_tiny_run_records_what_made_it(tiny_run, wildfire_synthetic):
    import torch
    import transformers

    from image_vlm.data import files_fingerprint

    run, command = tiny_run
    doc = json.loads(run.provenance_path.read_text())
    assert SCHEMA_KEYS <= set(doc), f"missing: {SCHEMA_KEYS - set(doc)}"
    assert doc["schema"] == 1
    assert set(doc["code"]) == {"git_commit", "dirty", "package_version"}
    assert doc["code"]["git_commit"] == git("rev-parse", "HEAD"), "the commit this checkout runs (None outside one)"
    status = git("status", "--porcelain")
    assert doc["code"]["dirty"] == (None if status is None else bool(status))
    assert doc["code"]["package_version"] == importlib.metadata.version("vlm-playbook")
    assert set(doc["libraries"]) == LIBRARIES
    assert doc["libraries"]["torch"] == torch.__version__
    assert doc["libraries"]["transformers"] == transformers.__version__
    assert doc["python"] == platform.python_version() and doc["platform"] == platform.platform()
    assert doc["cpu"].endswith(f"({usable_cpus()} core{'s' if usable_cpus() != 1 else ''})"), doc["cpu"]
    assert doc["gpu"] is None if not torch.cuda.is_available() else doc["gpu"]["count"] == torch.cuda.device_count()
    config = run.read_config()
    # The data root as config.yaml records it (absolute), and the fingerprint the image recipe's verify computed.
    assert doc["data"] == {"root": str(wildfire_synthetic), "fingerprint": "sha256:" + files_fingerprint(wildfire_synthetic)}
    assert config["data"]["root"] == doc["data"]["root"]
    assert doc["model"] == {"id": "tiny:qwen2_5_vl", "revision": "tiny"}
    assert doc["seed"] == config["train"]["seed"]
    assert doc["command"] == command
    assert doc["config_sha256"] == hashlib.sha256(run.config_path.read_bytes()).hexdigest()
    started, ended = datetime.fromisoformat(doc["started"]), datetime.fromisoformat(doc["ended"])
    assert started <= ended
    assert doc["state"] == "finished" == run.read_status()["state"]


def test_no_secret_reaches_the_provenance_file(tiny_run):
    run, _ = tiny_run
    text = run.provenance_path.read_text()
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name}'s value is in {run.provenance_path}"


def launch(run_dir: Path, train) -> int:
    return run_training_main(["--config", TINY, "--run-dir", str(run_dir)], config_cls=ImageConfig, prefix="image",
                             default_config=TINY, description="", train=train, modality="image")


def test_a_failed_or_stopped_launch_is_completed_too_and_a_resume_keeps_the_earlier_one(tmp_path, monkeypatch):
    """The trainer's end, whatever it is, lands in provenance.json (here without loading a model: the recipe's
    `train` raises, or asks to stop)."""
    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path))
    run = RunDir(tmp_path / "image-failed")

    def boom(cfg, run, control):
        raise RuntimeError("out of memory, say")

    with pytest.raises(RuntimeError, match="out of memory"):
        launch(run.path, boom)
    doc = json.loads(run.provenance_path.read_text())
    assert doc["state"] == "failed" and doc["ended"] and doc["model"]["revision"] == "tiny"

    stopped = RunDir(tmp_path / "image-stopped")
    assert launch(stopped.path, lambda cfg, run, control: control.request("asked")) == 0
    first = json.loads(stopped.provenance_path.read_text())
    assert (first["state"], stopped.read_status()["state"]) == ("stopped", "stopped") and first["ended"]

    assert launch(stopped.path, lambda cfg, run, control: None) == 0  # resumed, and finished
    second = json.loads(stopped.provenance_path.read_text())
    assert second["state"] == "finished" and second["started"] >= first["started"]
    assert [earlier["state"] for earlier in second["earlier_launches"]] == ["stopped"]


def test_a_hub_model_records_the_commit_of_the_cached_snapshot(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--vlm"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert model_revision("org/vlm", None, cache_dir=tmp_path) == commit
    assert model_revision("org/vlm", "main", cache_dir=tmp_path) == commit
    assert model_revision("org/other", None, cache_dir=tmp_path) is None, "not in the cache: unknown"
    assert model_revision("tiny:qwen2_5_vl") == "tiny" and model_revision(str(tmp_path)) == "local"


def test_outside_a_checkout_the_code_is_the_package_version(tmp_path):
    assert code_version(tmp_path) == {"git_commit": None, "dirty": None,
                                      "package_version": importlib.metadata.version("vlm-playbook")}


# ------------------------------------------------------------------------------------------------- the Runs page


def open_run(at, run_id: str):
    [s for s in at.selectbox if s.label == "Open run"][0].set_value(run_id).run()
    return at


def test_the_runs_page_shows_what_made_a_run_and_says_when_a_run_has_no_record(dirs):
    runs, _ = dirs
    recorded = RunDir(make_run(runs, "image-20260101-100000", "finished"))
    document = provenance_document(recorded, recorded.read_config())
    document.update(ended="2026-01-01T10:01:00+00:00", state="finished", seed=42,
                    code={"git_commit": "0123456789abcdef0123", "dirty": False, "package_version": "0.1.0"},
                    gpu={"name": "NVIDIA H100", "count": 2, "driver": "580.65", "cuda": "12.8"},
                    data={"root": "/data/wildfire", "fingerprint": "sha256:" + "ab" * 32})
    recorded.provenance_path.write_text(json.dumps(document))
    make_run(runs, "image-20251231-100000", "finished")  # from before provenance: no file

    at = open_run(app("runs"), "image-20260101-100000")
    assert not at.exception, at.exception
    shown = texts(at.markdown)
    assert "**Code**: git `0123456789ab`, clean (package 0.1.0)" in shown
    import torch

    assert f"torch {torch.__version__}" in shown
    assert "**Hardware**: 2 × NVIDIA H100 (driver 580.65, cuda 12.8)" in shown
    assert "**Data**: `/data/wildfire`, fingerprint `sha256:abababababab…`" in shown
    assert "**Model**: `tiny:qwen2_5_vl`, a tiny model built locally" in shown
    assert "**Seed**: 42" in shown and "ended 2026-01-01T10:01:00+00:00, finished" in shown
    assert " ".join(document["command"]) in [code.value for code in at.code], "the command, as launched"
    assert "No provenance recorded" not in texts(at.warning)

    at = open_run(at, "image-20251231-100000")
    assert not at.exception, at.exception
    assert "No provenance recorded: this run's folder has no provenance.json" in texts(at.warning)
    assert "**Code**" not in texts(at.markdown), "a run without a record is never shown as if it had one"


def test_a_record_that_never_got_its_end_reads_incomplete(dirs):
    runs, _ = dirs
    run = RunDir(make_run(runs, "image-20260101-100000", "failed"))
    run.provenance_path.write_text(json.dumps(provenance_document(run, run.read_config())))  # started, never ended
    at = open_run(app("runs"), "image-20260101-100000")
    assert not at.exception, at.exception
    assert "Incomplete: the launch that started" in texts(at.warning) and "never recorded its end" in texts(at.warning)
    assert ", not ended" in texts(at.markdown)


# ------------------------------------------------------------------------------------------------- evaluation


def test_evaluation_copies_the_model_and_data_lines_into_its_report(tiny_run):
    from image_vlm import evaluate

    run, _ = tiny_run
    doc = json.loads(run.provenance_path.read_text())
    assert evaluate.main(["--run", str(run.path), "--limit", "2"]) == 0
    report = json.loads(run.eval_report_path("test").read_text())
    assert report["provenance"] == {"model": doc["model"], "data": doc["data"]}
    assert report["provenance"]["model"]["revision"] == "tiny" and report["provenance"]["data"]["fingerprint"]


def test_video_evaluation_copies_the_model_and_data_lines_too(tmp_path, monkeypatch):
    """One LoRA step on the tiny video model, evaluated on two clips (in-process: the cheapest video run)."""
    from conftest import VIDEO_SMOKE
    from video_vlm import evaluate, train
    from video_vlm.synthetic import make_synthetic_dataset

    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path / "runs"))
    root = make_synthetic_dataset(tmp_path / "data", n=10, seed=0)
    run = RunDir(tmp_path / "runs" / "video-provenance")
    assert train.main(["--config", "video_vlm/configs/tiny.yaml", "--run-dir", str(run.path), f"data.root={root}",
                       *VIDEO_SMOKE, "train.max_steps=1"]) == 0
    doc = json.loads(run.provenance_path.read_text())
    assert doc["model"] == {"id": "tiny:internvl", "revision": "tiny"} and doc["data"]["root"] == str(root)
    assert evaluate.main(["--run", str(run.path), "--limit", "2"]) == 0
    report = json.loads(run.eval_report_path("val").read_text())
    assert report["provenance"] == {"model": doc["model"], "data": doc["data"]}
