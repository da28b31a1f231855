"""Video frame reading: time sampling, seeking vs decoding everything, codecs, rotation and broken files."""

from __future__ import annotations

import gc
import types

import av
import numpy as np
import pytest

import core.media.video as video
from conftest import write_audio_only
from core.media.errors import MediaError
from core.media.video import (
    BACKENDS,
    available_video_backends,
    backend_unavailable_reason,
    probe_video,
    read_frames,
    read_frames_all,
    sample_times,
    write_clip,
)

# decord2 reports timestamps as float32 seconds; the others agree with PyAV's to the last bit or nearly.
TIMESTAMP_TOLERANCE_S = 1e-5


def installed(backend: str) -> bool:
    """An optional backend's tests run where it loads; elsewhere they skip with the reason it does not
    (`make test` lists skip reasons), e.g. torchcodec on a machine without the system FFmpeg libraries."""
    return video.backend_unavailable_reason(backend) is None


def each_backend(exclude: tuple[str, ...] = ()):
    return [
        pytest.param(
            name, marks=pytest.mark.skipif(not installed(name), reason=str(video.backend_unavailable_reason(name)))
        )
        for name in BACKENDS
        if name not in exclude
    ]


def assert_same_frames(frames, baseline, backend: str) -> None:
    """The seeking backend returned exactly the baseline's frames: same timestamps, same pixels."""
    assert frames.backend == backend
    assert np.allclose(frames.timestamps_s, baseline.timestamps_s, rtol=0, atol=TIMESTAMP_TOLERANCE_S), (
        backend, frames.timestamps_s, baseline.timestamps_s)
    assert frames.array.shape == baseline.array.shape and frames.array.dtype == np.uint8, backend
    difference = np.abs(frames.array.astype(int) - baseline.array.astype(int))
    assert difference.max() == 0, f"{backend}: pixels differ by up to {difference.max()} from PyAV decoding everything"


