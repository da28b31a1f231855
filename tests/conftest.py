"""Shared fixtures and helpers: tiny models and synthetic data built once per session, fake checkpoints and runs, and
the UI tests' AppTest helpers."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.config import read_yaml, to_yaml, validate_config
from core.processes import process_owner, usable_cpus
from core.runs import ENDED_STATES, RunDir
from image_vlm.config import ImageConfig
from video_vlm.config import VideoConfig

ROOT = Path(__file__).resolve().parents[1]


def once_per_session(tmp_path_factory, name: str, make) -> dict:
    """What `make(folder)` returns (JSON), made once per test session however many pytest-xdist workers ask: the
    first maker works in a folder every worker of the session shares, under a file lock, and the others wait for it
    and read what it left (or fail with its error). The lock, not the scheduler, makes it once: pytest-xdist's
    `--dist loadgroup` silently stops grouping under pytest 9.2 (pytest-dev/pytest-xdist#1386)."""
    from filelock import FileLock

    session = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        session = session.parent  # the workers' base folders are popen-gw0, popen-gw1, ... in the session's
    folder = session / name
    done, failed = folder / "made.json", folder / "failed.txt"
    with FileLock(f"{folder}.lock"):
        if failed.exists():
            pytest.fail(f"{name} failed in another worker of this session:\n{failed.read_text()}")
        if not done.exists():
            folder.mkdir(exist_ok=True)
            try:
                made = make(folder)
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}")
                raise
            done.write_text(json.dumps(made))
        return json.loads(done.read_text())


def own_copy(run: RunDir, folder: Path) -> RunDir:
    """A copy of a session's shared run for a test that writes into it (an evaluation): workers read the original
    at the same time."""
    copy = RunDir(folder / run.path.name)
    shutil.copytree(run.path, copy.path)
    return copy


def pytest_configure(config):
    """In a pytest-xdist worker, torch and the processes it starts get their share of the cores, not all of them:
    the workers run side by side, and oversubscribed intra-op threads only wait on each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, usable_cpus() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tiny models and W&B never touch the user's home folders during tests, and runs (with their GPU lock) never
    land in the checkout's runs/: a trainer the user runs there, or a second test session, would make these
    tests hear "GPU busy". A test that needs its own runs root still sets VLM_RUNS_DIR itself.

    HOME is an empty folder for the whole session, as on a fresh machine: nothing a test reads can come from an
    earlier run's caches or a developer's credentials (uv's package download cache excepted: it is keyed by
    content, and the wheels check would otherwise fetch the index again)."""
    os.environ.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    os.environ.pop("VLM_UI_PASSWORD", None)  # a developer's shell may set it: the page tests sign in on purpose only
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    tiny = tmp_path_factory.mktemp("tiny-models")
    os.environ["VLM_TINY_DIR"] = str(tiny)
    os.environ["VLM_RUNS_DIR"] = str(tmp_path_factory.mktemp("runs"))
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tiny


@pytest.fixture(autouse=True)
def own_state(tmp_path_factory, monkeypatch):
    """Each test starts from an empty temporary folder (TMPDIR and `tempfile`'s), so nothing one test or an earlier
    session left in /tmp is seen by another; and whatever environment variables a test sets are put back after it."""
    tmp = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    saved = dict(os.environ)
    yield tmp
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def wildfire_synthetic(tmp_path_factory) -> Path:
    from image_vlm.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("wildfire") / "data", per_class=24, seed=0)


