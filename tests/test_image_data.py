"""Dataset verification, manifest, sampling and label mapping, on small generated folders."""

from __future__ import annotations

import io
import json
import os
import sys
import time
import types
from pathlib import Path

import pytest
from PIL import Image

from image_vlm.data import (
    DatasetError,
    ImageManifest,
    balanced_sample,
    find_split_root,
    label_to_answer,
    load_manifest,
    main,
    verify_image_folder,
)
from image_vlm.synthetic import make_synthetic_dataset


def write_image(path: Path, colour=(40, 120, 40), image_format: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path, format=image_format)
    return path


def build_folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """layout: split -> class -> number of good images."""
    for split, classes in layout.items():
        for label, count in classes.items():
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                write_image(root / split / label / f"{index}.png")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return build_folder(
        tmp_path / "ds",
        {
            "train": {"wildfire": 3, "nowildfire": 2},
            "valid": {"wildfire": 1, "nowildfire": 1},
            "test": {"wildfire": 1, "nowildfire": 1},
        },
    )


def test_verify_counts_and_manifest(folder: Path) -> None:
    manifest = verify_image_folder(folder, progress=False)
    assert manifest.classes == ["nowildfire", "wildfire"]
    assert manifest.counts["train"] == {"nowildfire": 2, "wildfire": 3}
    assert manifest.excluded == [] and manifest.warnings == []
    data = json.loads((folder / "manifest.json").read_text())
    assert set(data) >= {"classes", "splits", "excluded", "counts"}
    assert {"path": "train/wildfire/0.png", "label": "wildfire"} in data["splits"]["train"]
    assert data["counts"]["valid"] == {"nowildfire": 1, "wildfire": 1}
    path, label = manifest.split("train")[0]
    assert path.is_file() and path.is_absolute() == folder.is_absolute() and label == "nowildfire"


def test_corrupt_files_are_listed_and_excluded(folder: Path) -> None:
    good = (folder / "train" / "wildfire" / "0.png").read_bytes()
    (folder / "train" / "wildfire" / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "train" / "wildfire" / "empty.jpg").write_bytes(b"")
    (folder / "valid" / "nowildfire" / "text.jpg").write_text("not an image")
    manifest = verify_image_folder(folder, progress=False)
    reasons = {entry["path"]: entry["reason"] for entry in manifest.excluded}
    assert set(reasons) == {"train/wildfire/cut.png", "train/wildfire/empty.jpg", "valid/nowildfire/text.jpg"}
    assert reasons["train/wildfire/empty.jpg"].startswith("empty file")
    assert reasons["valid/nowildfire/text.jpg"].startswith("not an image")
    assert manifest.counts["train"]["wildfire"] == 3
    assert all("cut.png" not in relative for relative, _ in manifest.splits["train"])
    assert any("left out 3" in warning for warning in manifest.warnings)


def test_non_image_files_are_ignored_with_a_warning(folder: Path) -> None:
    (folder / "train" / "wildfire" / "README.txt").write_text("notes")
    (folder / "train" / "wildfire" / ".DS_Store").write_bytes(b"\x00")
    manifest = verify_image_folder(folder, progress=False)
    assert manifest.counts["train"]["wildfire"] == 3 and not manifest.excluded
    assert any("README.txt" in warning for warning in manifest.warnings)
    assert not any("DS_Store" in warning for warning in manifest.warnings)


def test_empty_class_folder_warns_and_is_not_a_class(folder: Path) -> None:
    """A stray empty `train/unknown_class/` is not a third class."""
    (folder / "train" / "unknown_class").mkdir()
    (folder / "test" / "unknown_class").mkdir()
    manifest = verify_image_folder(folder, progress=False)
    assert manifest.classes == ["nowildfire", "wildfire"]
    assert "train/unknown_class/, test/unknown_class/: empty class folder, not counted as a class" in manifest.warnings
    assert set(manifest.counts["train"]) == {"nowildfire", "wildfire"}


def test_a_class_empty_in_one_split_stays_a_class(folder: Path) -> None:
    for path in (folder / "test" / "wildfire").iterdir():
        path.unlink()
    manifest = verify_image_folder(folder, progress=False)
    assert manifest.classes == ["nowildfire", "wildfire"]
    assert "test/wildfire: empty class folder" in manifest.warnings


