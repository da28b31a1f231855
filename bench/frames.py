"""Frame sampling: seeking to 16 frames (core.media.video.read_frames) against decoding every frame (read_frames_all).

    python bench/frames.py           # 40 s, 1280x720, 30 fps H.264 clip; CPU only
    python bench/frames.py --tiny    # 6 s, 320x180 clip, a few seconds

The clip is written once with `core.media.video.write_clip` (libx264) and cached in the temp folder. Its picture
is a detailed texture panning sideways, so every frame differs and the decoder does real work. Keyframes come
every `--gop` frames (default 30 = 1 s, what dashcams and phones typically write); a second clip with the
encoder's default spacing (250 frames, --gop-default) shows how much the gain depends on it.

Each row times `read_frames(path, 16, backend=<b>, max_side=448)`, the call training and inference make, for every
usable backend (torchcodec, PyAV, decord2, OpenCV; torchcodec decodes on the GPU when CUDA is there), against
`read_frames_all` (PyAV decoding every frame and keeping the same 16) on the same clip. Times are the median of
`--repeats` runs after one warm-up run (the file is in the page cache for all of them); the paths take turns within
each run, so a machine that gets busier slows all of them alike. Each row checks its frames against that baseline:
the same timestamps (to a millisecond) and the largest pixel difference (0: identical).

Two bounds say how close a row is to what any exact seeking reader can reach. An exact sampler must decode, in every
group of pictures it touches, from the keyframe up to its last target:

* `bound` (the keyframe bound) counts frames: frames in the clip / that minimum;
* `bound (time)` weighs each frame by its measured decode time (PyAV, one packet at a time, the faster of two
  passes): keyframes cost far more than the frames predicted from them, and an exact sampler decodes a keyframe
  for every target, so this bound is lower, and it is the one a reader can actually reach.

`of bound` and `of time bound` are the row's speed-up divided by each.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import common

NAME = "frames"

COLUMNS = (
    ("clip", "clip"),
    ("backend", "seek backend"),
    ("status", "status"),
    ("seek_s", "seek s"),
    ("decode_all_s", "decode-all s"),
    ("speedup", "speedup"),
    ("frames_decoded_all", "frames (all)"),
    ("frames_decoded_min_exact", "min frames (seek)"),
    ("speedup_bound_frames", "bound"),
    ("speedup_over_bound", "of bound"),
    ("speedup_bound_decode_time", "bound (time)"),
    ("speedup_over_time_bound", "of time bound"),
    ("same_frames", "same frames"),
    ("max_pixel_diff", "max px diff"),
)


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__)
    parser.add_argument("--frames", type=int, default=16, help="frames to sample (default: %(default)s)")
    parser.add_argument("--max-side", type=int, default=448, help="frame size the recipe asks for (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default: 2 tiny, 5 full)")
    parser.add_argument("--gop", type=int, default=30, help="keyframe interval of the main clip in frames (default: %(default)s)")
    parser.add_argument("--gop-default", type=int, default=250, help="keyframe interval of the second clip; 0 skips it (default: libx264's 250)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "vlm-bench-frames")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.tiny else 5)
    if args.tiny:
        args.seconds, args.width, args.height, args.fps = 6.0, 320, 180, 30
    else:
        args.seconds, args.width, args.height, args.fps = 40.0, 1280, 720, 30
    return args


def panning_frames(width: int, height: int, count: int, seed: int, shift: int = 4) -> np.ndarray:
    """[count, height, width, 3] uint8 frames of a textured scene panning `shift` px per frame, without copying.

    One wide texture is built and each frame is a strided view into it, so a 1200-frame 720p clip needs ~12 MB,
    not 3 GB. The texture mixes smooth blotches, edges and grain so the encoder has detail to code.
    """
    from numpy.lib.stride_tricks import as_strided
    from PIL import Image

    rng = np.random.default_rng(seed)
    wide = width + shift * count
    coarse = Image.fromarray(rng.integers(0, 256, (height // 24 + 2, wide // 24 + 2, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((wide, height), Image.Resampling.BICUBIC), dtype=np.float32)
    medium = Image.fromarray(rng.integers(0, 256, (height // 4, wide // 4), dtype=np.uint8))
    detail = np.asarray(medium.resize((wide, height), Image.Resampling.BILINEAR), dtype=np.float32)[..., None]
    grain = rng.normal(0.0, 6.0, (height, wide, 1)).astype(np.float32)
    base = np.clip(0.6 * smooth + 0.4 * detail + grain, 0, 255).astype(np.uint8)
    base[height * 2 // 3 :: 37] = 255  # thin horizontal lines: sharp edges, like lane markings
    base = np.ascontiguousarray(base)
    return as_strided(base, shape=(count, height, width, 3), strides=(shift * 3, base.strides[0], 3, 1), writeable=False)


def cached_clip(args, gop: int) -> Path:
    """The benchmark clip for this size and keyframe interval, generated with core.media.video.write_clip once."""
    from core.media.video import write_clip

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    name = f"pan-{args.width}x{args.height}-{args.fps}fps-{args.seconds:g}s-gop{gop}-seed{args.seed}.mp4"
    path = args.cache_dir / name
    if not path.exists():
        count = int(round(args.seconds * args.fps))
        print(f"writing {path} ({count} frames)", flush=True)
        partial = path.with_suffix(f".{os.getpid()}.partial.mp4")  # two benchmarks may write the same clip at once
        write_clip(partial, panning_frames(args.width, args.height, count, args.seed), args.fps, keyframe_interval=gop)
        partial.replace(path)
    return path


def keyframe_indices(path: Path) -> list[int]:
    """Frame indices of the keyframes, from the demuxer's packets (no decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size and p.pts is not None]
    packets.sort(key=lambda p: p.pts)
    return [index for index, packet in enumerate(packets) if packet.is_keyframe]