def run_cli(module: str, *args: str, env: dict | None = None, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repo root (or `cwd`) and return the finished process (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_learned_the_red_blob(run) -> None:
    """The tiny image preset's learnability bar, for any family: after the coin-flip warm start the format is in
    place and GRPO starts at chance, then correctness climbs by 0.2, and held-out accuracy ends at 0.8 or more and at
    least 0.25 above the base model's."""
    from image_vlm import evaluate

    grpo = [m for m in run.read_metrics() if m.get("stage") == "grpo" and "loss" in m]
    assert len(grpo) == 300 and any(m.get("stage") == "warm_start" for m in run.read_metrics())
    fmt = sum(m["rewards/format_reward/mean"] for m in grpo[:10]) / 10
    correctness = [m["rewards/correctness_reward/mean"] for m in grpo]
    start, end = sum(correctness[:30]) / 30, sum(correctness[-30:]) / 30
    print(f"format reward after the warm start {fmt:.2f}; GRPO correctness: first 30 steps {start:.2f}, last 30 {end:.2f}")
    assert fmt >= 0.8, "the warm start taught the format"
    assert 0.3 <= start <= 0.7, "coin-flip answers: GRPO starts near chance"
    assert end >= start + 0.2, (start, end)

    assert evaluate.main(["--run", str(run.path)]) == 0
    report = json.loads((run.eval_dir / "test.json").read_text())
    base, tuned = report["models"]["base"]["accuracy"], report["models"]["tuned"]["accuracy"]
    print(f"held-out accuracy: base {base:.2f}, tuned {tuned:.2f}")
    assert tuned >= 0.8 and tuned >= base + 0.25, (base, tuned)


def launch_run(module: str, run_dir: Path, *args: str, cwd: Path = ROOT) -> subprocess.Popen:
    """`python -m module --run-dir RUN_DIR args` in its own session (one thread), its output appended to
    `<RUN_DIR>.log` beside the folder: a training run to stop and relaunch while the test watches it."""
    log = (run_dir.parent / f"{run_dir.name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", module, "--run-dir", str(run_dir), *args],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )


class StopAfter:
    """A run's stop control (`RunControl.poll`) that reports a stop request from its `after`-th poll on (None: never)."""

    def __init__(self, after: int | None = None):
        self.after, self.polls = after, 0

    def poll(self) -> bool:
        self.polls += 1
        return self.after is not None and self.polls > self.after


def stop_in_stage(launch, run, stage: str, min_step: int, timeout_s: float = 600) -> None:
    """Start a run with `launch()`, ask it to stop once its `stage` has reached `min_step`, and check it ends
    `stopped` with exit 0."""
    import signal
    import time

    from core.runs import stop_run

    proc = launch()
    log = run.path.parent / f"{run.path.name}.log"  # where launch_run writes
    try:
        deadline = time.monotonic() + timeout_s
        while not (run.read_status().get("stage") == stage and (run.read_status().get("step") or 0) >= min_step):
            assert proc.poll() is None, f"the run ended before its {stage} stage: {run.read_status()}\n" + (
                log.read_text()[-3000:] if log.exists() else "")
            assert time.monotonic() < deadline, f"timed out waiting for the {stage} stage"
            time.sleep(0.2)
        stop_run(run)
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert run.read_status()["state"] == "stopped"


# The tiny image preset learns for minutes (full fine-tuning, a warm start, 250 GRPO steps of 32); the smoke
# tests of the run-folder contract need a few cheap LoRA steps of it instead.
IMAGE_SMOKE = (
    "warm_start.enabled=false", "finetune.method=lora", "finetune.r=8", "finetune.alpha=16",
    "train.per_device_train_batch_size=4", "train.temperature=1.0", "train.loss_type=dapo",
    "rewards.weights.format=1.0", "data.max_train_samples=32", "logging.save_steps=3",
)

# Likewise the tiny video preset fine-tunes in full for 120 steps; the contract tests train a few LoRA steps.
VIDEO_SMOKE = (
    "finetune.method=lora", "finetune.r=16", "finetune.alpha=32", "finetune.dropout=0.0",
    "finetune.vision_attention=true", "finetune.vision_mlp=true",
    "train.max_steps=6", "train.per_device_train_batch_size=4", "logging.save_steps=3",
)


@pytest.fixture(scope="session")
def warm_qwen(tmp_path_factory, wildfire_synthetic) -> Path:
    """The tiny Qwen after the product's warm start (coin-flip answers: the format, not the task).

    Random weights never emit `<SOLUTION>`, so every reward would be 0 and GRPO's advantages would vanish.
    The run's `stages/warm_start/model` is a whole model (the preset fine-tunes in full) that the smoke
    tests then start GRPO from.
    """
    from image_vlm import train

    run = tmp_path_factory.mktemp("warm-qwen") / "run"
    code = train.main([
        "--config", "image_vlm/configs/tiny.yaml", "--run-dir", str(run), f"data.root={wildfire_synthetic}",
        "warm_start.max_steps=60", "train.max_steps=1", "train.per_device_train_batch_size=4", "logging.save_steps=1000",
    ])
    assert code == 0
    return run / "stages" / "warm_start" / "model"


def write_audio_only(path) -> None:
    """An mp4 holding only an AAC audio stream: a "video" the data checks must reject."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(3):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# ------------------------------------------------------------------- helpers several test modules share


def fake_checkpoint(folder: Path, step: int, record: bool = True) -> Path:
    """A `checkpoint-N` folder with real files (a LoRA run's adapter, optimizer and scheduler state, processor), at
    the product's own name (`checkpoint_path`); with `record`, sealed as a save ends (`record_checksums`) and then
    complete by the product's own check (`checkpoint_problem`)."""
    import torch
    from safetensors.torch import save_file

    from core.checkpoints import TRAINER_STATE, checkpoint_path, checkpoint_problem, record_checksums

    ckpt = checkpoint_path(folder, step)
    ckpt.mkdir(parents=True)
    weights = {"lora_A.weight": torch.randn(4, 16), "lora_B.weight": torch.zeros(16, 4)}
    save_file(weights, ckpt / "adapter_model.safetensors", metadata={"format": "pt"})
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))
    torch.save({"state": {0: {"exp_avg": torch.randn(4, 16)}}, "param_groups": [{"lr": 1e-4}]}, ckpt / "optimizer.pt")
    torch.save({"last_epoch": step}, ckpt / "scheduler.pt")
    (ckpt / TRAINER_STATE).write_text(json.dumps({"global_step": step, "log_history": []}))
    (ckpt / "processor").mkdir()
    (ckpt / "processor" / "tokenizer_config.json").write_text("{}")
    if record:
        record_checksums(ckpt)
        assert checkpoint_problem(ckpt, full=True) is None, "the fake must be complete as the product defines it"
    return ckpt