def test_gif_images_are_part_of_the_dataset(folder: Path) -> None:
    write_image(folder / "train" / "wildfire" / "animated.gif", image_format="GIF")
    manifest = verify_image_folder(folder, progress=False)
    assert manifest.counts["train"]["wildfire"] == 4 and not manifest.excluded
    assert not any("animated.gif" in warning for warning in manifest.warnings)


def test_a_file_rewritten_in_place_makes_the_manifest_stale(folder: Path) -> None:
    """Folder times do not change when a file is overwritten; its size and mtime do."""
    load_manifest(folder, progress=False)
    target = folder / "train" / "wildfire" / "0.png"
    stamp = (folder / "train" / "wildfire").stat()
    target.write_bytes(b"corrupted after verify")
    os.utime(folder / "train" / "wildfire", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    manifest = load_manifest(folder, progress=False)
    assert [entry["path"] for entry in manifest.excluded] == ["train/wildfire/0.png"]


def test_training_skips_an_image_that_broke_since_verify(tmp_path: Path) -> None:
    """Same size, same mtime, damaged bytes: the manifest cannot tell; the training set still skips it,
    counts it, and fails only past the threshold, naming the file."""
    from image_vlm.config import ImageConfig
    from image_vlm.task import training_dataset

    def damage(path: Path) -> None:
        stat = path.stat()
        path.write_bytes(b"\0" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    big = build_folder(tmp_path / "big", {"train": {"wildfire": 20, "nowildfire": 20}, "valid": {"wildfire": 1, "nowildfire": 1}})
    data = ImageConfig.model_validate({"data": {"root": str(big), "synthetic": False}}).data
    load_manifest(big, progress=False)
    damage(big / "train" / "wildfire" / "0.png")
    records: list[dict] = []
    assert len(training_dataset(data, "train", record=records.append)) == 39
    assert records == [{"step": 0, "split": "train", "unreadable_images_skipped": 1}]
    from image_vlm.task import dataset_rows

    kept = dataset_rows(training_dataset(data, "train"))  # what the warm start trains on
    assert len(kept) == 39 and not any(row["image_path"].endswith("/train/wildfire/0.png") for row in kept)
    for index in (1, 2):  # 3 of 40 is past the 5% threshold
        damage(big / "train" / "wildfire" / f"{index}.png")
    with pytest.raises(DatasetError, match=r"3 of 40 training images are unreadable .*train/wildfire/0.png"):
        training_dataset(data, "train")


def test_missing_test_split_warns_but_works(folder: Path) -> None:
    for path in sorted((folder / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (folder / "test").rmdir()
    manifest = verify_image_folder(folder, progress=False)
    assert set(manifest.splits) == {"train", "valid"}
    assert any("no test split" in warning for warning in manifest.warnings)
    assert manifest.held_out_split() == "valid"
    with pytest.raises(DatasetError, match="no 'test' split"):
        manifest.split("test")


def test_val_alias_is_accepted(tmp_path: Path) -> None:
    root = build_folder(tmp_path / "ds", {"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 1}})
    manifest = verify_image_folder(root, progress=False)
    assert set(manifest.splits) == {"train", "valid"}
    assert len(manifest.split("valid")) == 2 and len(manifest.split("val")) == 2


def test_missing_train_split_is_an_error(tmp_path: Path) -> None:
    root = build_folder(tmp_path / "ds", {"valid": {"a": 1, "b": 1}})
    with pytest.raises(DatasetError, match="no train split"):
        verify_image_folder(root, progress=False)


def test_no_splits_at_all_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    write_image(root / "wildfire" / "0.png")
    write_image(root / "nowildfire" / "0.png")
    with pytest.raises(DatasetError, match=r"no train/valid/test folders.*look like class folders.*Expected layout"):
        verify_image_folder(root, progress=False)
    assert not (root / "manifest.json").exists()


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found.*make-synthetic"):
        verify_image_folder(tmp_path / "nowhere", progress=False)


def test_single_class_is_an_error(tmp_path: Path) -> None:
    root = build_folder(tmp_path / "ds", {"train": {"wildfire": 2}})
    with pytest.raises(DatasetError, match="at least two"):
        verify_image_folder(root, progress=False)


def test_load_manifest_reuses_fresh_and_rebuilds_stale(folder: Path) -> None:
    first = load_manifest(folder, progress=False)
    manifest_path = folder / "manifest.json"
    assert manifest_path.is_file()
    # A fresh manifest is read, not rebuilt: a marker written into it survives.
    data = json.loads(manifest_path.read_text())
    data["warnings"] = ["marker"]
    manifest_path.write_text(json.dumps(data))
    assert load_manifest(folder, progress=False).warnings == ["marker"]
    # Adding an image changes the class folder's mtime, which makes the manifest stale.
    old = time.time() - 100
    os.utime(manifest_path, (old, old))
    write_image(folder / "train" / "wildfire" / "new.png")
    second = load_manifest(folder, progress=False)
    assert second.counts["train"]["wildfire"] == first.counts["train"]["wildfire"] + 1
    assert second.warnings == []


def test_load_manifest_rebuilds_a_damaged_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_text("{broken")
    assert load_manifest(folder, progress=False).counts["train"]["wildfire"] == 3


def test_manifest_round_trips(folder: Path) -> None:
    manifest = verify_image_folder(folder, progress=False)
    again = ImageManifest.from_json(folder, json.loads(manifest.path.read_text()))
    assert again == manifest


def test_verify_cli_prints_the_table(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--root", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "split  nowildfire  wildfire  total" in out
    assert "train           2         3      5" in out


def test_verify_cli_exits_2_when_unusable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--root", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_find_split_root_finds_a_wrapped_dataset(tmp_path: Path) -> None:
    write_image(tmp_path / "dl" / "wildfire-dataset" / "train" / "a" / "0.png")
    assert find_split_root(tmp_path / "dl") == tmp_path / "dl" / "wildfire-dataset"
    assert find_split_root(tmp_path / "dl" / "wildfire-dataset") == tmp_path / "dl" / "wildfire-dataset"
    assert find_split_root(tmp_path / "empty") is None


def test_balanced_sample() -> None:
    items = [(f"fire{i}", "wildfire") for i in range(10)] + [(f"none{i}", "nowildfire") for i in range(4)]
    sample = balanced_sample(items, seed=1)
    assert sorted(label for _, label in sample).count("wildfire") == 4 and len(sample) == 8
    limited = balanced_sample(items, n=6, seed=1)
    assert [label for _, label in limited].count("nowildfire") == 3 and len(limited) == 6
    assert balanced_sample(items, n=6, seed=1) == limited
    assert balanced_sample(items, n=6, seed=2) != limited
    assert balanced_sample([], n=4) == []
    assert len(balanced_sample(items, n=5, seed=1)) == 4  # n // classes from each class.
    assert len(balanced_sample(items, n=1, seed=1)) == 1
    assert balanced_sample(items, n=0) == []
    with pytest.raises(ValueError, match="n must be"):
        balanced_sample(items, n=-1)


def test_label_to_answer() -> None:
    mapping = {"wildfire": "Yes", "nowildfire": "No"}
    assert label_to_answer("nowildfire", mapping) == "No"
    with pytest.raises(DatasetError, match="'smoke'.*mapped classes: nowildfire, wildfire"):
        label_to_answer("smoke", mapping)


def test_synthetic_dataset_verifies(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "synthetic", per_class=3, size=32, seed=0, corrupt=1)
    manifest = verify_image_folder(root, progress=False)
    assert manifest.classes == ["nowildfire", "wildfire"]
    assert manifest.counts == {split: {"nowildfire": 3, "wildfire": 3} for split in ("train", "valid", "test")}
    assert [entry["path"] for entry in manifest.excluded] == ["train/wildfire/corrupt_00.png"]


def test_synthetic_fire_tiles_have_a_red_blob_and_others_do_not(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "s", per_class=5, size=48, seed=3, image_format="jpg")

    def red_pixels(path: Path) -> int:
        image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
        return sum(1 for r, g, b in image.getdata() if r > 190 and g < 150 and b < 90)

    for path in (root / "train" / "wildfire").glob("*.jpg"):
        assert red_pixels(path) > 20
    for path in (root / "train" / "nowildfire").glob("*.jpg"):
        assert red_pixels(path) == 0


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    first = make_synthetic_dataset(tmp_path / "a", per_class=2, size=16, seed=7)
    second = make_synthetic_dataset(tmp_path / "b", per_class=2, size=16, seed=7)
    relative = "valid/wildfire/wildfire_0001.png"
    assert (first / relative).read_bytes() == (second / relative).read_bytes()


def test_make_synthetic_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert main(["make-synthetic", "--out", str(out), "--per-class", "2", "--size", "16"]) == 0
    assert (out / "manifest.json").is_file()
    assert "test            2         2      4" in capsys.readouterr().out


def test_download_unwraps_the_archive_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for the kaggle package: the real one needs the network and authenticates on import."""

    class FakeKaggleApi:
        def authenticate(self) -> None:
            pass

        def dataset_download_files(self, dataset: str, path: str, unzip: bool, quiet: bool) -> None:
            assert dataset == "abdelghaniaaba/wildfire-prediction-dataset" and unzip
            wrapped = Path(path) / "wildfire-prediction-dataset"
            for split in ("train", "valid", "test"):
                for label in ("wildfire", "nowildfire"):
                    write_image(wrapped / split / label / "0.jpg", image_format="JPEG")
            (wrapped / "train" / "wildfire" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = FakeKaggleApi
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_test")

    dest = tmp_path / "data" / "wildfire"
    assert main(["download", "--dest", str(dest)]) == 0
    assert sorted(path.name for path in dest.iterdir()) == ["manifest.json", "test", "train", "valid"]
    assert not (tmp_path / "data" / ".wildfire.download").exists()
    manifest = load_manifest(dest, progress=False)
    assert [entry["path"] for entry in manifest.excluded] == ["train/wildfire/broken.jpg"]
    assert manifest.counts["test"] == {"nowildfire": 1, "wildfire": 1}
    # A second run keeps the existing copy instead of downloading again.
    monkeypatch.setattr(FakeKaggleApi, "dataset_download_files", None)
    assert main(["download", "--dest", str(dest), "--no-verify"]) == 0


# ------------------------------------------------------------------------------- links in a real download


def test_a_symlink_loop_is_an_excluded_file_named_not_a_crash(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "train" / "wildfire" / "loop.png").symlink_to("loop.png")
    (folder / "train" / "wildfire" / "dangling.png").symlink_to("nowhere.png")
    assert main(["verify", "--root", str(folder), "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "train/wildfire/loop.png: the file is a symlink loop" in output and "delete it" in output
    manifest = load_manifest(folder, progress=False)  # the fingerprint stats the loop without following it
    reasons = {entry["path"]: entry["reason"] for entry in manifest.excluded}
    assert list(reasons) == ["train/wildfire/dangling.png", "train/wildfire/loop.png"]
    assert reasons["train/wildfire/dangling.png"] == "file not found"
    assert manifest.counts["train"] == {"nowildfire": 2, "wildfire": 3}


def test_an_image_symlinked_outside_the_dataset_is_refused(folder: Path, tmp_path: Path) -> None:
    outside = write_image(tmp_path / "elsewhere" / "private.png")
    (folder / "train" / "wildfire" / "linked.png").symlink_to(outside)
    (folder / "train" / "wildfire" / "inside.png").symlink_to(folder / "valid" / "wildfire" / "0.png")
    manifest = verify_image_folder(folder, progress=False)
    reasons = {entry["path"]: entry["reason"] for entry in manifest.excluded}
    assert list(reasons) == ["train/wildfire/linked.png"]
    assert reasons["train/wildfire/linked.png"] == (
        f"the file leads outside {folder} (through a symlink) to {outside.resolve()}; "
        "copy the file into the dataset folder instead of linking to it"
    )
    assert ("train/wildfire/inside.png", "wildfire") in manifest.splits["train"]  # a link inside the folder is fine
