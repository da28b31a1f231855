"""Video datasets: check a dataset folder, import Nexar, or generate a synthetic one.

Dataset folder format::

    DIR/
      videos/...                 the clips (any container PyAV reads: mp4, webm, mkv, ...)
      metadata.jsonl             one JSON object per line:
          {"video": "videos/x.mp4", "start": 1.5, "end": 5.5, "id": "x", <schema fields>}

`video` is a path relative to DIR that must stay inside it. `start`/`end` (seconds, optional) select a
window of the clip; without them the whole clip is used. `id` is an optional free-form reference. Every
other key is a label field of the schema (`video_vlm/schema.py`); a field the source lacks is the string
"unknown". `verify` checks every line and writes `DIR/manifest.json`, the clean list training reads.

Commands::

    python -m video_vlm.data verify --root DIR [--val-fraction 0.2] [--num-frames 8] [--max-length 8192] [--schema FILE] [--deep]
    python -m video_vlm.data import-nexar --out DIR [--src DIR] [--clip-seconds 4]
    python -m video_vlm.data make-synthetic --out DIR [--n 40] [--seed 0]

Nexar import (Kaggle competition "nexar-collision-prediction"): `train.csv` has columns id,
time_of_event, time_of_alert, target and the clips are `train/<id>.mp4`. Nexar documents target=1 as
"a collision or a near-collision" and its CSV does not say which, so a positive is labelled event_type
"collision", Nexar's merged class; a CSV with an `event_type` column (collision / near_miss) keeps
near-misses as "near_miss". Negatives are "no_incident". A positive's window (`--window`) is the
`--clip-seconds` before time_of_event (default), time_of_alert to time_of_event, or `--clip-seconds`
around the event; a negative gets `--clip-seconds` at the end of
its clip, where positives' events usually are, so window position says nothing about the label. Nexar
has no captions, rule violations, intended actions, traffic density, visibility or scene: those fields
are "unknown", masked from the loss and left out of scores. Clips are hard-linked into DIR/videos when
possible, else copied.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from tqdm import tqdm

from core.credentials import KAGGLE_CREDENTIALS, kaggle_credentials_problem
from core.files import link_or_copy
from core.jsonl import json_object_lines
from core.media.errors import MediaError
from core.media.paths import link_problem
from core.media.video import VideoInfo, probe_video, read_frames, resolve_window
from video_vlm.config import SFTSection
from video_vlm.schema import UNKNOWN, SchemaSpec, load_schema

METADATA_FILE = "metadata.jsonl"
MANIFEST_FILE = "manifest.json"
NON_LABEL_KEYS = ("video", "start", "end", "id")
NEXAR_COMPETITION = "nexar-collision-prediction"
_MAX_PROBLEMS_PRINTED = 50
_WARNINGS_PRINTED = ("too_long", "duplicate")  # warning kinds the CLI lists one by one


class Problem(NamedTuple):
    """One problem found by `verify_dataset`; line_no is 1-based (0 for the folder itself)."""

    line_no: int
    kind: str
    message: str


@dataclass
class Item:
    """One clean example.

    Attributes:
        video: Path of the clip relative to the dataset folder (POSIX separators).
        start_s: Window start in seconds.
        end_s: Window end in seconds.
        label: The label fields, canonical order; "unknown" where the source lacks a field.
        split: "train" or "val".
        line_no: Line of metadata.jsonl it came from.
        duration_s: Duration of the whole clip.
    """

    video: str
    start_s: float
    end_s: float
    label: dict
    split: str
    line_no: int
    duration_s: float

    def video_path(self, root: str | Path) -> Path:
        """Absolute path of the clip inside dataset folder `root`."""
        return Path(root) / self.video


@dataclass
class VerifyReport:
    """What `verify_dataset` found.

    Attributes:
        root: The dataset folder.
        items: Clean examples (the manifest's content).
        problems: Lines left out, each with its line number, kind and message.
        warnings: Lines kept but worth knowing about (e.g. windows shorter than --num-frames frames).
        counts: Number of problems per kind.
        lines: Non-blank lines read.
        manifest_path: Where the manifest was written, or None.
    """

    root: Path
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    manifest_path: Path | None = None

    @property
    def ok(self) -> bool:
        """At least one clean example."""
        return bool(self.items)

    def summary(self) -> str:
        """A few lines for people: totals, then counts per problem kind."""
        train = sum(item.split == "train" for item in self.items)
        lines = [
            f"{self.root}: {len(self.items)} valid item(s) from {self.lines} line(s) "
            f"(train {train}, val {len(self.items) - train}); {len(self.problems)} problem(s), "
            f"{len(self.warnings)} warning(s)"
        ]
        lines += [f"  {kind}: {count}" for kind, count in sorted(self.counts.items())]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- verify


MIN_CLIP_FRAMES = 2  # fewer is a still image


def how_to_get_dataset(root: str | Path) -> str:
    """The commands that fill a dataset folder, and the credentials the Nexar import needs."""
    return (
        f"Import the Nexar dashcam clips with `python -m video_vlm.data import-nexar --out {root}` ({KAGGLE_CREDENTIALS}), "
        f"create a synthetic set with `python -m video_vlm.data make-synthetic --out {root}`, "
        "or make a folder with videos/ and metadata.jsonl (see the README)"
    )


def split_for(video: str, val_fraction: float) -> str:
    """Deterministic split of a video path: "val" when its hash falls below `val_fraction`.

    Hashing the path (not drawing at random) keeps the split stable across runs and machines, and puts all
    windows of one clip in the same split, so no clip leaks from training into validation. `verify` hashes each
    clip's `clip_keys` name, so a clip reached by two names (a symlink, a hard link) is one clip too.

    >>> split_for("videos/a.mp4", 0.0), split_for("videos/a.mp4", 1.0)
    ('train', 'val')
    """
    return "val" if _hash_fraction(video) < val_fraction else "train"


def _hash_fraction(video: str) -> float:
    digest = hashlib.sha256(video.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def clip_keys(root: Path, videos: Iterable[str]) -> dict[str, str]:
    """Each video path -> the name of the file it is: a symlink inside the folder is its target, and hard links
    to one file take the first of their names. Copies of a clip under other names are one clip for the split.

    Root-relative, so the split is the same on every machine; a plain file's key is its own path.
    """
    real_root = Path(os.path.realpath(root))
    by_inode: dict[tuple[int, int], str] = {}
    keys = {}
    for video in sorted(set(videos)):
        real = Path(os.path.realpath(root / video))
        key = real.relative_to(real_root).as_posix() if real.is_relative_to(real_root) else video
        try:
            stat = real.stat()
            key = by_inode.setdefault((stat.st_dev, stat.st_ino), key)
        except OSError:
            pass
        keys[video] = key
    return keys


def _assign_splits(root: Path, items: list[Item], val_fraction: float) -> None:
    keys = clip_keys(root, (item.video for item in items))
    for item in items:
        item.split = split_for(keys[item.video], val_fraction)
    clips = sorted(set(keys.values()), key=_hash_fraction)
    # A small dataset can hash every clip to one side; move the clip nearest the boundary (still
    # deterministic) so both splits exist when the fraction asks for both.
    splits = {item.split for item in items}
    if len(clips) >= 2 and 0 < val_fraction < 1 and len(splits) == 1:
        moved, to = (clips[0], "val") if splits == {"train"} else (clips[-1], "train")
        for item in items:
            if keys[item.video] == moved:
                item.split = to


def _duplicate_warnings(root: Path, items: list[Item]) -> list[Problem]:
    """One warning per sample written more than once: the same clip (`clip_keys`), window and answer."""
    keys = clip_keys(root, (item.video for item in items))
    copies: dict[tuple, list[Item]] = {}
    for item in items:
        sample = (keys[item.video], round(item.start_s, 3), round(item.end_s, 3), json.dumps(item.label, sort_keys=True))
        copies.setdefault(sample, []).append(item)
    warnings = []
    for group in copies.values():
        if len(group) > 1:
            first, lines = group[0], ", ".join(str(item.line_no) for item in group)
            warnings.append(Problem(group[1].line_no, "duplicate", (
                f"lines {lines}: the same sample ({first.video}, window [{first.start_s:.3f}s, {first.end_s:.3f}s), "
                f"the same answer) {len(group)} times; each copy trains again and all stay on one side of the "
                "train/val split; delete the extra lines"
            )))
    return sorted(warnings)


def _safe_relative_path(root: Path, value: str) -> tuple[str | None, tuple[str, str] | None]:
    """(normalised relative path, None) when `value` stays inside `root`, else (None, (kind, why not)).

    A path no file can have (a NUL byte, text that is not UTF-8) is its line's problem, kind bad_path, as is any
    the system refuses to look up: one line never stops the check of the others.

    >>> _safe_relative_path(Path("d"), "videos/a\\x00.mp4")[1]
    ('bad_path', "video path 'videos/a\\\\x00.mp4' holds a NUL byte, which no file name can")
    """
    if not value.strip():
        return None, ("unsafe_path", "empty video path")
    if "\x00" in value:
        return None, ("bad_path", f"video path {value!r} holds a NUL byte, which no file name can")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, ("bad_path", f"video path {value!r} is not valid UTF-8 text (an unpaired surrogate escape)")
    posix = PurePosixPath(value.replace("\\", "/"))
    if posix.is_absolute() or Path(value).is_absolute() or Path(value).drive:
        return None, ("unsafe_path", f"video path {value!r} is absolute; use a path relative to {root}")
    if ".." in posix.parts:
        return None, ("unsafe_path", f"video path {value!r} uses '..'; it must stay inside {root}")
    try:
        link = link_problem(root, root / Path(*posix.parts))
    except (OSError, ValueError) as error:
        return None, ("bad_path", f"video path {value!r} cannot be looked up ({error})")
    if link:
        return None, (link[0], f"video path {value!r} {link[1]}")
    return posix.as_posix(), None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a permission-denied folder on the way, say: the line reads as missing_file
        return False


def _window_problem(start, end) -> str | None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
            return f"{name} must be a number of seconds, got {json.dumps(value)}"
    if start is not None and start < 0:
        return f"start must be >= 0, got {start}"
    if start is not None and end is not None and end <= start:
        return f"end ({end}) must be after start ({start})"
    return None


def verify_dataset(
    root: str | Path,
    val_fraction: float = 0.2,
    num_frames: int = 8,
    schema: str | Path | SchemaSpec | None = None,
    write_manifest: bool = True,
    progress: bool = True,
    deep: bool = False,
    max_length: int | None = None,
) -> VerifyReport:
    """Check every line of `root/metadata.jsonl`, keep the clean ones, and write `root/manifest.json`.

    Bad lines are reported by line number and skipped. Problem kinds: malformed_json, not_an_object,
    missing_video_field, unsafe_path, bad_path, symlink_loop, missing_file, bad_window, missing_field, bad_value,
    unexpected_field, empty_file, not_a_video, no_video_stream, no_frames, window_past_end,
    decode_failed (and missing_metadata for the folder itself).

    Args:
        root: Dataset folder.
        val_fraction: Share of clips (by path hash) in the validation split.
        num_frames: Frames per example in training; shorter windows get a short_window warning.
        schema: Schema file, spec, or None for the dashcam schema.
        write_manifest: Write `root/manifest.json`.
        progress: Show a progress bar while probing videos.
        deep: Also decode the sampled frames of every example (slower; catches damage past the first frame).
        max_length: train.max_length; an answer that surely needs more tokens gets a too_long warning
            (`_too_long_warnings`). None skips the check (training measures every sample exactly).

    Returns:
        A `VerifyReport`.
    """
    root = Path(root)
    spec = schema if isinstance(schema, SchemaSpec) else load_schema(schema)
    report = VerifyReport(root=root)
    metadata = root / METADATA_FILE
    if not metadata.is_file():
        report.problems.append(Problem(0, "missing_metadata", f"{metadata} not found"))
    else:
        candidates = _check_lines(root, metadata, spec, report)
        _check_videos(root, candidates, num_frames, deep, progress, report)
        if max_length is not None:
            report.warnings += _too_long_warnings(report.items, spec, max_length)
    _assign_splits(root, report.items, val_fraction)
    report.warnings += _duplicate_warnings(root, report.items)
    report.problems.sort(key=lambda problem: problem.line_no)
    report.counts = dict(Counter(problem.kind for problem in report.problems))
    if write_manifest and root.is_dir():
        report.manifest_path = _write_manifest(root, report, spec, val_fraction, num_frames)
    return report


def _check_lines(root: Path, metadata: Path, spec: SchemaSpec, report: VerifyReport) -> list[tuple]:
    """Cheap per-line checks; returns (line_no, video, start, end, label) for lines that pass them."""
    candidates = []
    for line_no, obj, bad in json_object_lines(metadata):
        report.lines += 1

        def problem(kind: str, message: str) -> None:
            # Called only within this iteration, so the loop's current line_no is the one meant.
            report.problems.append(Problem(line_no, kind, f"line {line_no}: {message}"))  # noqa: B023

        if bad:
            problem(*bad)
            continue
        if not isinstance(obj.get("video"), str):
            problem("missing_video_field", 'no "video" path (a string relative to the dataset folder)')
            continue
        video, why = _safe_relative_path(root, obj["video"])
        if video is None:
            problem(*why)
            continue
        if not _is_file(root / video):
            problem("missing_file", f"video {video!r} not found in {root}")
            continue
        start, end = obj.get("start"), obj.get("end")
        window_issue = _window_problem(start, end)
        if window_issue:
            problem("bad_window", f"{video}: {window_issue}")
            continue
        label = {key: value for key, value in obj.items() if key not in NON_LABEL_KEYS}
        label_problems = spec.problems(label, allow_unknown=True)
        for kind, message in label_problems:
            problem(kind, f"{video}: {message}")
        if not label_problems:
            candidates.append((line_no, video, start, end, spec.validate_label(label)[0]))
    return candidates


def _check_videos(
    root: Path, candidates: list[tuple], num_frames: int, deep: bool, progress: bool, report: VerifyReport
) -> None:
    """Probe each distinct clip once, then check each example's window against it."""
    probes: dict[str, VideoInfo | MediaError] = {}
    for line_no, video, start, end, label in tqdm(candidates, desc="probing videos", unit="clip", disable=not progress):
        if video not in probes:
            try:
                probes[video] = probe_video(root / video)
            except MediaError as error:
                probes[video] = error
            except (OSError, ValueError) as error:  # whatever else a path can raise: its line's problem
                probes[video] = MediaError(f"{video}: unreadable ({error})")
        info = probes[video]
        try:
            if isinstance(info, MediaError):
                raise info
            start_s, end_s = resolve_window(info, start, end)
            if deep:
                read_frames(root / video, num_frames, start_s, end_s)
        except MediaError as error:
            kind = getattr(error, "kind", "unreadable_video")
            report.problems.append(Problem(line_no, kind, f"line {line_no}: {error}"))
            continue
        frames_in_window = round((end_s - start_s) * info.fps) if info.fps else info.num_frames
        if frames_in_window is not None and min(frames_in_window, info.num_frames or frames_in_window) < MIN_CLIP_FRAMES:
            # One repeated frame has no motion to learn from: it is a still image, not a clip.
            shown = max(0, min(frames_in_window, info.num_frames or frames_in_window))
            message = f"line {line_no}: {video}: the window holds {shown} frame(s); a clip needs at least {MIN_CLIP_FRAMES}"
            report.problems.append(Problem(line_no, "too_few_frames", message))
            continue
        if info.fps and (end_s - start_s) * info.fps < num_frames:
            frames_in_window = max(1, round((end_s - start_s) * info.fps))
            message = (
                f"line {line_no}: {video}: the window holds {frames_in_window} frame(s) < {num_frames}; frames repeat"
            )
            report.warnings.append(Problem(line_no, "short_window", message))
        report.items.append(Item(video, start_s, end_s, label, "train", line_no, info.duration_s))


# Fewest tokens a text of N characters takes, as N / this: tokenizers pack about 4 characters of English into a
# token and fewer of other scripts, so a count made with 6 is below the real one (verify has no tokenizer).
CHARS_PER_TOKEN_BOUND = 6


def _too_long_warnings(items: list[Item], spec: SchemaSpec, max_length: int) -> list[Problem]:
    """A too_long warning for each item whose answer alone surely needs more than `max_length` tokens."""
    warnings = []
    for item in items:
        chars = len(spec.render_label(item.label))
        at_least = -(-chars // CHARS_PER_TOKEN_BOUND)
        if at_least > max_length:
            warnings.append(Problem(item.line_no, "too_long", (
                f"line {item.line_no}: {item.video}: the answer is {chars:,} characters, at least {at_least:,} tokens "
                f"(counting {CHARS_PER_TOKEN_BOUND} characters a token, more than tokenizers pack into text), past "
                f"train.max_length {max_length}: training will skip this line, never truncate it; shorten the answer "
                "or raise train.max_length"
            )))
    return warnings


def _write_manifest(root: Path, report: VerifyReport, spec: SchemaSpec, val_fraction: float, num_frames: int) -> Path:
    manifest = {
        "schema": spec.name,
        "fields": spec.field_names,
        "val_fraction": val_fraction,
        "num_frames": num_frames,
        "counts": report.counts,
        "items": [asdict(item) for item in report.items],
        "problems": [problem._asdict() for problem in report.problems],
        "warnings": [warning._asdict() for warning in report.warnings],
    }
    path = root / MANIFEST_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)  # readers never see a half-written manifest
    return path


def load_manifest(root: str | Path, split: str | None = None) -> list[Item]:
    """The clean items `verify` wrote to `root/manifest.json`, optionally only one split.

    Raises:
        FileNotFoundError: No manifest yet; the message says which command writes it.
    """
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run: python -m video_vlm.data verify --root {root}")
    items = [Item(**item) for item in json.loads(path.read_text(encoding="utf-8"))["items"]]
    return [item for item in items if split is None or item.split == split]


# ------------------------------------------------------------------------------------------------ Nexar


def nexar_credentials_problem() -> str | None:
    """The shared Kaggle credential message, plus what the competition needs beyond it."""
    problem = kaggle_credentials_problem()
    if problem is None:
        return None
    return (
        f"{problem}\nAlso accept the rules at https://www.kaggle.com/competitions/{NEXAR_COMPETITION}/rules, "
        "or download the data yourself and pass --src DIR (the folder with train.csv and train/)."
    )


def download_nexar(dest: str | Path) -> Path:
    """Download and unzip the Nexar competition files into `dest`; returns the folder with train.csv.

    Raises:
        RuntimeError: Missing credentials, rules not accepted, or a failed download (message says which).
    """
    dest = Path(dest)
    problem = nexar_credentials_problem()
    if problem:
        raise RuntimeError(problem)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # lazy: importing kaggle authenticates

        api = KaggleApi()
        api.authenticate()
        api.competition_download_files(NEXAR_COMPETITION, path=str(dest), quiet=False)
    except (Exception, SystemExit) as error:  # kaggle calls exit() on auth failures
        raise RuntimeError(
            f"Kaggle download of {NEXAR_COMPETITION} failed ({error!r}). Check the credentials and that you "
            f"accepted the rules at https://www.kaggle.com/competitions/{NEXAR_COMPETITION}/rules"
        ) from error
    for archive in dest.glob("*.zip"):
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(dest)
        archive.unlink()
    found = next((csv_path.parent for csv_path in dest.rglob("train.csv")), None)
    if found is None:
        raise RuntimeError(f"{dest}: the download has no train.csv")
    return found


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


# A per-row kind of positive, when a copy of train.csv carries one (Nexar's own CSV does not).
NEXAR_KIND_COLUMN = "event_type"
NEXAR_WINDOWS = ("before-event", "alert-to-event", "around-event")


def nexar_event_type(target: int, kind: str | None = None) -> str:
    """The dashcam `event_type` of a Nexar row.

    Nexar's documentation defines target=1 as "a collision or a near-collision". A row that says which (an
    `event_type` column reading collision or near_miss / near-miss / near-collision) keeps it, so near-misses
    stay their own value; a positive that does not say is labelled `collision`, Nexar's merged positive class.

    >>> nexar_event_type(1, "near-collision"), nexar_event_type(1, "collision"), nexar_event_type(1), nexar_event_type(0)
    ('near_miss', 'collision', 'collision', 'no_incident')
    """
    if target != 1:
        return "no_incident"
    kind = (kind or "").strip().lower().replace("-", "_").replace(" ", "_")
    return "near_miss" if kind in ("near_miss", "near_collision", "nearmiss") else "collision"


def nexar_label(target: int, kind: str | None = None) -> dict:
    """Dashcam-schema label of a Nexar clip: event_type from `target` (and the row's kind), every other field unknown."""
    spec = load_schema(None)
    label = {name: UNKNOWN for name in spec.field_names}
    label["event_type"] = nexar_event_type(target, kind)
    return label


def nexar_window(
    duration: float, event: float | None, alert: float | None, clip_seconds: float, window: str = "before-event"
) -> tuple[float, float]:
    """(start, end) seconds of a Nexar example.

    `before-event`: the `clip_seconds` ending at time_of_event. `alert-to-event`: from time_of_alert (the
    earliest moment the event could be foreseen) to time_of_event, or `before-event` without an alert time.
    `around-event`: `clip_seconds` centred on the event. A negative (no event) gets `clip_seconds` at the
    end of its clip, where positives' events usually are.

    >>> nexar_window(10.0, 6.0, 4.5, 4.0), nexar_window(10.0, 6.0, 4.5, 4.0, "alert-to-event")
    ((2.0, 6.0), (4.5, 6.0))
    >>> nexar_window(10.0, 6.0, None, 4.0, "around-event"), nexar_window(10.0, None, None, 4.0, "alert-to-event")
    ((4.0, 8.0), (6.0, 10.0))
    """
    if window not in NEXAR_WINDOWS:
        raise ValueError(f"window {window!r}; allowed: {' | '.join(NEXAR_WINDOWS)}")
    if event is None:
        end = duration
        return max(0.0, end - clip_seconds), end
    event = min(event, duration)
    if window == "alert-to-event" and alert is not None and 0 <= alert < event:
        return alert, event
    if window == "around-event":
        start = max(0.0, event - clip_seconds / 2)
        return start, min(duration, start + clip_seconds)
    return max(0.0, event - clip_seconds), event


def import_nexar(
    out: str | Path,
    src: str | Path | None = None,
    clip_seconds: float = 4.0,
    progress: bool = True,
    window: str = "before-event",
) -> tuple[Path, list[str]]:
    """Write the Nexar training clips as a dataset folder (see the module docstring for the mapping).

    Args:
        out: Dataset folder to write (videos/ and metadata.jsonl).
        src: Folder with train.csv and train/<id>.mp4; None downloads it with the Kaggle API into out/_download.
        clip_seconds: Window length for every example.
        progress: Show a progress bar.
        window: Which seconds of a positive clip train (`nexar_window`): before-event, alert-to-event, around-event.

    Returns:
        (the dataset folder, one message per CSV row skipped).
    """
    out = Path(out)
    src = Path(src) if src is not None else download_nexar(out / "_download")
    csv_path = src / "train.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found; --src must be the folder holding train.csv and train/")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lines, skipped = [], []
    for row_no, row in enumerate(tqdm(rows, desc="importing Nexar", unit="clip", disable=not progress), start=2):
        clip_id = (row.get("id") or "").strip()
        candidates = [src / "train" / f"{name}.mp4" for name in dict.fromkeys([clip_id, clip_id.zfill(5)])]
        source = next((path for path in candidates if path.is_file()), None)
        if not clip_id or source is None:
            skipped.append(f"train.csv row {row_no}: no video train/{clip_id}.mp4")
            continue
        target_value = _float_or_none(row.get("target"))
        if target_value not in (0.0, 1.0):
            skipped.append(f"train.csv row {row_no}: target must be 0 or 1, got {row.get('target')!r}")
            continue
        try:
            duration = probe_video(source).duration_s
        except MediaError as error:
            skipped.append(f"train.csv row {row_no}: {error}")
            continue
        event = None
        if target_value == 1.0:
            event = _float_or_none(row.get("time_of_event"))
            if event is None or event <= 0:
                skipped.append(f"train.csv row {row_no}: positive clip without a time_of_event")
                continue
        start, end = nexar_window(duration, event, _float_or_none(row.get("time_of_alert")), clip_seconds, window)
        name = f"videos/{source.name}"
        link_or_copy(source, out / name)
        record = {"video": name, "start": round(start, 3), "end": round(end, 3), "id": clip_id}
        lines.append(json.dumps({**record, **nexar_label(int(target_value), row.get(NEXAR_KIND_COLUMN))}))
    (out / METADATA_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out, skipped


# -------------------------------------------------------------------------------------------------- CLI


def _print_report(report: VerifyReport, stream=None) -> None:
    stream = stream or sys.stdout  # looked up at call time, so redirected stdout is honoured
    print(report.summary(), file=stream)
    for problem in report.problems[:_MAX_PROBLEMS_PRINTED]:
        print(f"  [{problem.kind}] {problem.message}", file=stream)
    if len(report.problems) > _MAX_PROBLEMS_PRINTED:
        where = report.manifest_path or "the report"
        print(f"  ... and {len(report.problems) - _MAX_PROBLEMS_PRINTED} more (all listed in {where})", file=stream)
    named = [warning for warning in report.warnings if warning.kind in _WARNINGS_PRINTED]
    for warning in named[:_MAX_PROBLEMS_PRINTED]:  # rare, and each one names lines to fix
        print(f"  [{warning.kind}] {warning.message}", file=stream)
    others = [warning for warning in report.warnings if warning.kind not in _WARNINGS_PRINTED]
    if others:
        print(f"  {len(others)} other warning(s), e.g. {others[0].message}", file=stream)
    if report.manifest_path:
        print(f"manifest: {report.manifest_path}", file=stream)


def _verify_and_report(root: Path, args: argparse.Namespace) -> int:
    report = verify_dataset(
        root,
        val_fraction=args.val_fraction,
        num_frames=args.num_frames,
        schema=getattr(args, "schema", None),
        deep=getattr(args, "deep", False),
        max_length=args.max_length,
    )
    _print_report(report)
    if not report.ok:
        print(f"error: no valid items in {root}; fix the problems above", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m video_vlm.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def split_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--val-fraction", type=float, default=0.2, help="share of clips in validation")
        command.add_argument("--num-frames", type=int, default=8, help="frames per example in training")
        command.add_argument(
            "--max-length", type=int, default=SFTSection.model_fields["max_length"].default,
            help="train.max_length: warn about answers that surely need more tokens (default: %(default)s)",
        )

    verify = commands.add_parser("verify", help="check a dataset folder and write manifest.json")
    verify.add_argument("--root", type=Path, required=True, help="folder with videos/ and metadata.jsonl")
    verify.add_argument("--schema", type=Path, default=None, help="schema YAML (default: dashcam)")
    verify.add_argument("--deep", action="store_true", help="also decode every example's frames")
    split_options(verify)

    nexar = commands.add_parser("import-nexar", help="Kaggle Nexar collision clips -> dataset folder")
    nexar.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    nexar.add_argument("--src", type=Path, default=None, help="already-downloaded folder with train.csv")
    nexar.add_argument("--clip-seconds", type=float, default=4.0, help="window length in seconds")
    nexar.add_argument(
        "--window", choices=NEXAR_WINDOWS, default="before-event",
        help="the seconds of a positive clip that train: the --clip-seconds before the event (default), "
        "time_of_alert to time_of_event, or --clip-seconds centred on the event",
    )
    split_options(nexar)

    synthetic = commands.add_parser("make-synthetic", help="generate a tiny synthetic dataset")
    synthetic.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    synthetic.add_argument("--n", type=int, default=40, help="number of clips")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed")
    split_options(synthetic)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = _parser().parse_args(None if argv is None else list(argv))
    if args.command == "verify":
        return _verify_and_report(args.root, args)
    if args.command == "import-nexar":
        try:
            out, skipped = import_nexar(args.out, args.src, args.clip_seconds, window=args.window)
        except (RuntimeError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for message in skipped[:_MAX_PROBLEMS_PRINTED]:
            print(f"skipped {message}")
        return _verify_and_report(out, args)
    from video_vlm.synthetic import make_synthetic_dataset

    out = make_synthetic_dataset(args.out, n=args.n, seed=args.seed)
    return _verify_and_report(out, args)


if __name__ == "__main__":
    sys.exit(main())