def decode_seconds_per_frame(path: Path) -> list[float]:
    """Decode time of each frame in presentation order: PyAV, one thread, one packet at a time; the faster of two
    passes, so a moment of load on a shared machine does not count."""
    import av

    passes = []
    for _ in range(2):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            timed = []
            for packet in container.demux(stream):
                if not packet.size or packet.pts is None:
                    continue
                start = time.perf_counter()
                packet.decode()
                timed.append((packet.pts, time.perf_counter() - start))
        passes.append([seconds for _, seconds in sorted(timed)])
    return [min(pair) for pair in zip(*passes)]


def frames_an_exact_sampler_decodes(keyframes: list[int], targets: list[int]) -> list[int]:
    """Frames an exact sampler must decode at least: in each group of pictures it touches, from the keyframe
    up to the last target in it (no B-frames, so every earlier frame of the group is a reference).

    >>> len(frames_an_exact_sampler_decodes([0, 30, 60], [10, 20, 45]))
    37
    """
    import bisect

    last_in_group: dict[int, int] = {}
    for target in targets:
        keyframe = keyframes[bisect.bisect_right(keyframes, target) - 1]
        last_in_group[keyframe] = max(last_in_group.get(keyframe, keyframe), target)
    return [index for keyframe, last in last_in_group.items() for index in range(keyframe, last + 1)]


def same_timestamps(seek, everything) -> bool:
    """The same frames were picked: timestamps agree to a millisecond (decord2 reports float32 seconds)."""
    return len(seek.timestamps_s) == len(everything.timestamps_s) and all(
        abs(a - b) < 1e-3 for a, b in zip(seek.timestamps_s, everything.timestamps_s)
    )


def max_pixel_difference(seek, everything) -> int | None:
    """Largest absolute difference of any pixel channel between the two paths (0: identical); None if shapes differ."""
    if seek.array.shape != everything.array.shape:
        return None
    return int(np.abs(seek.array.astype(np.int16) - everything.array.astype(np.int16)).max())


