"""Video frames for training, evaluation and inference: one function, so all three see the same pixels.

`read_frames` samples N frames uniformly from a time window by seeking: it jumps to the keyframe before
each target time and decodes forward to it, instead of decoding the whole clip. The decoding is done by a
kept library (the backend); this module adds what they do not: one sampling convention, checks with
messages that name the file, window and duration, and one resize, so every backend returns the same pixels.
`backend="auto"` takes the first usable backend of `BACKENDS` (fastest first, as measured by
bench/frames.py), falls through to the next one when a backend cannot decode a file, and the result says
which one did. `read_frames_all` is the decode-every-frame baseline that benchmarks and tests compare against.

Conventions:
    * Times are seconds from the start of the video stream, read from presentation timestamps, so
      variable-frame-rate clips sample by time, not by frame count.
    * The window is half-open, [start_s, end_s). Target times are the centres of N equal segments of it,
      and each target takes the frame on screen at that time (the last frame whose timestamp <= target).
    * Frames come back upright: the container's display-matrix rotation is applied once (torchcodec,
      and OpenCV apply it themselves; PyAV frames are rotated here; decord refuses rotated clips).
    * Frames are decoded to RGB at their stored size, then `max_side` is applied by one shared resize, so
      backends agree pixel for pixel on CPU (tests/test_video_media.py checks it).
"""

from __future__ import annotations

import bisect
import functools
import importlib
import itertools
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from core.media.errors import MediaError, plain_reason
from core.processes import usable_cpus

# The order `auto` tries, fastest first on CPU, from bench/frames.py (median s for read_frames(path, 16,
# max_side=448) on its 40 s 720p H.264 clips, keyframe every 30 / 250 frames; 2-core VM shared with other jobs;
# decoding every frame took 1.48 / 0.86 s):
#   pyav 0.51 / 0.77, torchcodec 0.57 / 0.78, decord2 0.81 / 0.97, opencv 0.93 / 2.24.
# PyAV leads because it can ask for slice threads only (see _PYAV_THREAD_TYPE); on CUDA torchcodec goes first
# (see available_video_backends).
BACKENDS = ("pyav", "torchcodec", "decord", "opencv")
_BACKEND_MODULES = {"torchcodec": "torchcodec", "decord": "decord", "pyav": "av", "opencv": "cv2"}
_INSTALL_HINTS = {
    "torchcodec": "torchcodec loads the system FFmpeg (4 to 9) shared libraries: install them "
    "(`apt-get install ffmpeg`) and a torchcodec release built for this torch",
    "decord": "install decord2 (`uv sync --extra decord`); the original decord 0.x ignores rotation metadata",
    "pyav": "install PyAV (`pip install av`)",
    "opencv": "install OpenCV (`pip install opencv-python-headless`)",
}
# Threads, measured on the 30-frame-keyframe bench clip (median s of 5 interleaved runs, same box). With more
# than one thread FFmpeg picks frame threading, whose pipeline refills after every seek:
#   torchcodec num_ffmpeg_threads 1 / 2 / 0 (all): 0.60 / 0.64 / 0.76
#   decord2 num_threads 1 / 2 / 0 (all): 0.73 / 0.80 / 0.75
# PyAV can ask for slice threads alone, which split each frame and cost nothing after a seek (the clip has two
# slices, as x264 writes on a 2-core machine; a one-slice clip decodes on one thread either way):
#   PyAV thread_type SLICE / NONE / AUTO (frame): 0.41 / 0.59 / 0.60; decoding every frame 1.09 / 1.48 / 1.58
_TORCHCODEC_THREADS = 1
_DECORD_THREADS = 1
_PYAV_THREAD_TYPE = "SLICE"


