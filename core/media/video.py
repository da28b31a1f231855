"""Video frames for training, evaluation and inference: one function, so all three see the same pixels.

`read_frames` samples N frames uniformly from a time window by seeking: it jumps to the keyframe before
each target time and decodes forward to it, instead of decoding the whole clip. Backends, best first:
decord (when installed), PyAV, OpenCV; `backend="auto"` picks the first that works and the result says
which one did. `read_frames_all` is the decode-every-frame baseline that benchmarks compare against.

Conventions:
    * Times are seconds from the first frame of the clip (PyAV works in presentation timestamps, so
      variable-frame-rate clips sample by time, not by frame count).
    * The window is half-open, [start_s, end_s). Target times are the centres of N equal segments of it,
      and each target takes the frame on screen at that time (the last frame whose timestamp <= target).
    * Frames come back upright: the container's display-matrix rotation is applied.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from core.media.errors import MediaError

BACKENDS = ("decord", "pyav", "opencv")
_BACKEND_MODULES = {"decord": "decord", "pyav": "av", "opencv": "cv2"}
# A window may end this far past the last frame (seconds, or one frame period if longer): annotators and
# CSVs round times, and a label ending "at" the last frame should not be rejected.
_END_TOLERANCE_S = 0.05
# Without a keyframe index, seek only when the next target is this far ahead; nearer targets are usually
# in the same group of pictures, where decoding forward is cheaper than seeking back to its keyframe.
_SEEK_GAP_WITHOUT_INDEX_S = 2.0


class VideoError(MediaError):
    """A `MediaError` that also says what kind of problem it is, so dataset checks can count them.

    Attributes:
        kind: One of empty_file, missing_file, not_a_video, no_video_stream, no_frames, bad_window,
            window_past_end, decode_failed.
    """

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learned about a file.

    Attributes:
        path: The file probed.
        num_frames: Frame count from the container, or duration x fps when the container does not store it.
        fps: Average frame rate.
        duration_s: Duration of the video stream in seconds.
        width: Width of the upright (displayed) frame.
        height: Height of the upright (displayed) frame.
        rotation_deg: Counter-clockwise rotation applied to decoded frames to make them upright (0/90/180/270).
        codec: Decoder name, e.g. "h264" or "vp9".
        backend: Library that probed the file ("pyav" or "opencv").
    """

    path: str
    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    rotation_deg: int
    codec: str
    backend: str


@dataclass(frozen=True)
class Frames:
    """Frames sampled from a clip.

    Attributes:
        array: uint8 RGB frames, shape [N, H, W, 3], upright.
        timestamps_s: Timestamp of each returned frame (seconds from the clip start); repeats when the
            window holds fewer than N frames.
        backend: Library that decoded the frames.
        info: The probe of the file.
    """

    array: np.ndarray
    timestamps_s: list[float]
    backend: str
    info: VideoInfo


def available_video_backends() -> list[str]:
    """Installed decoding libraries, best first (a subset of "decord", "pyav", "opencv")."""
    return [name for name in BACKENDS if importlib.util.find_spec(_BACKEND_MODULES[name]) is not None]


def sample_frame_indices(
    total_frames: int, num_frames: int, start_frame: int = 0, end_frame: int | None = None
) -> list[int]:
    """Spread `num_frames` indices uniformly over frames [start_frame, end_frame).

    Each index is the centre of one of `num_frames` equal segments of the window, so the first and last
    frames of a long window are not favoured. A window shorter than `num_frames` repeats indices; indices
    are always inside the window and the clip.

    Args:
        total_frames: Frames in the clip.
        num_frames: How many indices to return.
        start_frame: First frame of the window.
        end_frame: One past the last frame of the window; None means the end of the clip.

    Returns:
        `num_frames` non-decreasing indices.

    Raises:
        ValueError: The clip has no frames, num_frames < 1, or the window is empty or outside the clip.

    >>> sample_frame_indices(100, 4)
    [12, 37, 62, 87]
    >>> sample_frame_indices(3, 8)
    [0, 0, 0, 1, 1, 2, 2, 2]
    >>> sample_frame_indices(1, 3)
    [0, 0, 0]
    >>> sample_frame_indices(100, 2, start_frame=10, end_frame=20)
    [12, 17]
    """
    if total_frames < 1:
        raise ValueError(f"the clip has no frames (total_frames={total_frames})")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    end_frame = total_frames if end_frame is None else min(end_frame, total_frames)
    if not 0 <= start_frame < end_frame:
        raise ValueError(f"empty frame window [{start_frame}, {end_frame}) in a clip of {total_frames} frames")
    span = end_frame - start_frame
    return [min(start_frame + int((i + 0.5) * span / num_frames), end_frame - 1) for i in range(num_frames)]