def measure_clip(args, label: str, path: Path) -> list[dict[str, Any]]:
    """Time decode-all and every backend's seek sampler, interleaved run by run so load changes hit all alike."""
    from core.media.video import (
        BACKENDS,
        available_video_backends,
        backend_unavailable_reason,
        probe_video,
        read_frames,
        read_frames_all,
    )

    info = probe_video(path)
    installed = available_video_backends()
    calls = {"all": lambda: read_frames_all(path, args.frames, max_side=args.max_side)}
    failures: dict[str, str] = {}
    results: dict[str, Any] = {"all": calls["all"]()}  # warm-up: imports, codec set-up, page cache
    for backend in installed:
        call = (lambda b: lambda: read_frames(path, args.frames, backend=b, max_side=args.max_side))(backend)
        try:
            results[backend] = call()
            calls[backend] = call
        except Exception as error:  # a backend that cannot read the clip is a finding
            failures[backend] = f"failed: {type(error).__name__}: {error}"[:300]
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    decode_all_s = statistics.median(times["all"])
    everything = results["all"]
    keyframes = keyframe_indices(path)
    fps = info.fps or args.fps
    target_frames = [int(round(t * fps)) for t in everything.timestamps_s]
    needed = frames_an_exact_sampler_decodes(keyframes, target_frames)
    fewest = len(needed)
    frame_seconds = decode_seconds_per_frame(path)
    time_bound = sum(frame_seconds) / sum(frame_seconds[index] for index in needed)
    rows = []
    for backend in BACKENDS:
        base = {
            "clip": label,
            "backend": backend,
            "decode_all_s": decode_all_s,
            "decode_all_s_each": times["all"],
            "frames_decoded_all": info.num_frames,
            "keyframes": len(keyframes),
            "frames_decoded_min_exact": fewest,
            "speedup_bound_frames": info.num_frames / fewest,
            "speedup_bound_decode_time": time_bound,
            "decode_s_all_frames_one_thread": sum(frame_seconds),
            "decode_s_min_exact_one_thread": sum(frame_seconds[index] for index in needed),
        }
        if backend not in installed:
            rows.append({**base, "status": f"skipped: {backend_unavailable_reason(backend)}"})
            continue
        if backend in failures:
            rows.append({**base, "status": failures[backend]})
            continue
        seek_s = statistics.median(times[backend])
        seek = results[backend]
        speedup = decode_all_s / seek_s
        rows.append(
            {
                **base,
                "status": "ok",
                "seek_s": seek_s,
                "seek_s_each": times[backend],
                "speedup": speedup,
                "speedup_over_bound": speedup / base["speedup_bound_frames"],
                "speedup_over_time_bound": speedup / time_bound,
                "same_frames": same_timestamps(seek, everything),
                "max_pixel_diff": max_pixel_difference(seek, everything),
                "timestamps_s": [round(t, 3) for t in seek.timestamps_s],
            }
        )
    auto = read_frames(path, args.frames, max_side=args.max_side)
    for row in rows:
        row["auto_picks"] = auto.backend
    return rows


def rotation_parity(args) -> list[dict[str, Any]]:
    """Each backend on a small clip stored with each display rotation, against the decode-all baseline: the same
    upright frames ("ok"), a refusal with its one-line reason ("refused: ..."), or a finding ("failed: ...")."""
    from core.media.errors import MediaError
    from core.media.video import BACKENDS, available_video_backends, read_frames, read_frames_all, write_clip

    folder = args.cache_dir / f"rotated-{os.getpid()}"
    rows = []
    for rotation in (90, 180, 270):
        path = write_clip(folder / f"rotated{rotation}.mp4", panning_frames(96, 64, 12, args.seed), 10,
                          rotation_deg=rotation)
        everything = read_frames_all(path, 4)
        for backend in BACKENDS:
            row: dict[str, Any] = {"rotation_deg": rotation, "backend": backend}
            if backend not in available_video_backends():
                rows.append({**row, "status": "skipped: not usable here"})
                continue
            try:
                seek = read_frames(path, 4, backend=backend)
            except MediaError as error:
                kind = "refused" if getattr(error, "kind", "") == "backend_refused" else "failed"
                rows.append({**row, "status": f"{kind}: {error}"[:300]})
                continue
            same = same_timestamps(seek, everything) and max_pixel_difference(seek, everything) == 0
            rows.append({**row, "status": "ok" if same else "failed: frames differ from the baseline",
                         "shape": list(seek.array.shape), "max_pixel_diff": max_pixel_difference(seek, everything)})
        path.unlink()
    folder.rmdir()
    return rows