def moving_square_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames that differ from each other: a brightness ramp plus a square moving one pixel per frame."""
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    for index in range(num_frames):
        frames[index] = (index * 5) % 200
        left = index % (width - 10)
        frames[index, 10:20, left : left + 10] = 255
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    frames = moving_square_frames(90)
    return {
        "frames": frames,
        "h264": write_clip(folder / "three_seconds.mp4", frames, fps=30, keyframe_interval=12),
        "vp9": write_clip(folder / "three_seconds.webm", frames, fps=30, codec="libvpx-vp9"),
        "folder": folder,
    }


# ------------------------------------------------------------------------------------------- sampling


def test_sample_times_are_segment_centres():
    assert sample_times(1.0, 3.0, 4) == [1.25, 1.75, 2.25, 2.75]


# -------------------------------------------------------------------------------------------- reading


def test_probe_h264(clips):
    info = probe_video(clips["h264"])
    assert (info.num_frames, info.fps, info.width, info.height) == (90, 30.0, 64, 48)
    assert info.duration_s == pytest.approx(3.0)
    assert (info.codec, info.rotation_deg, info.backend) == ("h264", 0, "pyav")


@pytest.mark.parametrize("backend", each_backend())
@pytest.mark.parametrize("window", [(None, None), (0.5, 2.0), (2.9, None), (0.0, 0.1), (2.0, 3.02)])
@pytest.mark.parametrize("count", [1, 8, 32])
def test_every_backend_returns_the_frames_decoding_everything_picks(clips, backend, window, count):
    start, end = window  # (2.0, 3.02): an end a hair past the last frame, clamped to the duration
    seeked = read_frames(clips["h264"], count, start, end, backend=backend)
    assert_same_frames(seeked, read_frames_all(clips["h264"], count, start, end), backend)


@pytest.mark.parametrize("backend", each_backend())
def test_max_side_is_the_same_resize_for_every_backend(clips, backend):
    frames = read_frames(clips["h264"], 5, 0.3, 2.7, backend=backend, max_side=40)
    assert frames.array.shape == (5, 30, 40, 3)
    assert_same_frames(frames, read_frames_all(clips["h264"], 5, 0.3, 2.7, max_side=40), backend)
    assert read_frames(clips["h264"], 3, backend=backend, max_side=500).array.shape == (3, 48, 64, 3)


def test_seek_read_picks_the_frame_on_screen_at_each_segment_centre(clips):
    """For a constant-frame-rate clip, time sampling picks frame floor(centre x fps) of each segment."""
    with av.open(str(clips["h264"])) as container:
        every_frame = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    frames = read_frames(clips["h264"], 8, start_s=1.0, end_s=2.5)
    indices = [30 + int((i + 0.5) * 45 / 8) for i in range(8)]  # frames 30..74 in 8 equal segments
    assert [round(t * 30) for t in frames.timestamps_s] == indices
    assert np.array_equal(frames.array, every_frame[indices])


def test_auto_takes_the_measured_order(clips, monkeypatch):
    assert read_frames(clips["h264"], 4).backend == available_video_backends()[0]
    assert available_video_backends() == [name for name in BACKENDS if backend_unavailable_reason(name) is None]
    assert "pyav" in available_video_backends() and "opencv" in available_video_backends()
    if "torchcodec" in available_video_backends():
        monkeypatch.setattr(video, "_cuda_available", lambda: True)
        assert available_video_backends()[0] == "torchcodec"  # NVDEC first on a CUDA machine


@pytest.mark.parametrize("backend", each_backend(exclude=("pyav",)))
def test_auto_falls_through_when_a_backend_cannot_decode_the_file(clips, monkeypatch, backend):
    def broken(path, info, targets):
        raise RuntimeError("this decoder cannot read it")

    monkeypatch.setattr(video, "_READERS", {**video._READERS, "pyav": broken})
    order = available_video_backends()
    frames = read_frames(clips["h264"], 4)
    assert frames.backend == next(name for name in order if name != "pyav")
    with pytest.raises(RuntimeError, match="cannot read it"):
        read_frames(clips["h264"], 4, backend="pyav")  # an explicit choice is not second-guessed


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_auto_hands_a_rotated_clip_on_past_a_backend_that_refuses_it(tmp_path, monkeypatch, rotation):
    if not installed("decord"):
        pytest.skip(str(video.backend_unavailable_reason("decord")))
    path, upright = rotated_clip(tmp_path, rotation)
    monkeypatch.setattr(video, "available_video_backends", lambda: ["decord", "pyav"])
    frames = read_frames(path, 2)
    assert frames.backend == "pyav" and frames.array.shape == (2, *upright.shape)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda frame: np.concatenate([frame, frame], axis=-1),  # six channels, as decord2 gave rotated clips
        lambda frame: frame.transpose(1, 0, 2),  # the stored size of a rotated frame, not the upright one
        lambda frame: frame.astype(np.float32),
    ],
    ids=["six-channels", "transposed", "float"],
)
def test_a_backend_returning_malformed_frames_has_failed(clips, monkeypatch, wrong):
    """Every backend's output is checked once in read_frames: `auto` hands a malformed result on to the next
    backend, and a backend asked for by name raises a VideoError naming it and the file."""
    good = video._READERS["pyav"]

    def malformed(path, info, targets):
        arrays, times = good(path, info, targets)
        return [wrong(array) for array in arrays], times

    monkeypatch.setattr(video, "_READERS", {**video._READERS, "pyav": malformed})
    monkeypatch.setattr(video, "available_video_backends", lambda: ["pyav", "opencv"])
    assert read_frames(clips["h264"], 4).backend == "opencv"
    with pytest.raises(MediaError) as caught:
        read_frames(clips["h264"], 4, backend="pyav")
    message = str(caught.value)
    assert caught.value.kind == "decode_failed" and "pyav backend" in message and "three_seconds.mp4" in message
    assert "expected 4 of uint8 (48, 64, 3)" in message


def test_a_backend_returning_too_few_frames_has_failed(clips, monkeypatch):
    good = video._READERS["pyav"]
    monkeypatch.setattr(video, "_READERS", {**video._READERS, "pyav": lambda *a: [x[:-1] for x in good(*a)]})
    with pytest.raises(MediaError, match=r"pyav backend returned 3 frame\(s\)"):
        read_frames(clips["h264"], 4, backend="pyav")


def test_torchcodec_decodes_on_cpu_when_cuda_decoding_fails(clips, monkeypatch):
    if not installed("torchcodec"):
        pytest.skip("torchcodec is not installed")
    devices = []
    decode = video._torchcodec_frames

    def nvdec_refuses(path, targets, device):
        devices.append(device)
        if device == "cuda":
            raise RuntimeError("NVDEC does not support this stream")
        return decode(path, targets, device)

    monkeypatch.setattr(video, "_cuda_available", lambda: True)
    monkeypatch.setattr(video, "_torchcodec_frames", nvdec_refuses)
    frames = read_frames(clips["h264"], 4, backend="torchcodec")
    assert devices == ["cuda", "cpu"]
    assert_same_frames(frames, read_frames_all(clips["h264"], 4), "torchcodec")


def test_backend_choice_errors(clips):
    with pytest.raises(ValueError, match="unknown video backend"):
        read_frames(clips["h264"], 4, backend="gstreamer")


def test_a_backend_that_does_not_load_is_not_offered(clips, monkeypatch):
    """torchcodec imports without FFmpeg but says so; a library whose shared objects fail raises on import."""
    monkeypatch.setitem(__import__("sys").modules, "torchcodec", types.SimpleNamespace(ffmpeg_major_version=None))
    reason = backend_unavailable_reason.__wrapped__("torchcodec")
    assert "could not load FFmpeg" in reason and "apt-get install ffmpeg" in reason and "\n" not in reason

    def fails_to_load(name):
        raise OSError("libavutil.so.59: cannot open shared object file\nmore traceback")

    monkeypatch.setattr(video.importlib, "import_module", fails_to_load)
    reason = backend_unavailable_reason.__wrapped__("torchcodec")
    assert reason.startswith("torchcodec does not import (OSError: libavutil.so.59") and "\n" not in reason
    monkeypatch.setattr(video.importlib, "import_module", lambda name: types.SimpleNamespace(__version__="0.6.0"))
    assert "decord2" in backend_unavailable_reason.__wrapped__("decord")  # the original ignores rotation

    monkeypatch.setattr(video, "backend_unavailable_reason", lambda name: reason if name == "torchcodec" else None)
    assert "torchcodec" not in available_video_backends()
    with pytest.raises(ValueError, match="'torchcodec' cannot be used: torchcodec does not import") as caught:
        read_frames(clips["h264"], 4, backend="torchcodec")
    assert "apt-get install ffmpeg" in str(caught.value)


@pytest.mark.parametrize("backend", each_backend())
def test_vp9_webm_is_readable(clips, backend):
    info = probe_video(clips["vp9"])
    assert info.codec == "vp9" and info.duration_s == pytest.approx(3.0, abs=0.05)
    seeked = read_frames(clips["vp9"], 8, backend=backend)
    assert_same_frames(seeked, read_frames_all(clips["vp9"], 8), backend)
    # The encoded frames still look like the source ones (lossy codec: compare loosely).
    expected = clips["frames"][[round(t * 30) for t in seeked.timestamps_s]]
    assert np.abs(seeked.array.astype(int) - expected.astype(int)).mean() < 8


# OpenCV picks frames by index (frame rate x time), so it cannot sample a variable-frame-rate clip by time.
@pytest.mark.parametrize("backend", each_backend(exclude=("opencv",)))
def test_variable_frame_rate_samples_by_time(tmp_path, backend):
    rng = np.random.default_rng(0)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.12, 59))]).round(3)
    path = write_clip(tmp_path / "vfr.mp4", moving_square_frames(60), fps=30, timestamps_s=list(times))
    frames = read_frames(path, 8, backend=backend)
    targets = sample_times(0.0, frames.info.duration_s, 8)
    on_screen = [times[np.searchsorted(times, target, side="right") - 1] for target in targets]
    assert np.allclose(frames.timestamps_s, on_screen, atol=1e-3)
    assert_same_frames(frames, read_frames_all(path, 8), backend)


def rotated_clip(tmp_path, rotation: int):
    """A 64x32 clip stored with `rotation` degrees of display rotation, and its first frame as players show it."""
    source = np.zeros((4, 32, 64, 3), dtype=np.uint8)
    source[:, :, :16] = 255  # a white band on the left of the stored frame
    source[:, :8, :, 0] = 255  # and a red one along its top, so every rotation looks different
    path = write_clip(tmp_path / f"rotated{rotation}.mp4", source, fps=10, rotation_deg=rotation)
    return path, np.rot90(source[0], k=rotation // 90)  # stored counter-clockwise, as players show it


# decord2 refuses rotated clips (see _read_decord): named, it says so in one line; `auto` hands them on.
ROTATION_REFUSED = {"decord"}


@pytest.mark.parametrize("backend", each_backend())
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_makes_frames_upright_once(tmp_path, backend, rotation):
    path, upright = rotated_clip(tmp_path, rotation)
    info = probe_video(path)
    assert (info.rotation_deg, info.height, info.width) == (rotation, *upright.shape[:2])
    if backend in ROTATION_REFUSED:
        with pytest.raises(MediaError) as caught:
            read_frames(path, 2, backend=backend)
        message = str(caught.value)
        assert caught.value.kind == "backend_refused" and "\n" not in message
        assert path.name in message and f"rotated {rotation} degrees" in message and "backend auto" in message
        return
    frames = read_frames(path, 2, backend=backend)
    assert frames.array.shape == (2, *upright.shape), backend
    assert np.abs(frames.array[0].astype(int) - upright.astype(int)).mean() < 10, backend
    assert_same_frames(frames, read_frames_all(path, 2), backend)


@pytest.mark.parametrize("backend", each_backend())
def test_one_frame_clip_repeats_it(tmp_path, backend):
    path = write_clip(tmp_path / "one.mp4", moving_square_frames(1), fps=10)
    assert probe_video(path).num_frames == 1
    frames = read_frames(path, 8, backend=backend)
    assert frames.array.shape == (8, 48, 64, 3)
    assert all(np.array_equal(frame, frames.array[0]) for frame in frames.array)
    assert_same_frames(frames, read_frames_all(path, 8), backend)


# -------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("backend", ["auto", *each_backend()])
def test_window_past_end_names_file_window_and_duration(clips, backend):
    with pytest.raises(MediaError) as caught:
        read_frames(clips["h264"], 8, start_s=2.0, end_s=5.0, backend=backend)
    message = str(caught.value)
    assert "three_seconds.mp4" in message and "2.000s" in message and "5.000s" in message and "3.000s" in message
    assert caught.value.kind == "window_past_end"
    with pytest.raises(MediaError, match="past the end"):
        read_frames(clips["h264"], 8, start_s=3.5, backend=backend)
    # Annotations round times: an end a hair past the last frame is clamped, not rejected.
    assert read_frames(clips["h264"], 2, start_s=2.0, end_s=3.02, backend=backend).array.shape[0] == 2


def test_bad_window(clips):
    with pytest.raises(MediaError, match="invalid window") as caught:
        read_frames(clips["h264"], 8, start_s=2.0, end_s=1.0)
    assert caught.value.kind == "bad_window"


@pytest.mark.parametrize("backend", ["auto", *each_backend()])
@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda path: path.write_bytes(b""), "empty_file"),
        (lambda path: path.write_text("this is not a video\n"), "not_a_video"),
        (write_audio_only, "no_video_stream"),
    ],
    ids=["zero-byte", "text-file", "audio-only"],
)
def test_broken_files_raise_media_error(tmp_path, make, kind, backend):
    path = tmp_path / "broken.mp4"
    make(path)
    for call in (lambda: probe_video(path), lambda: read_frames(path, 8, backend=backend)):
        with pytest.raises(MediaError) as caught:
            call()
        assert caught.value.kind == kind
        assert "broken.mp4" in str(caught.value)


@pytest.mark.parametrize("backend", ["auto", *each_backend()])
def test_truncated_file_fails_with_a_media_error(clips, tmp_path, backend):
    """A clip cut short (a copy that stopped half way): every backend's failure is a MediaError or a decode."""
    data = clips["h264"].read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    try:
        frames = read_frames(path, 4, backend=backend)
    except MediaError as error:
        assert "truncated.mp4" in str(error)
    else:  # the half that is there decodes: the frames are still the ones decoding everything picks
        assert_same_frames(frames, read_frames_all(path, 4), frames.backend)


