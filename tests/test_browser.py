"""One real-browser pass per recipe: Debian's chromium, driven by Playwright, against `streamlit run`.

With the tiny preset it starts a training run from the form, waits for the live curves and the `finished`
state, uploads a generated file in the compare panel, generates, and checks that both answers (base and
tuned) appear. Screenshots go to the test's tmp_path, and to $UI_SCREENSHOT_DIR when it is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRAIN_TIMEOUT_S = 600  # the tiny presets learn for ~3 min (image) and ~2 min (video)
GENERATE_TIMEOUT_S = 240

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with code {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer {url}/_stcore/health within {timeout_s} s:\n{log.read_text()[-4000:]}")


def stop_group(pid: int, timeout_s: float = 15) -> None:
    """SIGTERM a process group we started, then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run ui/app.py` on a free port, with runs, data and tiny models in temporary folders."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    base = tmp_path_factory.mktemp("ui-browser")
    runs, data = base / "runs", base / "data"
    runs.mkdir()
    data.mkdir()
    env = {
        **os.environ,
        "VLM_RUNS_DIR": str(runs),
        "VLM_DATA_DIR": str(data),
        "VLM_TINY_DIR": os.environ.get("VLM_TINY_DIR") or str(base / "tiny"),
        "VLM_PAGE": "all",
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        # The tiny presets train for minutes; on a busy 2-core runner two intra-op threads wait on each other.
        "OMP_NUM_THREADS": "1",
    }
    port = free_port()
    log = base / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield {"url": url, "runs": runs, "data": data, "log": log, "base": base}
    finally:
        stop_group(process.pid)
        process.wait(timeout=30)
        # Trainers and evaluations run in their own sessions (closing the tab must not stop them): end ours.
        for status_file in runs.glob("*/status.json"):
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                continue
            if status.get("state") in ("starting", "running", "stopping") and status.get("pgid"):
                stop_group(int(status["pgid"]))


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


def sample_png(path: Path) -> Path:
    from image_vlm.synthetic import terrain_tile

    terrain_tile(np.random.default_rng(3), size=96, fire=True).save(path)
    return path


def sample_mp4(path: Path) -> Path:
    from core.media.video import write_clip

    frames = np.full((16, 64, 64, 3), 90, np.uint8)
    for index in range(16):  # a white square crossing the frame
        x = 4 + index * 3
        frames[index, 24:36, x : x + 12] = 255
    return write_clip(path, frames, fps=8)


def wait_idle(page, timeout_s: float = 60) -> None:
    """Wait until no script run is in progress (Streamlit shows its status widget while one is)."""
    status = page.locator("[data-testid='stStatusWidget']")
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        quiet = quiet + 1 if not status.is_visible() else 0
        time.sleep(0.3)


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    wait_idle(page)
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("UI_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def run_logs(runs: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(runs.glob("*/train.log")))


def wait_for_state(page, recipe: str, runs: Path, server_log: Path, timeout_s: float) -> None:
    """Poll the run's status badge until it reads `finished`; fail fast (with the logs) on failed/crashed."""
    state_box = page.locator(f".st-key-{recipe}-run-state")
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        try:
            text = state_box.first.inner_text(timeout=2000)
        except Exception:  # noqa: BLE001 - the box is redrawn on every refresh; try again
            text = ""
        if "finished" in text:
            return
        if "failed" in text or "crashed" in text:
            pytest.fail(f"{recipe} training ended {text!r}:\n{run_logs(runs)}")
        time.sleep(1)
    pytest.fail(f"{recipe} run did not finish in {timeout_s} s (last state {text!r}):\n{run_logs(runs)}\n{server_log.read_text()[-3000:]}")


@pytest.mark.parametrize("recipe", ["image", "video"])
def test_train_then_compare_in_the_browser(server, browser, tmp_path, recipe):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 2200})
    page.set_default_timeout(60_000)
    try:
        page.goto(server["url"] + ("/" if recipe == "image" else "/video"))
        start = page.get_by_role("button", name="Start training")
        start.wait_for()
        # The tiny preset is the default without a GPU: its locally built model fills the form.
        expect(page.locator("input[aria-label='Model']")).to_have_value(re.compile(r"^tiny:"))

        # Train: start from the form, watch the curve appear and the run finish.
        start.click()
        page.get_by_text("Started run").first.wait_for()
        page.locator(f".st-key-{recipe}-curves [data-testid='stVegaLiteChart']").first.wait_for(timeout=TRAIN_TIMEOUT_S * 1000)
        wait_for_state(page, recipe, server["runs"], server["log"], TRAIN_TIMEOUT_S)
        page.locator(f".st-key-{recipe}-curves [data-testid='stVegaLiteChart']").first.wait_for()
        assert page.locator(f".st-key-{recipe}-curves [data-testid='stVegaLiteChart']").count() >= 2
        save_screenshot(page, tmp_path, f"{recipe}-train")

        # Compare: upload a generated file, generate, and see both answers.
        page.get_by_role("tab", name="Compare").click()
        page.get_by_text("Upload", exact=True).click()
        sample = sample_png(tmp_path / "tile.png") if recipe == "image" else sample_mp4(tmp_path / "clip.mp4")
        page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(sample))
        page.get_by_text(f"Uploaded {sample.name}").first.wait_for()
        generate = page.get_by_role("button", name="Generate")
        generate.wait_for()
        generate.click()
        for side in ("base", "tuned"):
            answer = page.locator(f".st-key-{recipe}-answer-{side}")
            answer.get_by_text("Raw output").wait_for(timeout=GENERATE_TIMEOUT_S * 1000)
        assert "Base model" in page.locator(f".st-key-{recipe}-answer-base").inner_text()
        assert "Tuned" in page.locator(f".st-key-{recipe}-answer-tuned").inner_text()
        assert not page.get_by_text("Traceback").count(), "no traceback on the page"
        save_screenshot(page, tmp_path, f"{recipe}-compare")

        # Evaluate: the tiny preset learns, so the panel must show tuned ahead of base, with the gain.
        page.get_by_role("tab", name="Evaluate").click()
        evaluate = page.get_by_role("button", name="Evaluate", exact=True)
        evaluate.wait_for()
        evaluate.click()
        headline = page.locator(".st-key-eval-headline")
        headline.wait_for(timeout=GENERATE_TIMEOUT_S * 1000)
        text = headline.inner_text()
        match = re.search(r"base (\d\.\d+) → tuned (\d\.\d+): tuned is better than base \(\+(\d\.\d+)\)", text)
        assert match, text
        base, tuned, gain = map(float, match.groups())
        assert tuned >= base + 0.25 and gain == pytest.approx(tuned - base, abs=1e-3), text
        save_screenshot(page, tmp_path, f"{recipe}-evaluate")
    finally:
        page.close()