def latest_checkpoint(run: RunDir) -> Path | None:
    """The newest complete checkpoint of a run of one stage (`checkpoints/checkpoint-N`), or None."""
    from core.checkpoints import complete_checkpoints

    return next(reversed(complete_checkpoints(run.checkpoints_dir)), None)


@pytest.fixture(scope="session")
def learned_image_run(tmp_path_factory) -> RunDir:
    """The shipped tiny image preset, untouched but for its data folder, trained once per session (`once_per_session`):
    the learnability test checks its curves and scores it, the browser test compares and evaluates it in the UI,
    each on its own copy (`own_copy`).

    One intra-op thread keeps the float sums, and so the whole trajectory, the same on every machine.
    """

    def train_the_preset(base: Path) -> dict:
        import torch

        from image_vlm import train

        run = RunDir(base / "image-learned")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        # As the README runs the preset: its own relative data.root, from a working folder (this fixture's own).
        os.chdir(base)
        try:
            code = train.main(["--config", str(ROOT / "image_vlm/configs/tiny.yaml"), "--run-dir", str(run.path)])
        finally:
            os.chdir(ROOT)
            torch.set_num_threads(threads)
        assert (base / "data" / "synthetic-wildfire").is_dir(), "the preset's relative data.root is under the working folder"
        assert code == 0, "the tiny image preset did not finish"
        return {"run": str(run.path)}

    return RunDir(Path(once_per_session(tmp_path_factory, "learned-image", train_the_preset)["run"]))


@pytest.fixture(scope="session")
def learned_video_run(tmp_path_factory) -> tuple[RunDir, subprocess.CompletedProcess]:
    """(run, the training process) of `make train-video CONFIG=video_vlm/configs/tiny.yaml` as the CLI runs it,
    once per session (`once_per_session`), into an empty runs folder: the round-trip test evaluates it, the browser
    test compares and evaluates it in the UI, each on its own copy (`own_copy`)."""

    def train_the_preset(base: Path) -> dict:
        runs = base / "runs"
        # As the README runs the preset, with its own relative data.root, from a working folder of the fixture's
        # own: the tiny preset generates its synthetic clips under it.
        trained = run_cli("video_vlm.train", "--config", str(ROOT / "video_vlm/configs/tiny.yaml"), cwd=base,
                          env={"VLM_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"})
        assert trained.returncode == 0, trained.stdout + trained.stderr
        (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
        return {"run": str(run_dir), "args": trained.args, "stdout": trained.stdout, "stderr": trained.stderr}

    made = once_per_session(tmp_path_factory, "learned-video", train_the_preset)
    return RunDir(Path(made["run"])), subprocess.CompletedProcess(made["args"], 0, made["stdout"], made["stderr"])


def tiny_run(tmp_path: Path, method: str):
    """(run, config, image): a finished tiny image run laid out by hand, its weights moved far from the base's
    (the LoRA B matrices, or the full model's output head), so base and tuned answers differ."""
    import numpy as np
    import torch
    from PIL import Image

    from core.config import read_yaml, to_yaml, validate_config
    from core.models import load_model, load_processor
    from image_vlm.config import ImageConfig
    from image_vlm.task import image_size_arguments

    data = read_yaml(ROOT / "image_vlm" / "configs" / "tiny.yaml")
    data["finetune"]["method"] = method
    data.setdefault("eval", {})["max_new_tokens"] = 24
    cfg = validate_config(ImageConfig, data)
    run = RunDir(tmp_path / f"image-{method}")
    run.write_config(to_yaml(cfg))
    processor = load_processor(cfg.model, **image_size_arguments(cfg.model, cfg.data.max_pixels))
    model = load_model(cfg.model)
    torch.manual_seed(0)
    if method == "full":  # "trained": the output head moved far from the base's
        with torch.no_grad():
            model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 5)
        artifact = run.model_dir
        model.save_pretrained(artifact)
    else:
        from core.models import apply_finetune

        tuned = apply_finetune(model, cfg.finetune)
        with torch.no_grad():
            for name, param in tuned.named_parameters():
                if "lora_B" in name:
                    param.add_(torch.randn_like(param) * 5)
        artifact = run.adapter_dir
        tuned.save_pretrained(artifact)
    processor.save_pretrained(artifact)
    image = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    return run, cfg, image