def decoder_versions() -> dict[str, Any]:
    """Versions of the decoding libraries and the FFmpeg each one runs on (bench/common.py does not list them all)."""
    found: dict[str, Any] = {name: common.package_version(name) for name in ("torchcodec", "decord2", "av")}
    try:
        import torchcodec

        found["torchcodec_ffmpeg_major"] = torchcodec.ffmpeg_major_version
    except Exception as error:  # torchcodec not importable here: the row says why
        found["torchcodec_ffmpeg_major"] = f"unavailable ({type(error).__name__})"
    import av

    found["av_ffmpeg_libavcodec"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    found["cuda"] = common.has_cuda()
    return found


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    common.quiet_libraries()
    print(common.describe_env(), flush=True)
    from core.media.video import available_video_backends, probe_video

    clips = [("main", args.gop)]
    if args.gop_default and args.gop_default != args.gop:
        clips.append(("encoder-default-gop", args.gop_default))
    rows: list[dict[str, Any]] = []
    clip_facts = {}
    for _label, gop in clips:
        path = cached_clip(args, gop)
        info = probe_video(path)
        name = f"{args.width}x{args.height} {args.fps}fps {args.seconds:g}s gop{gop}"
        clip_facts[name] = {
            "path": str(path),
            "frames": info.num_frames,
            "duration_s": info.duration_s,
            "keyframe_interval": gop,
            "codec": info.codec,
            "megabits_per_s": round(path.stat().st_size * 8 / 1e6 / info.duration_s, 2),
        }
        print(f"{name}: timing {args.repeats} run(s) per path", flush=True)
        rows.extend(measure_clip(args, name, path))

    main_rows = [r for r in rows if r["clip"].endswith(f"gop{args.gop}") and r.get("speedup")]
    auto_backend = main_rows[0]["auto_picks"] if main_rows else None
    auto_row = next((r for r in main_rows if r["backend"] == auto_backend), None)
    figures = {
        "rows": rows,
        "ratio": {
            "name": f"decode-every-frame time over seek-sampling time, {args.frames} frames, main clip, backend auto picks",
            "baseline": "read_frames_all (PyAV, every frame decoded)",
            "backend": auto_backend,
            "value": auto_row["speedup"] if auto_row else None,
        },
        "ratio_to_bound": {
            "name": "speedup of the backend auto picks over the keyframe bound (frames), main clip",
            "backend": auto_backend,
            "value": auto_row["speedup_over_bound"] if auto_row else None,
            "over_decode_time_bound": auto_row["speedup_over_time_bound"] if auto_row else None,
        },
        "rotation_parity": rotation_parity(args),
        "targets": {
            "speedup": {"target": ">= 5", "value": auto_row["speedup"] if auto_row else None},
            "ratio_to_bound": {"target": ">= 0.8", "value": auto_row["speedup_over_bound"] if auto_row else None},
            "meaningful": not args.tiny,
        },
    }
    config = {
        "frames": args.frames,
        "max_side": args.max_side,
        "repeats": args.repeats,
        "statistic": "median after one warm-up run",
        "clips": clip_facts,
        "backends_installed": available_video_backends(),
        "backend_versions": decoder_versions(),
    }
    notes = [
        "read_frames_all is PyAV-only; every backend's seek sampler is compared against that one baseline",
        "bound = frames in the clip / fewest frames an exact seeking sampler must decode (set by keyframe spacing)",
        "bound (time) = decode time of every frame / decode time of those fewest frames (keyframes cost more)",
    ]
    if args.tiny:
        notes.append("tiny clip: checks the harness; the full run is the figure that counts")
    payload = common.result_payload(NAME, tiny=args.tiny, config=config, figures=figures, notes=notes, started=started)
    table = common.format_table(rows, COLUMNS)
    if figures["ratio"]["value"] is not None:
        table += f"\nratio (decode-all / seek, {auto_backend}, gop {args.gop}): {figures['ratio']['value']:.2f}x"
        table += (
            f"; of the keyframe bound: {auto_row['speedup_over_bound']:.2f}"
            f"; of the decode-time bound: {auto_row['speedup_over_time_bound']:.2f}"
        )
    table += "\nrotated clips (each backend against decode-all):\n" + common.format_table(
        figures["rotation_parity"], (("rotation_deg", "rotation"), ("backend", "backend"), ("status", "status"))
    )
    return common.finish(args.out, payload, table)


if __name__ == "__main__":
    sys.exit(main())
