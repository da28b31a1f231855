"""Compare and uploads (ui/compare.py, ui/uploads.py): bad uploads, the gallery, a run's latest checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import app, make_run, png_bytes, texts


def compare_upload(at: AppTest, recipe: str, name: str, data: bytes, mime: str) -> AppTest:
    at.radio(key=f"{recipe}:source").set_value("Upload").run()
    uploader = at.file_uploader(key=f"{recipe}:upload")
    uploader.set_value((name, data, mime))
    return at.run()


def live_run(runs: Path, run_id: str) -> Path:
    """A run whose trainer is this test process: active and beating, so it reads `running`."""
    run = make_run(runs, run_id, "running", pid=os.getpid())
    (run / "heartbeat").touch()
    return run


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.txt", b"hello", ".txt files are not accepted"),
        ("empty.png", b"", "the file is empty"),
        ("fake.png", b"this is not a png", "not an image"),
        ("truncated.png", png_bytes()[:60], "truncated or corrupt"),
    ],
)
def test_bad_image_uploads_show_a_message(dirs, name, data, message):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True)
    at = compare_upload(app("image"), "image", name, data, "image/png")
    assert not at.exception
    assert "Upload refused" in texts(at.error) and message in texts(at.error), texts(at.error)


def test_hostile_upload_name_is_made_safe(dirs):
    runs, _ = dirs
    make_run(runs, "image-20260101-100000", "finished", adapter=True)
    at = compare_upload(app("image"), "image", "../../etc/passwd.png", png_bytes(), "image/png")
    assert not at.exception and not at.error, texts(at.error)
    assert "saved as `passwd.png`" in texts(at.caption)
    assert [b for b in at.button if b.label == "Generate"]


def test_bad_video_upload_shows_a_message(dirs):
    runs, _ = dirs
    make_run(runs, "video-20260101-100000", "finished", recipe="video", adapter=True)
    from ui.uploads import upload_root

    at = app("video")  # the page's first draw makes the gallery's generated samples in the upload folder
    before = set(upload_root().iterdir())
    at = compare_upload(at, "video", "bad.mp4", b"\x00\x00\x00\x18ftypmp42 not really", "video/mp4")
    assert not at.exception
    error = texts(at.error)
    assert "Upload refused: bad.mp4: cannot be read as a video: the file is damaged" in error, error
    assert str(upload_root()) not in error and "Errno" not in error, "no server path, no raw error number"
    assert set(upload_root().iterdir()) <= before, "the refused upload's folder is removed"


def test_compare_panel_without_trained_runs_says_so(dirs):
    at = app("image")
    assert "No adapter yet" in texts(at.info)


def test_save_upload_checks_size_name_and_content(tmp_path):
    from ui.uploads import UploadError, save_upload

    image = (".png", ".jpg")
    saved = save_upload("..\\..\\Windows\\fire photo (1).PNG", png_bytes(), image, 20, "image", folder=tmp_path)
    assert saved.path == tmp_path / "fire_photo_1.png" and saved.renamed and saved.path.read_bytes() == png_bytes()
    with pytest.raises(UploadError, match="over the 1 MB limit"):
        save_upload("big.png", b"\x89PNG" + b"\x00" * (1024 * 1024 + 1), image, 1, "image", folder=tmp_path)
    with pytest.raises(UploadError, match="not an image"):
        save_upload("x.jpg", b"GIF89a-not-really", image, 20, "image", folder=tmp_path)
    assert not (tmp_path / "x.jpg").exists(), "refused files are not left behind"
    with pytest.raises(UploadError, match="files without a suffix"):
        save_upload("..", b"data", image, 20, "image", folder=tmp_path)


def test_save_upload_accepts_a_real_video(tmp_path):
    from core.media.video import write_clip
    from ui.uploads import UploadError, save_upload

    clip = write_clip(tmp_path / "src.mp4", np.zeros((8, 32, 32, 3), np.uint8), fps=8)
    saved = save_upload("dash cam.mp4", clip.read_bytes(), (".mp4", ".webm"), 200, "video", folder=tmp_path / "up")
    assert saved.name == "dash_cam.mp4" and saved.path.exists()
    with pytest.raises(UploadError):
        save_upload("broken.mp4", clip.read_bytes()[:200], (".mp4",), 200, "video", folder=tmp_path / "up")


@pytest.mark.parametrize("recipe", ["image", "video"])
def test_compare_gallery_offers_samples(dirs, recipe):
    """Without a prepared dataset the gallery falls back to generated samples; no model is loaded to show it."""
    runs, _ = dirs
    make_run(runs, f"{recipe}-20260101-100000", "finished", recipe=recipe, adapter=True)
    at = app(recipe)
    assert not at.exception and not at.error, texts(at.error)
    samples = at.selectbox(key=f"{recipe}:sample")
    assert samples.options and all(name.startswith("synthetic/") for name in samples.options)
    assert [b for b in at.button if b.label == "Generate"]


def test_compare_during_a_run_offers_its_latest_checkpoint(dirs):
    from core.checkpoints import record_checksums

    runs, _ = dirs
    run = live_run(runs, "image-20260101-100000")
    at = app("image")
    assert "is training: its latest checkpoint appears here" in texts(at.info)
    assert "No adapter yet: finish or stop a training run first (a saved checkpoint" not in texts(at.info)

    checkpoint = run / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text("{}")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    record_checksums(checkpoint)
    at.run()
    assert "latest checkpoint, step 2 (`checkpoints/checkpoint-2`)" in texts(at.caption)


def test_upload_folder_is_private_to_the_server(own_state):
    """Uploads go to a fresh 0700 folder that only this server knows, never a fixed path another local user could
    create first; it is swept by age and quota. (Before: a fixed /tmp/vlm-ui-uploads, shared by every server.)"""
    import stat
    import time

    from ui.uploads import save_upload, sweep_uploads, upload_root

    root = upload_root()
    assert root.parent == own_state and root.name != "vlm-ui-uploads" and root.name.startswith("vlm-ui-uploads-")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert upload_root() == root, "one folder per server"
    old = save_upload("old.png", png_bytes(), (".png",), 20, "image").path.parent
    stale = time.time() - 2 * 24 * 3600
    os.utime(old, (stale, stale))
    new = save_upload("new.png", png_bytes(), (".png",), 20, "image").path.parent
    assert not old.exists() and new.exists(), "a day-old upload is swept when the next one is saved"
    big = save_upload("big.png", png_bytes(256), (".png",), 20, "image").path.parent
    from ui.uploads import MB, folder_size

    assert sweep_uploads(root, quota_mb=folder_size(big) / MB) == [new], "past the quota, the oldest upload goes first"
    assert big.exists()


def test_video_upload_is_capped_before_decoding(tmp_path):
    """A tiny file that declares 8192×8192 frames is refused from its header, with the number a person reads, and
    nothing is left on disk. (Before: it passed the check, and decoding it took gigabytes in the web server.)"""
    import av

    from ui.uploads import UploadError, save_upload

    bomb = tmp_path / "bomb.mp4"
    with av.open(str(bomb), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8192, 8192, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((8192, 8192, 3), np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(UploadError, match=r"8192×8192 is past the 8\.3-megapixel limit"):
        save_upload("bomb.mp4", bomb.read_bytes(), (".mp4",), 200, "video", folder=tmp_path / "up")
    assert not any((tmp_path / "up").iterdir())


def placed(at: AppTest) -> list[tuple[object, list]]:
    """Every element of the page with the chain of blocks above it (outermost first)."""
    found = []

    def walk(node, blocks):
        for child in getattr(node, "children", {}).values():
            if getattr(child, "children", None) is not None:
                walk(child, blocks + [child])
            else:
                found.append((child, blocks))

    walk(at.main, [])
    return found


def column_of(blocks: list):
    return [b for b in blocks if type(b).__name__ == "Column"][-1]


@pytest.mark.parametrize("recipe", ["image", "video"])
def test_compare_shows_the_media_at_half_the_page_and_a_prompt_beside_generate(dirs, monkeypatch, recipe):
    """The image or clip fills a column half the page wide, not 280 px at the side (over 400 px on a 1400 px page),
    and a prompt box sits on Generate's row, its placeholder saying what empty means."""
    import streamlit

    runs, _ = dirs
    make_run(runs, f"{recipe}-20260101-100000", "finished", recipe=recipe, adapter=True)
    widths = []
    for name in ("image", "video"):
        original = getattr(streamlit, name)

        def record(*args, _original=original, **kwargs):
            widths.append(kwargs.get("width", "content" if _original is streamlit.image else "stretch"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(streamlit, name, record)
    at = app(recipe)
    assert not at.exception and not at.error, texts(at.error)
    media_type = "image" if recipe == "image" else "video"
    ((media, blocks),) = [(e, b) for e, b in placed(at) if e.type == media_type]
    assert widths == ["stretch"], f"st.{media_type} widths asked for: {widths}"
    weight = column_of(blocks).weight
    assert weight >= 0.5, f"the {media_type} sits in a column {weight:.2f} of the page wide"
    if recipe == "image":
        assert media.captions[0].startswith("synthetic/")

    ((prompt, prompt_blocks),) = [(e, b) for e, b in placed(at) if e.key == f"{recipe}:prompt"]
    assert prompt.label == "Prompt (optional)" and "recipe's own prompt" in prompt.placeholder
    ((generate, generate_blocks),) = [(e, b) for e, b in placed(at) if e.type == "button" and e.label == "Generate"]
    prompt_column, generate_column = column_of(prompt_blocks), column_of(generate_blocks)
    assert prompt_column is not generate_column, "the prompt box and Generate are in columns of their own"
    assert prompt_blocks[-2] is generate_blocks[-2], "the prompt box and Generate share a row"
    assert prompt_column.weight > generate_column.weight


@pytest.mark.parametrize("recipe", ["image", "video"])
def test_a_prompt_replaces_the_question_for_both_answers(dirs, monkeypatch, recipe):
    """Generate with a prompt asks both models that prompt in place of the recipe's own question (the system message
    and the media stay); with the box empty they get the recipe's prompt. No model is loaded: the answers are faked
    at `stream_answer`, which receives the messages both sides are generated from."""
    runs, _ = dirs
    make_run(runs, f"{recipe}-20260101-100000", "finished", recipe=recipe, adapter=True)
    asked = []

    def fake_answer(loaded, messages, use_adapter):
        user = messages[-1]["content"]
        asked.append(("tuned" if use_adapter else "base", [p["text"] for p in user if p["type"] == "text"],
                      [p["type"] for p in user if p["type"] != "text"]))
        yield "<SOLUTION>Yes</SOLUTION>" if recipe == "image" else '{"scene": "road"}'

    monkeypatch.setattr("ui.compare.take_compare_lease", lambda run_id: None)
    monkeypatch.setattr("ui.compare.load_compare_model", lambda *args: object())
    monkeypatch.setattr("ui.compare.stream_answer", fake_answer)
    at = app(recipe)
    at.text_input(key=f"{recipe}:prompt").set_value("  Is there smoke in the picture?  ").run()
    [b for b in at.button if b.label == "Generate"][0].click().run()
    assert not at.exception and not at.error, texts(at.error)
    media = "image" if recipe == "image" else "video"
    assert asked == [("base", ["Is there smoke in the picture?"], [media]),
                     ("tuned", ["Is there smoke in the picture?"], [media])], asked

    asked.clear()
    at.text_input(key=f"{recipe}:prompt").set_value("").run()
    [b for b in at.button if b.label == "Generate"][0].click().run()
    assert not at.exception and not at.error, texts(at.error)
    from core.runs import RunDir
    from ui.compare_models import default_prompt, run_config
    from ui.recipes import RECIPES

    cfg = run_config(RECIPES[recipe], RunDir(runs / f"{recipe}-20260101-100000"))
    own = default_prompt(RECIPES[recipe], cfg)
    assert own and own != "Is there smoke in the picture?"
    assert [(side, text) for side, text, _ in asked] == [("base", [own]), ("tuned", [own])], asked


def hold_the_gpu(runs, run_id: str, seconds: float):
    """A process that takes the GPU lease for `run_id` as a trainer does, holds it `seconds`, then exits."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from core.gpu_lease import acquire_gpu_lock; "
        f"acquire_gpu_lock({run_id!r}, root={str(runs)!r}, kind='training'); print('held', flush=True); time.sleep({seconds})"
    )], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_generate_right_after_a_run_finished_waits_for_its_process_to_let_go(tmp_path, monkeypatch):
    """The trainer writes `finished` and then releases the GPU as its process exits: a Generate in between
    waits for it instead of calling the finished run busy."""
    import time

    from core.gpu_lease import release_gpu_lock
    from core.runs import RunDir
    from ui.compare_models import take_compare_lease

    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path))
    run = RunDir(tmp_path / "just-finished")
    run.path.mkdir()
    run.write_status("finished")
    holder = hold_the_gpu(tmp_path, "just-finished", 3)
    try:
        started = time.monotonic()
        take_compare_lease("other-run")
        assert time.monotonic() - started >= 1.0  # it waited for the finished run's process, then took the GPU
    finally:
        release_gpu_lock(tmp_path, kind="compare")
        holder.wait(timeout=30)


def test_generate_while_a_run_trains_says_busy_at_once(tmp_path, monkeypatch):
    import time

    from core.gpu_lease import GpuBusy
    from core.runs import RunDir
    from ui.compare_models import take_compare_lease

    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path))
    run = RunDir(tmp_path / "training-now")
    run.path.mkdir()
    run.write_status("running", pid=1)
    holder = hold_the_gpu(tmp_path, "training-now", 20)
    try:
        started = time.monotonic()
        with pytest.raises(GpuBusy, match=r"GPU busy: run training-now .*is training"):
            take_compare_lease("other-run")
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