def test_video_stream_without_frames(tmp_path):
    path = tmp_path / "empty_stream.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(MediaError, match="no frames") as caught:
        probe_video(path)
    assert caught.value.kind == "no_frames"


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        read_frames(tmp_path / "nope.mp4", 8)


from torch.utils.data import DataLoader, Dataset  # noqa: E402


class _AsksForNvdec(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return video._cuda_available()


def test_loader_workers_never_try_nvdec(monkeypatch):
    """A worker forked from a process that started CUDA cannot start it again: it must decode on the CPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert video._cuda_available() is True  # the training process itself would use NVDEC
    # After hundreds of tests this process holds garbage whose finalizers take locks other threads held at the
    # fork: collected in the child, one deadlocked the worker (seen once, in torch's seeding). Collect it here and
    # keep the child's collector off what it inherits, as the gc docs advise before a fork.
    gc.collect()
    gc.freeze()
    try:
        in_worker = next(iter(DataLoader(_AsksForNvdec(), batch_size=None, num_workers=1)))
    finally:
        gc.unfreeze()
    assert in_worker is False


def test_a_file_that_is_not_a_video_gives_the_plain_reason_not_an_errno_number(tmp_path):
    """PyAV's errors read "[Errno 1094995529] Invalid data found when processing input: '<path>'"."""
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"garbage that no demuxer recognises " * 8)
    for call in (lambda: probe_video(path), lambda: read_frames(path, 4, backend="pyav")):
        with pytest.raises(MediaError) as caught:
            call()
        assert str(caught.value) == f"{path}: not a readable video file (Invalid data found when processing input)"


def test_plain_reason_drops_errno_numbers_and_the_repeated_file_name():
    from core.media.errors import plain_reason

    assert plain_reason(PermissionError(13, "Permission denied", "/data/x.mp4")) == "Permission denied"
    assert plain_reason(av.error.InvalidDataError(1094995529, "Invalid data found when processing input", "/x")) == (
        "Invalid data found when processing input"
    )
    assert plain_reason(ValueError("[Errno 5] Input/output error")) == "Input/output error"
    assert plain_reason(ValueError("bad header")) == "bad header"