def _pyav_thread_count() -> int:
    """Slice threads for one PyAV decode: all cores (0, FFmpeg's auto) in a lone process; in a DataLoader worker
    its share of the cores, since the workers already decode clips side by side and more threads than cores
    only add switching."""
    worker = _loader_worker()
    if worker is None:
        return 0
    return max(1, usable_cpus() // worker.num_workers)


def _loader_worker():
    """The DataLoader worker this process is (torch's `get_worker_info()`), or None. Never imports torch:
    without it loaded there is no DataLoader, so no worker."""
    loader = sys.modules.get("torch.utils.data")
    return loader.get_worker_info() if loader is not None else None


def _pyav_threads(stream) -> None:
    stream.thread_type = _PYAV_THREAD_TYPE
    stream.thread_count = _pyav_thread_count()


# A window may end this far past the last frame (seconds, or one frame period if longer): annotators and
# CSVs round times, and a label ending "at" the last frame should not be rejected.
_END_TOLERANCE_S = 0.05

_log = logging.getLogger(__name__)


class VideoError(MediaError):
    """A `MediaError` that also says what kind of problem it is, so dataset checks can count them.

    Attributes:
        kind: One of empty_file, missing_file, not_a_video, no_video_stream, no_frames, bad_window,
            window_past_end, decode_failed, backend_refused (a named backend that does not take this clip).
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


@functools.cache
def backend_unavailable_reason(name: str) -> str | None:
    """Why a backend cannot be used here (one line, with what to install), or None when it can.

    Imports the library once per process: an installed package can still fail to load (torchcodec without
    the system FFmpeg libraries, or built for another torch), and such a backend must not be offered.
    """
    if name not in _BACKEND_MODULES:
        raise ValueError(f"unknown video backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(_BACKEND_MODULES[name])
    except Exception as error:  # ImportError, or OSError/RuntimeError from a shared library that does not load
        first_line = (str(error).strip().splitlines() or [""])[0]
        return f"{name} does not import ({type(error).__name__}: {first_line}); {_INSTALL_HINTS[name]}"
    if name == "torchcodec" and getattr(module, "ffmpeg_major_version", None) is None:
        # torchcodec imports without FFmpeg (its image decoders do not need it) and says so in this attribute.
        return f"torchcodec is installed but could not load FFmpeg's libraries; {_INSTALL_HINTS[name]}"
    if name == "decord" and int(str(getattr(module, "__version__", "0")).split(".")[0]) < 1:
        return f"decord {module.__version__} is the original package; {_INSTALL_HINTS[name]}"
    return None


def available_video_backends() -> list[str]:
    """Backends that load in this process, in the order `backend="auto"` tries them: `BACKENDS`, except that
    torchcodec goes first when CUDA is there, since it then decodes on the GPU's NVDEC and leaves the CPU cores
    to the data loader (not yet measured against PyAV on a GPU machine: bench/frames.py there decides)."""
    usable = [name for name in BACKENDS if backend_unavailable_reason(name) is None]
    if "torchcodec" in usable and _cuda_available():
        usable.remove("torchcodec")
        usable.insert(0, "torchcodec")
    return usable


def _cuda_available() -> bool:
    """CUDA can decode in this process: not in a DataLoader worker, which is forked from a training process that
    already started CUDA and so cannot start it again (each file would first fail on NVDEC, then decode on the
    CPU); the workers decode on the CPU, in `BACKENDS` order, while the main process keeps the GPU."""
    import torch  # already imported by torchcodec, the only caller's reason to ask

    if _loader_worker() is not None or torch.cuda._is_in_bad_fork():
        return False
    return torch.cuda.is_available()


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
        raise VideoError(f"{path}: not a readable video file ({plain_reason(error)})", "not_a_video") from error


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
    _pyav_threads(stream)
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
        raise VideoError(f"{path}: the video stream cannot be decoded ({plain_reason(error)})", "decode_failed") from error
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


@dataclass(frozen=True)
class VideoHeader:
    """What a video's container says about its first video stream, read without decoding a frame."""

    width: int
    height: int
    num_frames: int
    duration_s: float


def read_video_header(path: str | os.PathLike) -> VideoHeader:
    """The frame size, frame count and duration that the container declares, before any frame is decoded, so an
    upload can be capped before a decoder allocates its frames (an 8192x8192 H.264 file of 200 KB takes gigabytes
    to decode). Values the container leaves out read 0.

    Raises:
        VideoError: the file cannot be opened as a video, or has no video stream.
    """
    import av

    path = Path(path)
    _check_file(path)
    with _open_pyav(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream", "no_video_stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration and stream.time_base:
            duration_s = float(stream.duration * stream.time_base)
        else:
            duration_s = container.duration / av.time_base if container.duration else 0.0
        num_frames = stream.frames or (round(duration_s * fps) if fps else 0)
        return VideoHeader(stream.codec_context.width, stream.codec_context.height, int(num_frames), duration_s)


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
    if backend_unavailable_reason("pyav") is None:
        return _probe_pyav(path)
    if backend_unavailable_reason("opencv") is None:
        return _probe_opencv(path)
    raise MediaError(f"{path}: no video library installed (need PyAV or OpenCV)")


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


def _upright_and_resized(frames: Sequence[np.ndarray], rotation_deg: int, max_side: int | None) -> np.ndarray:
    """Stack RGB frames, rotate them upright by `rotation_deg` (counter-clockwise), then resize.

    Every backend ends here, so `max_side` is applied by one function and backends agree pixel for pixel. The
    resize is torch's antialiased bilinear (the triangle filter PIL and the HF image processors use): 1.5 ms a
    720p frame against 5-7 ms for OpenCV's INTER_AREA, measured on the bench box, a quarter of a 16-frame read.
    """
    array = np.ascontiguousarray(np.rot90(np.stack(frames), k=rotation_deg // 90, axes=(1, 2)))
    height, width = array.shape[1:3]
    new_width, new_height = _scaled_size(width, height, max_side)
    if (new_width, new_height) == (width, height):
        return array
    import torch

    batch = torch.from_numpy(array).permute(0, 3, 1, 2)  # NCHW view of NHWC memory: torch's fast uint8 path
    resized = torch.nn.functional.interpolate(batch, size=(new_height, new_width), mode="bilinear", antialias=True)
    return resized.permute(0, 2, 3, 1).contiguous().numpy()


# ---------------------------------------------------------------------------------------------- readers
# Each reader returns (RGB frames at the stored size, upright unless noted, timestamps in seconds).


def _frame_time(frame, origin: int, time_base: Fraction) -> float:
    pts = frame.pts if frame.pts is not None else frame.dts
    return float((pts - origin) * time_base) if pts is not None else 0.0


def _frames_on_screen(path: Path, decoded: Iterator, targets: Sequence[float], origin: int, time_base, stop: bool):
    """The PyAV frame on screen at each sorted target: the last decoded frame at or before it (the first
    frame, for a target before it). With `stop`, decoding ends at the first frame past the last target."""
    import av

    chosen: list = []
    previous = None
    try:
        for frame in decoded:
            frame_time = _frame_time(frame, origin, time_base)
            while len(chosen) < len(targets) and targets[len(chosen)] < frame_time:
                chosen.append(previous if previous is not None else frame)
            previous = frame
            if stop and len(chosen) == len(targets):
                break
    except av.FFmpegError as error:
        raise VideoError(f"{path}: decoding failed ({plain_reason(error)})", "decode_failed") from error
    if previous is None:
        raise VideoError(f"{path}: no frame decoded for the requested times", "decode_failed")
    return chosen + [previous] * (len(targets) - len(chosen))


def _pyav_rgb(frames: Sequence) -> list[np.ndarray]:
    """RGB arrays of PyAV frames, each distinct frame converted once. One reformatter serves them all: a
    frame's own `to_ndarray` builds a new swscale context per frame (4-24 ms each, measured, against 1.4 ms)."""
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    arrays = {id(frame): reformatter.reformat(frame, format="rgb24").to_ndarray() for frame in frames}
    return [arrays[id(frame)] for frame in frames]


def _pyav_keyframe_stamps(container, stream, origin: int) -> list[int]:
    """Keyframe timestamps (stream time base): from the demuxer's index when it has one, else from the packets
    (no decoding)."""
    stamps = [entry.timestamp for entry in stream.index_entries if entry.is_keyframe]
    if len(stamps) < 2:  # e.g. webm without cues: read the packets, then rewind
        stamps = [packet.pts for packet in container.demux(stream) if packet.is_keyframe and packet.pts is not None]
        container.seek(origin, stream=stream, backward=True)
    return sorted(stamps) or [origin]


def _read_pyav(path: Path, info: VideoInfo, targets: Sequence[float]):
    """Exact seeking with PyAV (which bundles its own FFmpeg, so it is always there): targets are grouped by
    the keyframe before them, and each group is one seek to that keyframe and a decode up to its last target,
    the fewest frames an exact reader can decode. Frames come back as stored (not rotated)."""
    with _open_pyav(path) as container:
        stream = container.streams.video[0]
        _pyav_threads(stream)
        origin, time_base = stream.start_time or 0, stream.time_base
        stamps = _pyav_keyframe_stamps(container, stream, origin)
        keyframe_times = [float((stamp - origin) * time_base) for stamp in stamps]
        groups: dict[int, list[float]] = {}  # keyframe index -> the targets it leads to
        for target in targets:
            groups.setdefault(max(bisect.bisect_right(keyframe_times, target) - 1, 0), []).append(target)
        chosen: list = []
        for keyframe, group in groups.items():
            container.seek(stamps[keyframe], stream=stream, backward=True)
            decoded = container.decode(stream)
            first = next(decoded, None)
            if first is not None and _frame_time(first, origin, time_base) > group[0] and keyframe > 0:
                # The demuxer landed past the keyframe it was asked for: decode this group from the start.
                container.seek(origin, stream=stream, backward=True)
                decoded = container.decode(stream)
                first = next(decoded, None)
            chosen += _frames_on_screen(path, itertools.chain([first] if first else [], decoded), group, origin,
                                        time_base, stop=True)
        return _pyav_rgb(chosen), [_frame_time(frame, origin, time_base) for frame in chosen]


def _torchcodec_frames(path: Path, targets: Sequence[float], device: str):
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(
        str(path), seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=_TORCHCODEC_THREADS, device=device
    )
    metadata = decoder.metadata
    # torchcodec works in absolute stream seconds; ours start at the stream's start time, as PyAV's do.
    origin = metadata.begin_stream_seconds_from_header or 0.0
    # It rejects times outside [first frame, end of last frame); the window was checked against the probe's
    # duration, which can differ from torchcodec's by a frame, so a target past the end takes the last frame.
    last_instant = math.nextafter(metadata.end_stream_seconds, -math.inf)
    seconds = [min(max(origin + target, metadata.begin_stream_seconds), last_instant) for target in targets]
    batch = decoder.get_frames_played_at(seconds=seconds)
    return list(batch.data.cpu().numpy()), [float(pts) - origin for pts in batch.pts_seconds]


def _read_torchcodec(path: Path, info: VideoInfo, targets: Sequence[float]):
    """torchcodec: exact seeking from its own frame index, on the GPU's decoder (NVDEC) when CUDA is there,
    else on CPU. It applies the rotation metadata itself."""
    if _cuda_available():
        try:
            return _torchcodec_frames(path, targets, "cuda")
        except Exception as error:  # NVDEC lacks this codec, profile or size, or CUDA cannot start here
            _log.debug("%s: CUDA decoding failed, decoding on CPU (%s)", path, error)
    return _torchcodec_frames(path, targets, "cpu")


def _read_decord(path: Path, info: VideoInfo, targets: Sequence[float]):
    """decord2: frames picked by their timestamps, then one `get_batch` call seeks and decodes them.

    decord2 means to apply the rotation metadata itself, but it breaks on some machines: on an AVX-512 x86
    server decord2 3.4's bundled FFmpeg returned frames of six (90, 270 degrees) or four (180 degrees) channels,
    and `get_batch` failed with "from_size == to_size", while the same wheel was right elsewhere. It cannot be
    told to ignore the rotation, so rotated clips are refused here, the same on every machine: under `auto` the
    next backend reads them."""
    import decord

    if info.rotation_deg:
        raise VideoError(
            f"{path}: the decord backend does not read clips rotated {info.rotation_deg} degrees (decord2 returns "
            "frames of the wrong shape for them on some CPUs); use backend auto, pyav, torchcodec or opencv",
            "backend_refused",
        )
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=_DECORD_THREADS)
        starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
        starts = starts - starts[0]
        indices = np.clip(np.searchsorted(starts, np.asarray(targets) + 1e-6, side="right") - 1, 0, len(reader) - 1)
        batch = reader.get_batch([int(i) for i in indices]).asnumpy()
    except decord.DECORDError as error:  # its message ends in a C++ stack trace: keep the first line
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise VideoError(f"{path}: the decord backend could not decode it ({first_line})", "decode_failed") from error
    return list(batch), [float(starts[i]) for i in indices]


def _read_opencv(path: Path, info: VideoInfo, targets: Sequence[float]):
    """OpenCV, by frame index (so it assumes a constant frame rate): seeks with CAP_PROP_POS_FRAMES, or grabs
    forward when the next index is close. OpenCV applies the rotation metadata itself."""
    import cv2

    fps = info.fps or 1.0
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open it as a video", "not_a_video")
    arrays: list[np.ndarray] = []
    times: list[float] = []
    position = 0  # index of the frame the next read() returns
    cache: dict[int, tuple[np.ndarray, float]] = {}
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
                # The frame's own timestamp, so the times agree with the other backends' (webm rounds to ms).
                cache[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            arrays.append(cache[index][0])
            times.append(cache[index][1])
    finally:
        capture.release()
    return arrays, times


_READERS: dict[str, Callable] = {
    "torchcodec": _read_torchcodec,
    "decord": _read_decord,
    "pyav": _read_pyav,
    "opencv": _read_opencv,
}
# Backends that return frames as stored, so the probe's rotation is applied to them here.
_ROTATED_HERE = {"pyav"}


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
        backend: "auto" (the first usable of `BACKENDS`, falling through to the next when one cannot decode
            the file) or one backend's name.
        max_side: Resize so the longer side is at most this many pixels; None keeps the size.

    Returns:
        `Frames` with the array [N, H, W, 3] uint8, the frame timestamps and the backend used.

    Raises:
        VideoError: (a `MediaError`) for unreadable files (see `probe_video`), an invalid window or one
            past the end of the clip (the message names file, window and duration), or decoding failures.
        ValueError: An unknown or unusable backend (the message says why and what to install), or
            num_frames < 1.
    """
    path = Path(path)
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if backend == "auto":
        candidates = available_video_backends()
    else:
        reason = backend_unavailable_reason(backend)
        if reason:
            raise ValueError(f"video backend {backend!r} cannot be used: {reason}")
        candidates = [backend]
    info = probe_video(path)
    start, end = resolve_window(info, start_s, end_s)
    targets = sample_times(start, end, num_frames)
    failures = []
    for name in candidates:
        try:
            arrays, times = _READERS[name](path, info, targets)
            rotation = info.rotation_deg if name in _ROTATED_HERE else 0
            _check_backend_frames(path, info, name, arrays, rotation, len(targets))
        except Exception as error:  # a backend that cannot decode this file: try the next one
            if backend != "auto":
                raise
            failures.append(f"{name}: {plain_reason(error)}")
            continue
        return Frames(_upright_and_resized(arrays, rotation, max_side), times, name, info)
    raise VideoError(f"{path}: no backend could decode it ({'; '.join(failures)})", "decode_failed")


def _check_backend_frames(
    path: Path, info: VideoInfo, name: str, arrays: Sequence[np.ndarray], rotation_deg: int, expected: int
) -> None:
    """Refuse a backend's frames unless they are `expected` uint8 RGB arrays of the clip's size (upright after
    `rotation_deg`): a library that returns six channels or a transposed frame has failed, and training on
    such pixels would be silent garbage. Raises VideoError naming the backend and the file."""
    upright = (info.height, info.width)
    stored = upright[::-1] if rotation_deg in (90, 270) else upright
    found = sorted({f"{np.asarray(a).dtype} {tuple(np.shape(a))}" for a in arrays})
    wrong = len(arrays) != expected or any(
        not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.shape != (*stored, 3) for a in arrays
    )
    if wrong:
        raise VideoError(
            f"{path}: the {name} backend returned {len(arrays)} frame(s) of {', '.join(found) or 'nothing'}, "
            f"expected {expected} of uint8 {(*stored, 3)} for this {info.width}x{info.height} clip",
            "decode_failed",
        )


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
    path = Path(path)
    info = probe_video(path)
    start, end = resolve_window(info, start_s, end_s)
    targets = sample_times(start, end, num_frames)
    with _open_pyav(path) as container:
        stream = container.streams.video[0]
        _pyav_threads(stream)
        origin, time_base = stream.start_time or 0, stream.time_base
        chosen = _frames_on_screen(path, container.decode(stream), targets, origin, time_base, stop=False)
        arrays, times = _pyav_rgb(chosen), [_frame_time(frame, origin, time_base) for frame in chosen]
    return Frames(_upright_and_resized(arrays, info.rotation_deg, max_side), times, "pyav", info)


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
