"""Dataset folders: verify (every bad-line kind), manifest and split, Nexar import, synthetic data."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import write_audio_only
from core.media.video import read_frames, write_clip
from video_vlm.data import (
    Problem,
    import_nexar,
    kaggle_credentials_problem,
    load_manifest,
    main,
    split_for,
    verify_dataset,
)
from video_vlm.schema import UNKNOWN, load_schema

LABEL = {
    "caption": "A car drives through a junction.",
    "event_type": "no_incident",
    "rule_violations": [],
    "intended_action": "turn_right",
    "traffic_density": "low",
    "visibility": "good",
    "scene": "Sub-urban",
}


def small_clip(path, seconds: float = 2.0, fps: int = 10):
    frames = np.zeros((int(seconds * fps), 32, 32, 3), dtype=np.uint8)
    for index in range(len(frames)):
        frames[index, :, : index + 1] = 200
    return write_clip(path, frames, fps=fps)


@pytest.fixture
def messy_dataset(tmp_path):
    """A dataset with one line per problem kind; lines 1 and 10 are the good ones."""
    root = tmp_path / "dataset"
    videos = root / "videos"
    videos.mkdir(parents=True)
    small_clip(videos / "good.mp4")
    small_clip(videos / "other.mp4")
    (videos / "empty.mp4").write_bytes(b"")
    write_audio_only(videos / "audio.mp4")
    (videos / "notes.mp4").write_text("not a video")
    outside = small_clip(tmp_path / "outside.mp4")
    (videos / "escape.mp4").symlink_to(outside)
    lines = [
        json.dumps({"video": "videos/good.mp4", **LABEL}),  # 1 good
        '{"video": "videos/good.mp4", "caption": ',  # 2 malformed JSON
        json.dumps({"video": "videos/missing.mp4", **LABEL}),  # 3 missing file
        json.dumps({"video": "../../etc/passwd", **LABEL}),  # 4 escapes with ..
        json.dumps({"video": "videos/good.mp4", **LABEL, "event_type": "crash"}),  # 5 enum outside schema
        json.dumps({"video": "videos/good.mp4", **{k: v for k, v in LABEL.items() if k != "scene"}}),  # 6
        json.dumps({"video": "videos/empty.mp4", **LABEL}),  # 7 zero-byte
        json.dumps({"video": "videos/audio.mp4", **LABEL}),  # 8 audio-only
        json.dumps({"video": "videos/other.mp4", "start": 1.0, "end": 9.0, **LABEL}),  # 9 window past end
        json.dumps({"video": "videos/other.mp4", "start": 0.5, "end": 1.5, "id": "w", **LABEL}),  # 10 good
        json.dumps({"video": "/etc/passwd", **LABEL}),  # 11 absolute
        json.dumps({"video": "videos/escape.mp4", **LABEL}),  # 12 symlink out of the folder
        json.dumps({"video": "videos/notes.mp4", **LABEL}),  # 13 text file named .mp4
        json.dumps(["not", "an", "object"]),  # 14
        json.dumps({**LABEL}),  # 15 no video key
        json.dumps({"video": "videos/good.mp4", "start": "soon", **LABEL}),  # 16 bad window
        "",  # blank lines are skipped, not problems
        json.dumps({"video": "videos/good.mp4", **LABEL, "weather": "rain"}),  # 18 unexpected field
    ]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


EXPECTED_PROBLEMS = {
    2: "malformed_json",
    3: "missing_file",
    4: "unsafe_path",
    5: "bad_value",
    6: "missing_field",
    7: "empty_file",
    8: "no_video_stream",
    9: "window_past_end",
    11: "unsafe_path",
    12: "unsafe_path",
    13: "not_a_video",
    14: "not_an_object",
    15: "missing_video_field",
    16: "bad_window",
    18: "unexpected_field",
}


def test_verify_reports_each_problem_by_line(messy_dataset):
    report = verify_dataset(messy_dataset, progress=False)
    assert {problem.line_no: problem.kind for problem in report.problems} == EXPECTED_PROBLEMS
    assert all(problem.message.startswith(f"line {problem.line_no}:") for problem in report.problems)
    assert report.counts == {
        "malformed_json": 1, "missing_file": 1, "unsafe_path": 3, "bad_value": 1, "missing_field": 1,
        "empty_file": 1, "no_video_stream": 1, "window_past_end": 1, "not_a_video": 1, "not_an_object": 1,
        "missing_video_field": 1, "bad_window": 1, "unexpected_field": 1,
    }
    assert report.lines == 17 and report.ok
    assert [(item.line_no, item.video, item.start_s, item.end_s) for item in report.items] == [
        (1, "videos/good.mp4", 0.0, 2.0),
        (10, "videos/other.mp4", 0.5, 1.5),
    ]
    assert report.items[0].label == LABEL
    messages = {problem.line_no: problem.message for problem in report.problems}
    assert "crash" in messages[5] and "collision, near_miss, no_incident" in messages[5]
    assert "scene" in messages[6] and "Urban" in messages[6]
    assert "9.000s" in messages[9] and "2.000s" in messages[9]


def test_verify_writes_a_clean_manifest(messy_dataset):
    verify_dataset(messy_dataset, progress=False)
    manifest = json.loads((messy_dataset / "manifest.json").read_text())
    assert manifest["schema"] == "dashcam" and manifest["fields"] == load_schema(None).field_names
    assert [item["line_no"] for item in manifest["items"]] == [1, 10]
    assert {item["split"] for item in manifest["items"]} == {"train", "val"}  # both splits exist
    assert len(manifest["problems"]) == len(EXPECTED_PROBLEMS)
    items = load_manifest(messy_dataset)
    assert [item.video for item in items] == ["videos/good.mp4", "videos/other.mp4"]
    assert items[1].video_path(messy_dataset).is_file()
    assert [item.split for item in load_manifest(messy_dataset, split="val")] == ["val"]


def test_verify_cli_exit_codes(messy_dataset, tmp_path, capsys):
    assert main(["verify", "--root", str(messy_dataset), "--num-frames", "4"]) == 0
    output = capsys.readouterr().out
    assert "2 valid item(s) from 17 line(s)" in output
    assert "unsafe_path: 3" in output and "line 4:" in output and "line 12:" in output
    bad = tmp_path / "all_bad"
    bad.mkdir()
    (bad / "metadata.jsonl").write_text("{oops\n")
    assert main(["verify", "--root", str(bad)]) == 2
    assert "no valid items" in capsys.readouterr().err
    assert main(["verify", "--root", str(tmp_path / "nothing_here")]) == 2


def test_short_window_warns_but_keeps_the_item(messy_dataset):
    report = verify_dataset(messy_dataset, num_frames=16, progress=False, write_manifest=False)
    assert [warning.line_no for warning in report.warnings] == [10]  # 1 s at 10 fps < 16 frames
    assert len(report.items) == 2 and report.manifest_path is None


def test_deep_verify_decodes_the_frames(messy_dataset):
    report = verify_dataset(messy_dataset, progress=False, deep=True, write_manifest=False)
    assert len(report.items) == 2


def test_split_is_deterministic_and_keeps_clips_together(tmp_path):
    assert split_for("videos/a.mp4", 0.2) == split_for("videos/a.mp4", 0.2)
    splits = [split_for(f"videos/clip_{index}.mp4", 0.2) for index in range(1000)]
    assert 150 < splits.count("val") < 250
    root = tmp_path / "many"
    small_clip(root / "videos" / "one.mp4")
    small_clip(root / "videos" / "two.mp4")
    lines = [json.dumps({"video": f"videos/{name}.mp4", "start": start, "end": start + 0.5, **LABEL})
             for name in ("one", "two") for start in (0.0, 0.5, 1.0)]
    (root / "metadata.jsonl").write_text("\n".join(lines))
    first = verify_dataset(root, val_fraction=0.5, progress=False)
    second = verify_dataset(root, val_fraction=0.5, progress=False)
    assert [item.split for item in first.items] == [item.split for item in second.items]
    by_video = {}
    for item in first.items:
        by_video.setdefault(item.video, set()).add(item.split)
    assert all(len(splits) == 1 for splits in by_video.values())
    assert all(item.split == "train" for item in verify_dataset(root, val_fraction=0.0, progress=False).items)


def test_problem_is_a_plain_tuple():
    assert tuple(Problem(3, "missing_file", "line 3: gone")) == (3, "missing_file", "line 3: gone")


# ------------------------------------------------------------------------------------------------ Nexar


@pytest.fixture
def fake_nexar(tmp_path):
    src = tmp_path / "nexar"
    small_clip(src / "train" / "00001.mp4", seconds=3.0)
    small_clip(src / "train" / "00002.mp4", seconds=3.0)
    small_clip(src / "train" / "00004.mp4", seconds=3.0)
    (src / "train.csv").write_text(
        "id,time_of_event,time_of_alert,target\n"
        "00001,2.5,1.9,1\n"
        "00002,,,0\n"
        "00003,1.0,0.5,1\n"  # no video
        "4,,,0\n"  # id without zero padding
    )
    return src


def test_import_nexar_from_a_downloaded_folder(fake_nexar, tmp_path):
    out, skipped = import_nexar(tmp_path / "out", src=fake_nexar, clip_seconds=1.0, progress=False)
    assert len(skipped) == 1 and "row 4" in skipped[0] and "00003" in skipped[0]
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [(r["video"], r["start"], r["end"], r["event_type"]) for r in records] == [
        ("videos/00001.mp4", 1.5, 2.5, "collision"),  # ends at time_of_event
        ("videos/00002.mp4", 2.0, 3.0, "no_incident"),  # same length, at the end of the clip
        ("videos/00004.mp4", 2.0, 3.0, "no_incident"),
    ]
    for record in records:
        assert {k for k, v in record.items() if v == UNKNOWN} == set(load_schema(None).field_names) - {"event_type"}
    report = verify_dataset(out, progress=False)
    assert report.problems == [] and len(report.items) == 3
    frames = read_frames(out / report.items[0].video, 4, report.items[0].start_s, report.items[0].end_s)
    assert frames.array.shape == (4, 32, 32, 3)


def test_import_nexar_cli_clamps_short_positives(fake_nexar, tmp_path, capsys):
    assert main(["import-nexar", "--src", str(fake_nexar), "--out", str(tmp_path / "out")]) == 0
    first = json.loads((tmp_path / "out" / "metadata.jsonl").read_text().splitlines()[0])
    assert (first["start"], first["end"]) == (0.0, 2.5)  # 4 s asked, the event is at 2.5 s
    assert "3 valid item(s)" in capsys.readouterr().out


@pytest.fixture
def no_kaggle_credentials(monkeypatch, tmp_path):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


def test_missing_kaggle_credentials_message(no_kaggle_credentials, tmp_path, capsys):
    was_imported = "kaggle" in sys.modules
    problem = kaggle_credentials_problem()
    assert "KAGGLE_API_TOKEN" in problem and "~/.kaggle/kaggle.json" in problem
    assert "KAGGLE_USERNAME" in problem and "KAGGLE_KEY" in problem
    assert main(["import-nexar", "--out", str(tmp_path / "out")]) == 2  # returns, does not exit the process
    assert "KAGGLE_API_TOKEN" in capsys.readouterr().err
    assert ("kaggle" in sys.modules) == was_imported  # never imported without credentials


def test_kaggle_credentials_found(no_kaggle_credentials, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "abc")
    assert kaggle_credentials_problem() is None
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    assert kaggle_credentials_problem() is not None  # a username alone is not enough
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    assert kaggle_credentials_problem() is None
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    (no_kaggle_credentials / ".kaggle").mkdir()
    (no_kaggle_credentials / ".kaggle" / "kaggle.json").write_text('{"username": "me", "key": "k"}')
    assert kaggle_credentials_problem() is None


# -------------------------------------------------------------------------------------------- synthetic


def test_make_synthetic_produces_a_dataset_that_verifies(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["make-synthetic", "--out", str(out), "--n", "12", "--seed", "3"]) == 0
    assert "12 valid item(s)" in capsys.readouterr().out
    items = load_manifest(out)
    assert len(items) == 12
    labels = [item.label for item in items]
    assert {label["intended_action"] for label in labels} == {"turn_left", "turn_right", "change_lanes"}
    assert {label["event_type"] for label in labels} == {"collision", "no_incident"}
    assert all(not load_schema(None).validate_label(label)[1] for label in labels)
    for item in items[:6]:
        frames = read_frames(item.video_path(out), 8).array.astype(int)
        red_frames = ((frames[..., 0] - frames[..., 1]).mean(axis=(1, 2)) > 80).sum()
        assert (red_frames > 0) == (item.label["event_type"] == "collision"), item.label["caption"]
    # Same seed, same clips' labels.
    again = tmp_path / "again"
    main(["make-synthetic", "--out", str(again), "--n", "12", "--seed", "3"])
    assert [item.label for item in load_manifest(again)] == labels


@pytest.mark.parametrize("action,heading", [("turn_left", (0, -1)), ("turn_right", (0, 1)), ("change_lanes", (-1, 0))])
def test_synthetic_square_heads_the_way_its_label_says_and_fast_goes_further(action, heading):
    from video_vlm.synthetic import render_clip

    def travel(fast: bool) -> np.ndarray:
        frames = render_clip(action, fast, collision=False, busy=True, bright=False, rng=np.random.default_rng(5))
        solid = frames.min(axis=-1) == 255  # the square itself; its streak and the blue traffic are dimmer
        centres = np.array([np.argwhere(mask).mean(axis=0) for mask in solid])
        return centres[-1] - centres[0]  # (rows, columns) moved over the clip

    fast, slow = travel(True), travel(False)
    for moved in (fast, slow):
        along = float(moved @ np.array(heading))
        assert along > 4 and abs(float(moved @ np.array(heading[::-1]))) < 1, (action, moved)
    assert float(fast @ np.array(heading)) > 1.5 * float(slow @ np.array(heading))


# ------------------------------------------------------------------------------------------------ first-hour edges


def one_line_dataset(tmp_path, record: dict, text: str | None = None, clip_seconds: float = 2.0, fps: int = 10):
    root = tmp_path / "set"
    small_clip(root / "videos" / "a.mp4", seconds=clip_seconds, fps=fps)
    (root / "metadata.jsonl").write_bytes((text if text is not None else json.dumps(record) + "\n").encode("utf-8"))
    return root


def test_a_byte_order_mark_is_not_part_of_line_1(tmp_path):
    """Windows editors save metadata.jsonl with a UTF-8 BOM."""
    root = one_line_dataset(tmp_path, {}, text="\ufeff" + json.dumps({"video": "videos/a.mp4", **LABEL}) + "\n")
    report = verify_dataset(root, progress=False, write_manifest=False)
    assert report.problems == [] and len(report.items) == 1


@pytest.mark.parametrize("clip_seconds, window", [(0.1, {}), (2.0, {"start": 0.5, "end": 0.55})])
def test_a_window_of_one_frame_is_an_error_naming_the_line(tmp_path, clip_seconds, window):
    root = one_line_dataset(tmp_path, {"video": "videos/a.mp4", **window, **LABEL}, clip_seconds=clip_seconds)
    report = verify_dataset(root, progress=False, write_manifest=False)
    assert report.items == []
    (problem,) = report.problems
    assert problem.kind == "too_few_frames" and problem.line_no == 1
    assert problem.message.startswith("line 1: videos/a.mp4: the window holds 1 frame(s); a clip needs at least 2")


def test_a_control_character_message_says_at_once(tmp_path):
    root = one_line_dataset(tmp_path, {}, text='{"video": "videos/a.mp4", "caption": "a\tb"}\n')
    (problem,) = verify_dataset(root, progress=False, write_manifest=False).problems
    assert "Invalid control character at column" in problem.message and "at at" not in problem.message


def test_import_nexar_keeps_near_misses_when_the_csv_says_so(fake_nexar, tmp_path):
    csv_path = fake_nexar / "train.csv"
    csv_path.write_text(
        "id,time_of_event,time_of_alert,target,event_type\n"
        "00001,2.5,1.9,1,near-collision\n"
        "00002,2.0,1.0,1,\n"
        "00004,,,0,\n"
    )
    small_clip(fake_nexar / "train" / "00002.mp4", seconds=3.0)
    out, _ = import_nexar(tmp_path / "out", src=fake_nexar, clip_seconds=1.0, progress=False)
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["event_type"] for r in records] == ["near_miss", "collision", "no_incident"]


def test_import_nexar_alert_to_event_window(fake_nexar, tmp_path):
    assert main(["import-nexar", "--src", str(fake_nexar), "--out", str(tmp_path / "out"), "--window", "alert-to-event",
                 "--clip-seconds", "1"]) == 0
    first = json.loads((tmp_path / "out" / "metadata.jsonl").read_text().splitlines()[0])
    assert (first["start"], first["end"]) == (1.9, 2.5)  # time_of_alert to time_of_event


def test_a_clip_that_is_a_symlink_loop_is_a_named_problem_not_a_crash(tmp_path):
    (tmp_path / "videos").mkdir()
    small_clip(tmp_path / "videos" / "good.mp4")
    (tmp_path / "videos" / "loop.mp4").symlink_to("loop.mp4")
    lines = [{"video": "videos/loop.mp4", **LABEL}, {"video": "videos/good.mp4", **LABEL}]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = verify_dataset(tmp_path, progress=False)
    assert [(problem.line_no, problem.kind) for problem in report.problems] == [(1, "symlink_loop")]
    assert report.problems[0].message == (
        "line 1: video path 'videos/loop.mp4' is a symlink loop (the link leads back to itself and never reaches a "
        "file); delete it or point it at the real file"
    )
    assert [item.line_no for item in report.items] == [2]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])  # utf-16 writes a BOM, as spreadsheets export it
def test_a_utf16_metadata_file_is_one_message_saying_how_to_convert_it(tmp_path, encoding):
    root = one_line_dataset(tmp_path, {})
    lines = [json.dumps({"video": "videos/a.mp4", **LABEL})] * 3
    (root / "metadata.jsonl").write_bytes("\n".join(lines).encode(encoding))
    report = verify_dataset(root, progress=False, write_manifest=False)
    assert report.problems == [
        Problem(1, "not_utf8", "line 1: metadata.jsonl is UTF-16 text, not UTF-8 (spreadsheets save it so); convert it "
                "with `iconv -f UTF-16 -t UTF-8 metadata.jsonl > fixed.jsonl` and use fixed.jsonl as metadata.jsonl")
    ]
    assert report.items == []


def test_verify_warns_about_an_answer_far_past_max_length(tmp_path, capsys):
    """A pasted 60 kB caption: verify has no tokenizer, so it bounds the count at 6 characters a token."""
    root = one_line_dataset(tmp_path, {"video": "videos/a.mp4", **LABEL, "caption": "x" * 60_000})
    report = verify_dataset(root, progress=False, write_manifest=False, max_length=8192)
    chars = len(load_schema(None).render_label({**LABEL, "caption": "x" * 60_000}))
    assert [(warning.line_no, warning.kind, warning.message) for warning in report.warnings] == [(
        1, "too_long",
        f"line 1: videos/a.mp4: the answer is {chars:,} characters, at least {-(-chars // 6):,} tokens (counting 6 "
        "characters a token, more than tokenizers pack into text), past train.max_length 8192: training will skip "
        "this line, never truncate it; shorten the answer or raise train.max_length",
    )]
    assert len(report.items) == 1  # training measures it exactly and decides
    assert verify_dataset(root, progress=False, write_manifest=False, max_length=16384).warnings == []
    assert main(["verify", "--root", str(root), "--max-length", "8192"]) == 0
    assert "[too_long] line 1: videos/a.mp4: the answer is" in capsys.readouterr().out


def test_duplicate_lines_warn_naming_them_and_every_copy_of_a_sample_stays_on_one_side(tmp_path, capsys):
    """A sample is its clip file (a symlink inside the folder is the file it points to), window and answer."""
    videos = tmp_path / "videos"
    small_clip(videos / "a.mp4")
    small_clip(videos / "b.mp4")
    # A second name for a.mp4 whose path alone hashes to the other split.
    alias = next(f"videos/alias{n}.mp4" for n in range(100) if split_for(f"videos/alias{n}.mp4", 0.5) != split_for("videos/a.mp4", 0.5))
    (tmp_path / alias).symlink_to("a.mp4")
    window = {"start": 0.0, "end": 1.0}
    lines = [
        {"video": "videos/a.mp4", **window, **LABEL},  # 1
        {"video": "videos/b.mp4", **window, **LABEL},  # 2
        {"video": "videos/a.mp4", **window, **LABEL},  # 3: line 1 again
        {"video": alias, **window, **LABEL},  # 4: line 1 through another name
        {"video": "videos/a.mp4", "start": 1.0, "end": 2.0, **LABEL},  # 5: another window, not a copy
    ]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = verify_dataset(tmp_path, val_fraction=0.5, progress=False, write_manifest=False)
    assert [(warning.line_no, warning.kind, warning.message) for warning in report.warnings] == [(
        3, "duplicate",
        "lines 1, 3, 4: the same sample (videos/a.mp4, window [0.000s, 1.000s), the same answer) 3 times; each copy "
        "trains again and all stay on one side of the train/val split; delete the extra lines",
    )]
    splits = {item.line_no: item.split for item in report.items}
    assert len(splits) == 5 and splits[1] == splits[3] == splits[4] == splits[5]  # one clip, one side
    assert main(["verify", "--root", str(tmp_path), "--val-fraction", "0.5"]) == 0
    assert "[duplicate] lines 1, 3, 4: the same sample" in capsys.readouterr().out