def sample_times(start_s: float, end_s: float, num_frames: int) -> list[float]:
    """Centres of `num_frames` equal segments of [start_s, end_s): the times `read_frames` shows.

    >>> sample_times(0.0, 4.0, 4)
    [0.5, 1.5, 2.5, 3.5]
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    step = (end_s - start_s) / num_frames
    return [start_s + (i + 0.5) * step for i in range(num_frames)]


# ---------------------------------------------------------------------------------------------- probing


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: file not found", "missing_file")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file", "not_a_video")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)", "empty_file")


def _open_pyav(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoError(f"{path}: not a readable video file ({error})", "not_a_video") from error


def _rotation_from_degrees(degrees: float | None) -> int:
    """Round a display rotation to 0/90/180/270 counter-clockwise."""
    if not degrees:
        return 0
    return int(round(degrees / 90.0)) * 90 % 360


def _pyav_stream_facts(path: Path, container) -> tuple:
    """The video stream, its origin pts, fps, duration, frame count and the first decoded frame."""
    import av

    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams}) or ["no streams"]
        raise VideoError(f"{path}: no video stream (the file has {', '.join(kinds)})", "no_video_stream")
    stream = container.streams.video[0]
    time_base = stream.time_base
    origin = stream.start_time or 0
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration and time_base:
        duration_s = float(stream.duration * time_base)
    elif container.duration:
        duration_s = container.duration / av.time_base
    else:
        duration_s = 0.0
    try:
        first = next(container.decode(stream), None)
    except av.FFmpegError as error:
        raise VideoError(f"{path}: the video stream cannot be decoded ({error})", "decode_failed") from error
    if first is None:
        raise VideoError(f"{path}: the video stream has no frames", "no_frames")
    num_frames = stream.frames or (round(duration_s * fps) if duration_s and fps else 0)
    if not duration_s and num_frames and fps:
        duration_s = num_frames / fps
    if not duration_s and fps:
        # A single frame in a container that stores no duration: it is on screen for one frame period.
        duration_s, num_frames = 1.0 / fps, max(num_frames, 1)
    return stream, origin, fps, duration_s, max(num_frames, 1), first


def _probe_pyav(path: Path) -> VideoInfo:
    with _open_pyav(path) as container:
        stream, _, fps, duration_s, num_frames, first = _pyav_stream_facts(path, container)
        rotation = _rotation_from_degrees(getattr(first, "rotation", 0))
        width, height = first.width, first.height
        codec = stream.codec_context.name
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(str(path), num_frames, fps, duration_s, width, height, rotation, codec, "pyav")


def _probe_opencv(path: Path) -> VideoInfo:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open it as a video", "not_a_video")
        ok, frame = capture.read()
        if not ok:
            raise VideoError(f"{path}: no decodable video frames", "no_frames")
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        num_frames = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 1)
        # OpenCV reports the clockwise angle and rotates frames itself; report the counter-clockwise one.
        rotation = _rotation_from_degrees(-capture.get(cv2.CAP_PROP_ORIENTATION_META))
        codec_tag = int(capture.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((codec_tag >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") or "unknown"
    finally:
        capture.release()
    duration_s = num_frames / fps if fps else 0.0
    height, width = frame.shape[:2]
    return VideoInfo(str(path), num_frames, fps, duration_s, width, height, rotation, codec, "opencv")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's metadata and decode its first frame, so broken files fail here with a clear message.

    Args:
        path: The video file.

    Returns:
        A `VideoInfo`.

    Raises:
        VideoError: (a `MediaError`) for a missing or empty file, a file that is not a video, a file with
            no video stream (audio only), or a video stream without frames.
    """
    path = Path(path)
    _check_file(path)
    backends = [name for name in available_video_backends() if name in ("pyav", "opencv")]
    if not backends:
        raise MediaError(f"{path}: no video library installed (need PyAV or OpenCV)")
    return _probe_pyav(path) if backends[0] == "pyav" else _probe_opencv(path)