def last(texts) -> str:
    """The last item a generator yields (a streamed answer's final text)."""
    text = ""
    for text in texts:  # noqa: B007 - the loop is for its last value, returned below
        pass
    return text


# ------------------------------------------------------------------- the UI tests' AppTest helpers

UI_APP = str(ROOT / "ui" / "app.py")
UI_TIMEOUT = 60


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    runs, data = tmp_path / "runs", tmp_path / "data"
    runs.mkdir()
    data.mkdir()
    monkeypatch.setenv("VLM_RUNS_DIR", str(runs))
    monkeypatch.setenv("VLM_DATA_DIR", str(data))
    monkeypatch.setenv("VLM_PAGE", "all")
    return runs, data


def app(page: str = "image") -> AppTest:
    """The app on one page (VLM_PAGE picks it; the recipe pages are the default page of their container)."""
    os.environ["VLM_PAGE"] = page if page in ("image", "video") else "all"
    at = AppTest.from_file(UI_APP, default_timeout=UI_TIMEOUT)
    at.run()
    if page == "runs":
        at.switch_page("pages/runs.py").run()
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def make_run(runs: Path, run_id: str, state: str, recipe: str = "image", pid: int | None = None, adapter: bool = False,
             config_overrides: dict | None = None) -> Path:
    """A run folder as the training CLI leaves it, written by the product's own writers (`RunDir`): config.yaml,
    status.json (a launch that started 2026-01-01 10:00 and, when it ended, ended a minute later), a few metrics."""
    cls, preset = (ImageConfig, "image_vlm") if recipe == "image" else (VideoConfig, "video_vlm")
    data = read_yaml(ROOT / preset / "configs" / "tiny.yaml")
    data.setdefault("data", {})["root"] = str(runs.parent / "data" / f"synthetic-{recipe}")
    for section, values in (config_overrides or {}).items():
        data.setdefault(section, {}).update(values)
    run = RunDir(runs / run_id)
    assert not run.exists(), f"{run.path} exists already"
    run.write_config(to_yaml(validate_config(cls, data)))
    pid = pid or 999_999_999
    # Owned by this namespace, so a dead pid reads `crashed` at once (as from the trainer's own container).
    owner = {**process_owner(), "pid": pid}
    run.write_status("starting", pid=pid, owner=owner, started="2026-01-01T10:00:00+00:00")
    error = {"error": "RuntimeError: out of GPU memory"} if state == "failed" else {}
    run.write_status(state, pid=pid, owner=owner, step=3, total=6, **error)
    if state in ENDED_STATES:
        run.update_status(ended="2026-01-01T10:01:00+00:00", active_s=60.0)
    for step in (1, 2, 3):
        run.append_metric({"step": step, "time": 100.0 + step, "loss": 1.0 / step, "learning_rate": 1e-4,
                           "grad_norm": 0.5, "reward": 0.1 * step, "rewards/format_reward/mean": 0.2})
    if adapter:
        run.adapter_dir.mkdir()
        (run.adapter_dir / "adapter_config.json").write_text("{}")
    return run.path


def png_bytes(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def hold_gpu_lock(runs: Path, run_id: str = "x", app: str = "Image VLM page"):
    """Hold `<runs>/.gpu.lock` as another process's trainer does: its own open file, flocked, holding the record the
    lease writes (`core.gpu_lease.lock_record`, here for a trainer that `app` started)."""
    from core.gpu_lease import lock_path, lock_record, write_lock_record

    handle = open(lock_path(runs), "a+")  # noqa: SIM115 - held open for the test's duration
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    write_lock_record(handle.fileno(), lock_record(run_id, kind="training", app=app))
    return handle


class FakeProcess:
    pid = 12345

    def poll(self):
        return None


def fake_popen(calls: list):
    """Stands in for the trainer: the real launcher runs (GPU lock, folder, `starting`), nothing is started."""

    def popen(command, **kwargs):
        calls.append(command)
        return FakeProcess()

    return popen


def number(at: AppTest, label: str):
    return [r for r in at.number_input if r.label == label][0]


# ------------------------------------------------------------------- Debian's chromium, driven by Playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps opening connections this closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: install the test extra (make setup)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
