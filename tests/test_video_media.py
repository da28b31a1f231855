"""Video frame reading: index sampling, seeking vs decoding everything, codecs, rotation and broken files."""

from __future__ import annotations

import av
import numpy as np
import pytest

from conftest import write_audio_only
from core.media.errors import MediaError
from core.media.video import (
    available_video_backends,
    probe_video,
    read_frames,
    read_frames_all,
    sample_frame_indices,
    sample_times,
    write_clip,
)


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


@pytest.mark.parametrize("total", [1, 2, 7, 8, 9, 100, 1001])
@pytest.mark.parametrize("count", [1, 3, 8, 16])
def test_sample_frame_indices_stay_in_range_and_in_order(total, count):
    indices = sample_frame_indices(total, count)
    assert len(indices) == count
    assert all(0 <= index < total for index in indices)
    assert indices == sorted(indices)
    if total >= count:
        assert len(set(indices)) == count  # a long enough window never repeats a frame


def test_sample_frame_indices_window_and_errors():
    assert sample_frame_indices(100, 5, start_frame=50) == [55, 65, 75, 85, 95]
    assert sample_frame_indices(10, 4, start_frame=8, end_frame=50) == [8, 8, 9, 9]
    for bad in [dict(total_frames=0, num_frames=4), dict(total_frames=10, num_frames=0),
                dict(total_frames=10, num_frames=2, start_frame=10)]:
        with pytest.raises(ValueError):
            sample_frame_indices(**bad)


def test_sample_times_are_segment_centres():
    assert sample_times(1.0, 3.0, 4) == [1.25, 1.75, 2.25, 2.75]


# -------------------------------------------------------------------------------------------- reading


def test_probe_h264(clips):
    info = probe_video(clips["h264"])
    assert (info.num_frames, info.fps, info.width, info.height) == (90, 30.0, 64, 48)
    assert info.duration_s == pytest.approx(3.0)
    assert (info.codec, info.rotation_deg, info.backend) == ("h264", 0, "pyav")


@pytest.mark.parametrize("window", [(None, None), (0.5, 2.0), (2.9, None), (0.0, 0.1)])
@pytest.mark.parametrize("count", [1, 8, 32])
def test_seek_read_matches_decode_all(clips, window, count):
    start, end = window
    seeked = read_frames(clips["h264"], count, start, end, backend="pyav")
    decoded = read_frames_all(clips["h264"], count, start, end)
    assert seeked.backend == "pyav"
    assert seeked.timestamps_s == decoded.timestamps_s
    assert seeked.array.shape == (count, 48, 64, 3) and seeked.array.dtype == np.uint8
    assert np.abs(seeked.array.astype(int) - decoded.array.astype(int)).max() <= 2


def test_seek_read_picks_the_frames_sample_frame_indices_names(clips):
    """For a constant-frame-rate clip, time sampling and index sampling agree frame for frame."""
    with av.open(str(clips["h264"])) as container:
        every_frame = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    frames = read_frames(clips["h264"], 8, start_s=1.0, end_s=2.5)
    indices = sample_frame_indices(90, 8, start_frame=30, end_frame=75)
    assert [round(t * 30) for t in frames.timestamps_s] == indices
    assert np.abs(frames.array.astype(int) - every_frame[indices].astype(int)).mean() < 1.0


def test_auto_backend_is_reported(clips):
    frames = read_frames(clips["h264"], 4)
    assert frames.backend == available_video_backends()[0]
    assert "pyav" in available_video_backends() and "opencv" in available_video_backends()


def test_opencv_backend_agrees_with_pyav(clips):
    opencv = read_frames(clips["h264"], 8, 0.5, 2.5, backend="opencv")
    pyav = read_frames(clips["h264"], 8, 0.5, 2.5, backend="pyav")
    assert opencv.backend == "opencv"
    assert np.allclose(opencv.timestamps_s, pyav.timestamps_s, atol=1e-3)
    assert np.abs(opencv.array.astype(int) - pyav.array.astype(int)).mean() < 3


def test_backend_choice_errors(clips):
    with pytest.raises(ValueError, match="unknown video backend"):
        read_frames(clips["h264"], 4, backend="gstreamer")
    if "decord" not in available_video_backends():
        with pytest.raises(ValueError, match="not installed"):
            read_frames(clips["h264"], 4, backend="decord")