def resolve_window(info: VideoInfo, start_s: float | None, end_s: float | None) -> tuple[float, float]:
    """Check a time window against a probed clip and fill in its defaults.

    Args:
        info: The clip's probe.
        start_s: Window start in seconds; None means 0.
        end_s: Window end in seconds; None means the end of the clip. An end up to one frame period (at
            least 50 ms) past the clip's duration is clamped to it, since annotations round times.

    Returns:
        (start_s, end_s) with 0 <= start_s < end_s <= duration.

    Raises:
        VideoError: kind "bad_window" (negative, empty or NaN) or "window_past_end"; the message names
            the file, the window and the duration.
    """
    duration = info.duration_s
    start = 0.0 if start_s is None else float(start_s)
    end = duration if end_s is None else float(end_s)
    window = f"window [{start:.3f}s, {end:.3f}s)"
    if math.isnan(start) or math.isnan(end):
        raise VideoError(f"{info.path}: invalid {window}: times must be numbers", "bad_window")
    tolerance = max(_END_TOLERANCE_S, 1.0 / info.fps if info.fps else 0.0)
    if start >= duration or end > duration + tolerance:
        raise VideoError(
            f"{info.path}: {window} goes past the end of the video (duration {duration:.3f}s)", "window_past_end"
        )
    if start < 0 or end <= start:
        raise VideoError(f"{info.path}: invalid {window}: need 0 <= start < end", "bad_window")
    return start, min(end, duration)


# ------------------------------------------------------------------------------------------ conversion


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size with the longer side at most `max_side`, keeping the aspect ratio."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _finish(array: np.ndarray, rotation_deg: int, max_side: int | None) -> np.ndarray:
    """Resize (if asked) then rotate an RGB frame upright; the longer side is the same either way."""
    height, width = array.shape[:2]
    new_width, new_height = _scaled_size(width, height, max_side)
    if (new_width, new_height) != (width, height):
        import cv2

        array = cv2.resize(array, (new_width, new_height), interpolation=cv2.INTER_AREA)
    if rotation_deg:
        array = np.rot90(array, k=rotation_deg // 90)
    return np.ascontiguousarray(array)


def _pyav_to_rgb(frame, rotation_deg: int, max_side: int | None) -> np.ndarray:
    # swscale resizes during the colour conversion, which is cheaper than resizing the RGB array after.
    width, height = _scaled_size(frame.width, frame.height, max_side)
    array = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    return _finish(array, rotation_deg, None)


# ---------------------------------------------------------------------------------------------- readers


def _frame_time(frame, origin: int, time_base: Fraction) -> float:
    pts = frame.pts if frame.pts is not None else frame.dts
    return float((pts - origin) * time_base) if pts is not None else 0.0


def _keyframe_times(stream, origin: int) -> list[float]:
    """Keyframe times from the demuxer's index (empty when the container has none, e.g. some webm)."""
    try:
        entries = stream.index_entries
        times = [float((entry.timestamp - origin) * stream.time_base) for entry in entries if entry.is_keyframe]
    except (AttributeError, TypeError):
        return []
    return sorted(times) if len(times) > 1 else []


def _read_pyav(path: Path, info: VideoInfo, targets: Sequence[float], max_side: int | None):
    """Seek-and-decode reader: for each target, seek to the keyframe before it unless decoding forward
    from where the decoder already is would be cheaper (no keyframe between here and the target)."""
    import av

    with _open_pyav(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin, time_base = stream.start_time or 0, stream.time_base
        keyframes: list[float] | None = None
        decoded: Iterator | None = None
        current = pending = None  # last frame at or before the target / first frame after it
        chosen: list = []
        exhausted = False  # the decoder reached the end of the stream

        def seek_to(target: float) -> None:
            nonlocal decoded, current, pending, exhausted
            # Some demuxers index by decode time, so a seek can land on a keyframe just after the target;
            # back off further until the first decoded frame is at or before it.
            back_off = 0.0
            while True:
                seek_time = max(0.0, target - back_off)
                container.seek(origin + int(seek_time / time_base), stream=stream, backward=True)
                decoded = container.decode(stream)
                first = next(decoded, None)
                if first is None or _frame_time(first, origin, time_base) <= target or seek_time == 0.0:
                    current, pending, exhausted = None, first, first is None
                    return
                back_off = max(1.0, back_off * 2)

        for target in targets:
            current_time = None if current is None else _frame_time(current, origin, time_base)
            pending_time = None if pending is None else _frame_time(pending, origin, time_base)
            if decoded is None or (current_time is not None and target < current_time):
                seek_to(target)  # first target, or targets out of order
                if keyframes is None:
                    keyframes = _keyframe_times(stream, origin)  # some demuxers fill the index on first seek
            elif exhausted or (pending_time is not None and target < pending_time):
                pass  # the frame on screen at the target is already decoded
            else:
                position = pending_time if pending_time is not None else current_time
                if keyframes:
                    should_seek = any(position < keyframe <= target for keyframe in keyframes)
                else:
                    should_seek = position is None or target - position > _SEEK_GAP_WITHOUT_INDEX_S
                if should_seek:
                    seek_to(target)
            if pending is not None and _frame_time(pending, origin, time_base) <= target:
                current, pending = pending, None
            while pending is None and not exhausted:
                try:
                    frame = next(decoded, None)
                except av.FFmpegError as error:
                    raise VideoError(f"{path}: decoding failed near {target:.3f}s ({error})", "decode_failed")
                if frame is None:
                    exhausted = True
                    break
                if _frame_time(frame, origin, time_base) <= target:
                    current = frame
                else:
                    pending = frame
            chosen.append(current if current is not None else pending)
        if any(frame is None for frame in chosen):
            raise VideoError(f"{path}: no frame decoded for the requested times", "decode_failed")
        arrays: dict[int, np.ndarray] = {}
        for frame in chosen:
            if id(frame) not in arrays:
                arrays[id(frame)] = _pyav_to_rgb(frame, info.rotation_deg, max_side)
        return [arrays[id(frame)] for frame in chosen], [_frame_time(f, origin, time_base) for f in chosen]


def _read_opencv(path: Path, info: VideoInfo, targets: Sequence[float], max_side: int | None):
    """Frame-index reader (assumes a constant frame rate): seeks with CAP_PROP_POS_FRAMES, or grabs
    forward when the next index is close. OpenCV rotates frames upright itself."""
    import cv2

    fps = info.fps or 1.0
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open it as a video", "not_a_video")
    arrays: list[np.ndarray] = []
    times: list[float] = []
    position = 0  # index of the frame the next read() returns
    cache: dict[int, np.ndarray] = {}
    try:
        for target in targets:
            index = min(max(int(math.floor(target * fps + 1e-6)), 0), info.num_frames - 1)
            if index not in cache:
                gap = index - position
                if gap < 0 or gap > 2 * fps:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                else:
                    for _ in range(gap):
                        capture.grab()
                ok, frame = capture.read()
                if not ok:
                    raise VideoError(f"{path}: OpenCV could not decode frame {index}", "decode_failed")
                position = index + 1
                cache[index] = _finish(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 0, max_side)
            arrays.append(cache[index])
            times.append(index / fps)
    finally:
        capture.release()
    return arrays, times


def _read_decord(path: Path, info: VideoInfo, targets: Sequence[float], max_side: int | None):
    """decord reader: picks frames by their timestamps, then one `get_batch` call decodes them with seeks.
    decord ignores rotation metadata, so the probe's rotation is applied here."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    starts = starts - starts[0]
    indices = np.clip(np.searchsorted(starts, np.asarray(targets) + 1e-6, side="right") - 1, 0, len(reader) - 1)
    batch = reader.get_batch([int(i) for i in indices]).asnumpy()
    arrays = [_finish(frame, info.rotation_deg, max_side) for frame in batch]
    return arrays, [float(starts[i]) for i in indices]


_READERS: dict[str, Callable] = {"decord": _read_decord, "pyav": _read_pyav, "opencv": _read_opencv}


def read_frames(
    path: str | os.PathLike,
    num_frames: int,
    start_s: float | None = None,
    end_s: float | None = None,
    backend: str = "auto",
    max_side: int | None = None,
) -> Frames:
    """Sample `num_frames` upright RGB frames uniformly from [start_s, end_s) by seeking.

    Args:
        path: The video file.
        num_frames: Frames to return; a window with fewer frames repeats them.
        start_s: Window start in seconds from the clip start; None means 0.
        end_s: Window end in seconds; None means the end of the clip.
        backend: "auto" (decord, else PyAV, else OpenCV, falling through on a backend failure) or one name.
        max_side: Resize so the longer side is at most this many pixels; None keeps the size.

    Returns:
        `Frames` with the array [N, H, W, 3] uint8, the frame timestamps and the backend used.

    Raises:
        VideoError: (a `MediaError`) for unreadable files (see `probe_video`), an invalid window or one
            past the end of the clip (the message names file, window and duration), or decoding failures.
        ValueError: An unknown or uninstalled backend, or num_frames < 1.
    """
    path = Path(path)
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    installed = available_video_backends()
    if backend == "auto":
        candidates = installed
    elif backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
    elif backend not in installed:
        raise ValueError(f"video backend {backend!r} is not installed; installed: {', '.join(installed) or 'none'}")
    else:
        candidates = [backend]
    info = probe_video(path)
    start, end = resolve_window(info, start_s, end_s)
    targets = sample_times(start, end, num_frames)
    failures = []
    for name in candidates:
        try:
            arrays, times = _READERS[name](path, info, targets, max_side)
        except Exception as error:  # a backend that cannot decode this file: try the next one
            if backend != "auto":
                raise
            failures.append(f"{name}: {error}")
            continue
        return Frames(np.stack(arrays), times, name, info)
    raise VideoError(f"{path}: no backend could decode it ({'; '.join(failures)})", "decode_failed")


def read_frames_all(
    path: str | os.PathLike,
    num_frames: int,
    start_s: float | None = None,
    end_s: float | None = None,
    max_side: int | None = None,
) -> Frames:
    """Baseline for benchmarks and tests: decode every frame of the clip with PyAV, keep the sampled ones.

    Picks the same frames as `read_frames` (the frame on screen at each target time) without seeking.
    """
    import av

    path = Path(path)
    info = probe_video(path)
    start, end = resolve_window(info, start_s, end_s)
    targets = sample_times(start, end, num_frames)
    chosen: list = [None] * num_frames
    with _open_pyav(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin, time_base = stream.start_time or 0, stream.time_base
        previous, next_target = None, 0
        try:
            for frame in container.decode(stream):
                frame_time = _frame_time(frame, origin, time_base)
                # Targets before this frame's time were showing the previous frame (or this one, if first).
                while next_target < num_frames and targets[next_target] < frame_time:
                    chosen[next_target] = previous if previous is not None else frame
                    next_target += 1
                previous = frame
        except av.FFmpegError as error:
            raise VideoError(f"{path}: decoding failed ({error})", "decode_failed") from error
        for index in range(next_target, num_frames):
            chosen[index] = previous
        times = [_frame_time(frame, origin, time_base) for frame in chosen]
        arrays = [_pyav_to_rgb(frame, info.rotation_deg, max_side) for frame in chosen]
    return Frames(np.stack(arrays), times, "pyav", info)


# ---------------------------------------------------------------------------------------------- writing


def write_clip(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    codec: str = "libx264",
    *,
    rotation_deg: int = 0,
    keyframe_interval: int | None = None,
    timestamps_s: Sequence[float] | None = None,
    crf: int = 18,
) -> Path:
    """Encode RGB frames into a clip with PyAV (for tests and synthetic data).

    Args:
        path: Output file; the container follows the suffix (.mp4, .webm, .mkv, .avi).
        frames: uint8 [N, H, W, 3] RGB; H and W must be even for yuv420p codecs.
        fps: Frame rate (also the nominal rate when `timestamps_s` is given).
        codec: PyAV encoder, e.g. "libx264", "libvpx-vp9", "mpeg4".
        rotation_deg: Display-matrix rotation to store (counter-clockwise, as players and PyAV read it).
        keyframe_interval: Frames between keyframes; None keeps the encoder default.
        timestamps_s: Per-frame presentation times for a variable-frame-rate clip; None means i / fps.
        crf: Quality for libx264 / libvpx-vp9 (lower is better).

    Returns:
        The path written.
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    options = {}
    if codec == "libx264":
        options = {"crf": str(crf), "preset": "ultrafast"}
    elif codec == "libvpx-vp9":
        options = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if keyframe_interval:
            stream.codec_context.gop_size = keyframe_interval
        if rotation_deg:
            stream.set_display_rotation(rotation_deg)
        time_base = Fraction(1, 1000) if timestamps_s is not None else 1 / rate
        stream.codec_context.time_base = time_base
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            seconds = timestamps_s[index] if timestamps_s is not None else index / rate
            frame.pts, frame.time_base = round(seconds / time_base), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