def test_vp9_webm_is_readable(clips):
    info = probe_video(clips["vp9"])
    assert info.codec == "vp9" and info.duration_s == pytest.approx(3.0, abs=0.05)
    seeked = read_frames(clips["vp9"], 8, backend="pyav")
    decoded = read_frames_all(clips["vp9"], 8)
    assert seeked.array.shape == (8, 48, 64, 3)
    assert np.abs(seeked.array.astype(int) - decoded.array.astype(int)).max() <= 2
    # The encoded frames still look like the source ones (lossy codec: compare loosely).
    expected = clips["frames"][[round(t * 30) for t in seeked.timestamps_s]]
    assert np.abs(seeked.array.astype(int) - expected.astype(int)).mean() < 8


def test_variable_frame_rate_samples_by_time(tmp_path):
    rng = np.random.default_rng(0)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.12, 59))]).round(3)
    path = write_clip(tmp_path / "vfr.mp4", moving_square_frames(60), fps=30, timestamps_s=list(times))
    frames = read_frames(path, 8)
    targets = sample_times(0.0, frames.info.duration_s, 8)
    on_screen = [times[np.searchsorted(times, target, side="right") - 1] for target in targets]
    assert np.allclose(frames.timestamps_s, on_screen, atol=1e-3)
    assert frames.timestamps_s == read_frames_all(path, 8).timestamps_s


def test_rotation_metadata_makes_frames_upright(tmp_path):
    source = np.zeros((4, 32, 64, 3), dtype=np.uint8)
    source[:, :, :16] = 255  # a white band on the left of the stored frame
    path = write_clip(tmp_path / "rotated.mp4", source, fps=10, rotation_deg=90)
    info = probe_video(path)
    assert (info.rotation_deg, info.width, info.height) == (90, 32, 64)
    upright = np.rot90(source[0], k=1)  # stored 90 degrees counter-clockwise: the band ends up at the bottom
    for backend in ("pyav", "opencv"):
        frames = read_frames(path, 2, backend=backend)
        assert frames.array.shape == (2, 64, 32, 3), backend
        assert np.abs(frames.array[0].astype(int) - upright.astype(int)).mean() < 10, backend
    assert read_frames_all(path, 2).array.shape == (2, 64, 32, 3)


def test_max_side_limits_the_longer_side(clips):
    frames = read_frames(clips["h264"], 3, max_side=32)
    assert frames.array.shape == (3, 24, 32, 3)
    assert read_frames(clips["h264"], 3, max_side=500).array.shape == (3, 48, 64, 3)


def test_one_frame_clip_repeats_it(tmp_path):
    path = write_clip(tmp_path / "one.mp4", moving_square_frames(1), fps=10)
    assert probe_video(path).num_frames == 1
    for backend in ("pyav", "opencv"):
        frames = read_frames(path, 8, backend=backend)
        assert frames.array.shape == (8, 48, 64, 3)
        assert all(np.array_equal(frame, frames.array[0]) for frame in frames.array)


# -------------------------------------------------------------------------------------------- failures


def test_window_past_end_names_file_window_and_duration(clips):
    with pytest.raises(MediaError) as caught:
        read_frames(clips["h264"], 8, start_s=2.0, end_s=5.0)
    message = str(caught.value)
    assert "three_seconds.mp4" in message and "2.000s" in message and "5.000s" in message and "3.000s" in message
    assert caught.value.kind == "window_past_end"
    with pytest.raises(MediaError, match="past the end"):
        read_frames(clips["h264"], 8, start_s=3.5)
    # Annotations round times: an end a hair past the last frame is clamped, not rejected.
    assert read_frames(clips["h264"], 2, start_s=2.0, end_s=3.02).array.shape[0] == 2


def test_bad_window(clips):
    with pytest.raises(MediaError, match="invalid window") as caught:
        read_frames(clips["h264"], 8, start_s=2.0, end_s=1.0)
    assert caught.value.kind == "bad_window"


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda path: path.write_bytes(b""), "empty_file"),
        (lambda path: path.write_text("this is not a video\n"), "not_a_video"),
        (write_audio_only, "no_video_stream"),
    ],
    ids=["zero-byte", "text-file", "audio-only"],
)
def test_broken_files_raise_media_error(tmp_path, make, kind):
    path = tmp_path / "broken.mp4"
    make(path)
    for call in (lambda: probe_video(path), lambda: read_frames(path, 8)):
        with pytest.raises(MediaError) as caught:
            call()
        assert caught.value.kind == kind
        assert "broken.mp4" in str(caught.value)


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
