"""The image dataset: download it from Kaggle, verify every file, and sample it.

Any folder laid out as `ROOT/{train,valid,test}/<class>/<image>` works; the
class comes from the folder name. `verify` decodes every image once, leaves
out the broken ones (the Kaggle wildfire dataset ships two) and records the
usable files in `ROOT/manifest.json`, which training and evaluation read.

Command line::

    python -m image_vlm.data download [--dest data/wildfire]
    python -m image_vlm.data verify [--root data/wildfire]
    python -m image_vlm.data make-synthetic --out data/synthetic [--per-class 40] [--size 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.config import ConfigError
from core.credentials import KAGGLE_CREDENTIALS, kaggle_credentials_problem
from core.media.errors import MediaError, plain_reason
from core.media.image import IMAGE_SUFFIXES, open_image
from core.media.paths import link_problem, stat_without_following_loops

__all__ = [
    "DEFAULT_ROOT",
    "KAGGLE_DATASET",
    "MANIFEST_NAME",
    "SPLITS",
    "DatasetError",
    "ImageManifest",
    "balanced_sample",
    "download_dataset",
    "find_split_root",
    "format_counts_table",
    "label_to_answer",
    "load_manifest",
    "main",
    "verify_image_folder",
]

KAGGLE_DATASET = "abdelghaniaaba/wildfire-prediction-dataset"
DEFAULT_ROOT = Path("data/wildfire")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2  # 2: records the files' fingerprint (names, sizes, mtimes)
# At train time, a few images that stopped decoding since `verify` are skipped; more than this share fails.
MAX_UNREADABLE_FRACTION = 0.05
SPLITS = ("train", "valid", "test")
# Folder names accepted for each split; the manifest always uses the first (canonical) name.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "valid": ("valid", "val", "validation"),
    "test": ("test", "testing"),
}
# A JSON object spread over lines that holds no nested object or list (a manifest entry).
_ENTRY_LINES = re.compile(r"\{\n[^{}\[\]]*?\n\s*\}")
# Archive clutter that is never a split or a class.
_IGNORED_DIRS = {"__MACOSX"}

Item = TypeVar("Item")


def how_to_get_dataset(root: str | Path) -> str:
    """The commands that fill a dataset folder, and the credentials the download needs."""
    return (
        f"Download the wildfire dataset with `python -m image_vlm.data download --dest {root}` ({KAGGLE_CREDENTIALS}), "
        f"or create a synthetic one with `python -m image_vlm.data make-synthetic --out {root}`"
    )


class DatasetError(ConfigError):
    """A dataset folder that cannot be used. The message names the folder and what to do."""


@dataclass
class ImageManifest:
    """The usable images of one dataset folder, as recorded by `verify_image_folder`.

    Attributes:
        root: The dataset folder; image paths are relative to it.
        classes: Class names (folder names), sorted.
        splits: Split name -> list of `(relative POSIX path, class)`.
        excluded: Files left out, each `{"path": relative path, "reason": why}`.
        warnings: Problems that do not stop training (empty class, missing split, ...).
    """

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[str, str]]]
    excluded: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Split -> class -> number of usable images (every class listed, zeros included)."""
        counts = {}
        for split, items in self.splits.items():
            per_class = dict.fromkeys(self.classes, 0)
            for _, label in items:
                per_class[label] = per_class.get(label, 0) + 1
            counts[split] = per_class
        return counts

    @property
    def path(self) -> Path:
        """Where the manifest file lives."""
        return self.root / MANIFEST_NAME

    def split(self, name: str) -> list[tuple[Path, str]]:
        """The `(absolute image path, class)` pairs of one split.

        Raises:
            DatasetError: The split does not exist in this dataset.
        """
        canonical = _canonical_split(name)
        if canonical not in self.splits:
            available = ", ".join(self.splits) or "none"
            raise DatasetError(f"{self.root}: no {name!r} split (available: {available})")
        return [(self.root / relative, label) for relative, label in self.splits[canonical]]

    def held_out_split(self) -> str | None:
        """The split to evaluate on: "valid" when present, else "test", else None."""
        return next((name for name in ("valid", "test") if name in self.splits), None)

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to `manifest.json`."""
        return {
            "version": MANIFEST_VERSION,
            "classes": self.classes,
            "splits": {
                split: [{"path": relative, "label": label} for relative, label in items]
                for split, items in self.splits.items()
            },
            "excluded": self.excluded,
            "counts": self.counts,
            "warnings": self.warnings,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, root: str | Path, data: Mapping[str, Any]) -> ImageManifest:
        """Rebuild a manifest from `to_json` output; `root` is where the images live."""
        return cls(
            root=Path(root),
            classes=list(data["classes"]),
            splits={
                split: [(entry["path"], entry["label"]) for entry in items] for split, items in data["splits"].items()
            },
            excluded=[dict(entry) for entry in data.get("excluded", [])],
            warnings=list(data.get("warnings", [])),
            fingerprint=str(data.get("fingerprint", "")),
        )

    def save(self) -> Path:
        """Write `ROOT/manifest.json` and return its path."""
        text = json.dumps(self.to_json(), indent=1)
        # One line per image entry keeps a 40,000-image manifest readable and a quarter the size.
        # JSON strings never hold a raw newline, so only layout whitespace is touched.
        text = _ENTRY_LINES.sub(lambda match: re.sub(r"\n\s*", " ", match.group(0)), text)
        self.path.write_text(text + "\n", encoding="utf-8")
        return self.path


def verify_image_folder(root: str | Path, progress: bool = True, *, write: bool = True) -> ImageManifest:
    """Decode every image under `root`, leave out broken files, and record the rest.

    Args:
        root: Folder with `{train,valid,test}/<class>/` sub-folders (`val`,
            `validation`, `training` and `testing` are accepted too).
        progress: Show a progress bar on stderr while decoding.
        write: Save the result as `ROOT/manifest.json`.

    Returns:
        The manifest. Non-fatal problems are in `manifest.warnings`.

    Raises:
        DatasetError: No split folders, no `train` split, fewer than two
            classes, or no usable training image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset folder not found. {how_to_get_dataset(root)}"
        )
    split_dirs = _find_split_dirs(root)
    if not split_dirs:
        raise DatasetError(_no_splits_message(root))
    warnings: list[str] = []
    if "train" not in split_dirs:
        found = ", ".join(path.name for path in split_dirs.values())
        raise DatasetError(f"{root}: no train split (found only {found}); training needs {root}/train/<class>/")
    if "valid" not in split_dirs and "test" not in split_dirs:
        warnings.append("no valid or test split: there is no held-out data to evaluate on")
    elif "valid" not in split_dirs:
        warnings.append("no valid split: evaluation will have to use the test split")
    elif "test" not in split_dirs:
        warnings.append("no test split: evaluation will have to use the valid split")

    # Gather candidate files per split and class before decoding anything.
    candidates: dict[str, dict[str, list[Path]]] = {}
    for split, split_dir in split_dirs.items():
        class_dirs = sorted(_visible_subdirs(split_dir), key=lambda path: path.name)
        stray = [path.name for path in _visible_files(split_dir)]
        if stray:
            warnings.append(f"{split}: ignored {len(stray)} file(s) outside class folders ({_preview(stray)})")
        if not class_dirs:
            warnings.append(f"{split}: no class folders in {_relative(split_dir, root)}/")
        candidates[split] = {}
        for class_dir in class_dirs:
            images, others = _class_files(class_dir)
            if others:
                warnings.append(
                    f"{split}/{class_dir.name}: ignored {len(others)} file(s) that are not images "
                    f"({_preview([_relative(path, class_dir) for path in others])}); "
                    f"image suffixes are {', '.join(IMAGE_SUFFIXES)}"
                )
            candidates[split][class_dir.name] = images

    # A class folder without an image in any split (a stray `train/unknown_class/`) is not a class.
    found_classes = {label for per_class in candidates.values() for label in per_class}
    classes = sorted(label for label in found_classes if any(per_class.get(label) for per_class in candidates.values()))
    for label in sorted(found_classes - set(classes)):
        places = ", ".join(f"{split}/{label}/" for split, per_class in candidates.items() if label in per_class)
        warnings.append(f"{places}: empty class folder, not counted as a class")
    for per_class in candidates.values():
        for label in found_classes - set(classes):
            per_class.pop(label, None)
    if len(classes) < 2:
        found = ", ".join(classes) or "none"
        raise DatasetError(
            f"{root}: found {len(classes)} class folder(s) ({found}); a classifier needs at least two, "
            f"e.g. {root}/train/wildfire/ and {root}/train/nowildfire/"
        )

    jobs = [
        (split, label, path)
        for split, per_class in candidates.items()
        for label, paths in per_class.items()
        for path in paths
    ]
    reasons = _decode_all([path for _, _, path in jobs], root, progress)

    splits: dict[str, list[tuple[str, str]]] = {split: [] for split in candidates}
    excluded: list[dict[str, str]] = []
    for (split, label, path), reason in zip(jobs, reasons):
        relative = _relative(path, root)
        if reason is None:
            splits[split].append((relative, label))
        else:
            excluded.append({"path": relative, "reason": reason})

    manifest = ImageManifest(
        root=root, classes=classes, splits=splits, excluded=excluded, warnings=warnings, fingerprint=files_fingerprint(root)
    )
    for split, per_class in manifest.counts.items():
        for label, count in per_class.items():
            if count:
                continue
            if label not in candidates[split]:
                warnings.append(f"{split}: class {label!r} has no folder here")
            elif candidates[split][label]:
                warnings.append(f"{split}/{label}: every image is unreadable, so the class is empty")
            else:
                warnings.append(f"{split}/{label}: empty class folder")
    if excluded:
        warnings.append(f"left out {len(excluded)} unreadable image(s); see 'excluded' in {MANIFEST_NAME}")
    if not splits["train"]:
        raise DatasetError(f"{root}: the train split has no usable images")

    if write:
        try:
            manifest.save()
        except OSError as error:
            warnings.append(f"could not write {manifest.path} ({plain_reason(error)}); it will be rebuilt next time")
    return manifest


def load_manifest(root: str | Path, progress: bool = True) -> ImageManifest:
    """Read `ROOT/manifest.json`, verifying the folder first when the manifest is missing, unreadable or stale.

    Stale means the files' fingerprint changed: a file added, removed, renamed, or rewritten (its size or
    mtime), which folder times alone miss when a file is changed in place.
    """
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        if data.get("version") == MANIFEST_VERSION and data.get("fingerprint") == files_fingerprint(root):
            return ImageManifest.from_json(root, data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # Missing or damaged manifest: rebuild it below.
    return verify_image_folder(root, progress=progress)


def balanced_sample(
    items: Iterable[Item],
    n: int | None = None,
    seed: int = 0,
    *,
    label_of: Callable[[Item], str] = lambda item: item[1],
) -> list[Item]:
    """Pick the same number of items from every class, in a shuffled, reproducible order.

    Each class contributes as many items as the smallest class has, or
    `n // number_of_classes` when `n` is given and smaller. When `n` is below
    the number of classes, `n` classes (picked by `seed`) give one item each.

    Args:
        items: Things to sample; by default `(path, label)` pairs.
        n: Total wanted; None takes as many as balance allows.
        seed: Same seed, same sample and order.
        label_of: Gets the class of an item.

    >>> items = [("a1", "fire"), ("a2", "fire"), ("a3", "fire"), ("b1", "none"), ("b2", "none")]
    >>> sample = balanced_sample(items, seed=0)
    >>> sorted(label for _, label in sample)
    ['fire', 'fire', 'none', 'none']
    >>> len(balanced_sample(items, n=2, seed=0))
    2
    >>> balanced_sample(items, seed=3) == balanced_sample(items, seed=3)
    True
    >>> len(balanced_sample(items, n=1, seed=0))
    1
    """
    by_class: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_class[label_of(item)].append(item)
    if not by_class:
        return []
    if n is not None and n < 0:
        raise ValueError(f"n must be None or >= 0, not {n}")
    rng = random.Random(seed)
    labels = sorted(by_class)
    per_class = min(len(members) for members in by_class.values())
    if n is not None:
        if n < len(labels):
            # Too few for one of each: n different classes, one item each (a one-image smoke test still works).
            labels = sorted(rng.sample(labels, n))
            per_class = 1
        else:
            per_class = min(per_class, n // len(labels))
    sample = [item for label in labels for item in rng.sample(by_class[label], per_class)]
    rng.shuffle(sample)
    return sample


def label_to_answer(label: str, mapping: Mapping[str, str]) -> str:
    """The expected answer for a class, e.g. "wildfire" -> "Yes".

    >>> label_to_answer("wildfire", {"wildfire": "Yes", "nowildfire": "No"})
    'Yes'
    """
    try:
        return mapping[label]
    except KeyError:
        allowed = ", ".join(sorted(mapping)) or "none"
        raise DatasetError(
            f"class {label!r} has no answer in the label mapping (data.labels); mapped classes: {allowed}"
        ) from None


def find_split_root(folder: str | Path, max_depth: int = 3) -> Path | None:
    """The shallowest folder at or below `folder` that holds split sub-folders, or None.

    Kaggle archives often wrap the dataset in one or two extra folders.
    """
    level = [Path(folder)]
    for _ in range(max_depth + 1):
        for candidate in level:
            if _find_split_dirs(candidate):
                return candidate
        level = [child for parent in level for child in sorted(_visible_subdirs(parent))]
        if not level:
            break
    return None


def download_dataset(dest: str | Path = DEFAULT_ROOT, *, force: bool = False) -> Path:
    """Download the Kaggle wildfire dataset into `dest` as `dest/{train,valid,test}/<class>/`.

    Args:
        dest: Target folder.
        force: Download again even if `dest` already holds split folders (they are replaced).

    Returns:
        `dest`.

    Raises:
        DatasetError: Missing credentials, or the archive has an unexpected layout.
        RuntimeError: The download itself failed.
    """
    dest = Path(dest)
    if _find_split_dirs(dest) and not force:
        print(f"{dest} already holds a dataset; pass --force to download it again.")
        return dest
    problem = kaggle_credentials_problem()
    if problem:
        raise DatasetError(problem)

    # Imported only now: `import kaggle` authenticates on the spot and may exit the process.
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except SystemExit as error:
        raise DatasetError(f"the kaggle package refused to start ({error})") from None

    staging = dest.parent / f".{dest.name}.download"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:
            raise DatasetError(
                "Kaggle rejected the credentials found. Create a new token at https://www.kaggle.com/settings/api"
            ) from None
        print(f"Downloading {KAGGLE_DATASET} into {dest} ...", flush=True)
        try:
            api.dataset_download_files(KAGGLE_DATASET, path=str(staging), unzip=True, quiet=False)
        except Exception as error:  # noqa: BLE001 - network, HTTP and zip errors all end the same way.
            raise RuntimeError(f"download of {KAGGLE_DATASET} failed: {error}") from error

        found = find_split_root(staging)
        if found is None:
            contents = ", ".join(sorted(path.name for path in staging.iterdir())) or "nothing"
            raise DatasetError(f"the downloaded archive has no train/valid/test folders (it holds: {contents})")
        dest.mkdir(parents=True, exist_ok=True)
        for child in sorted(found.iterdir()):
            target = dest / child.name
            if target.exists():
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            shutil.move(str(child), str(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (dest / MANIFEST_NAME).unlink(missing_ok=True)
    return dest


def format_counts_table(manifest: ImageManifest) -> str:
    """Per-split, per-class image counts as an aligned text table with totals.

    >>> manifest = ImageManifest(Path("d"), ["no", "yes"], {"train": [("a", "yes"), ("b", "no"), ("c", "yes")]})
    >>> print(format_counts_table(manifest))
    split  no  yes  total
    train   1    2      3
    total   1    2      3
    """
    counts = manifest.counts
    header = ["split", *manifest.classes, "total"]
    rows = [
        [split, *(str(per_class[label]) for label in manifest.classes), str(sum(per_class.values()))]
        for split, per_class in counts.items()
    ]
    totals = [sum(counts[split][label] for split in counts) for label in manifest.classes]
    rows.append(["total", *(str(total) for total in totals), str(sum(totals))])
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths))
        )

    return "\n".join(line(row) for row in [header, *rows])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dataset command line; returns the exit code (0 usable, 2 not usable, 1 download failed)."""
    parser = argparse.ArgumentParser(
        prog="python -m image_vlm.data", description="Download, verify or synthesise the image dataset."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help=f"download the Kaggle dataset {KAGGLE_DATASET}")
    download.add_argument("--dest", type=Path, default=DEFAULT_ROOT, help="target folder (default: %(default)s)")
    download.add_argument("--force", action="store_true", help="download again even if the folder has a dataset")
    download.add_argument("--no-verify", action="store_true", help="skip decoding every image afterwards")

    verify = commands.add_parser("verify", help="decode every image, exclude broken ones, write manifest.json")
    verify.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="dataset folder (default: %(default)s)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")

    synthetic = commands.add_parser("make-synthetic", help="write a small synthetic red-blob dataset")
    synthetic.add_argument("--out", type=Path, required=True, help="target folder")
    synthetic.add_argument("--per-class", type=int, default=40, help="images per class and split (default: %(default)s)")
    synthetic.add_argument("--size", type=int, default=64, help="tile size in pixels (default: %(default)s)")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    synthetic.add_argument("--format", choices=("png", "jpg"), default="png", help="image format (default: %(default)s)")

    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            root = download_dataset(args.dest, force=args.force)
            if args.no_verify:
                return 0
            return _report(verify_image_folder(root))
        if args.command == "verify":
            return _report(verify_image_folder(args.root, progress=not args.quiet))
        from image_vlm.synthetic import make_synthetic_dataset

        root = make_synthetic_dataset(args.out, args.per_class, args.size, args.seed, image_format=args.format)
        print(f"Wrote a synthetic dataset to {root}")
        return _report(verify_image_folder(root, progress=False))
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _report(manifest: ImageManifest) -> int:
    usable = sum(len(items) for items in manifest.splits.values())
    print(
        f"Verified {manifest.root}: {len(manifest.classes)} classes, {usable} usable images, "
        f"{len(manifest.excluded)} excluded."
    )
    if manifest.excluded:
        print("Excluded (left out of training and evaluation):")
        for entry in manifest.excluded:
            print(f"  {entry['path']}: {entry['reason']}")
    for warning in manifest.warnings:
        print(f"warning: {warning}")
    print(format_counts_table(manifest))
    print(f"Manifest: {manifest.path}")
    return 0


def _canonical_split(name: str) -> str:
    lowered = name.lower()
    return next((split for split, aliases in SPLIT_ALIASES.items() if lowered in aliases), name)


def _find_split_dirs(root: Path) -> dict[str, Path]:
    """Canonical split name -> folder, for the split folders directly under `root`."""
    if not root.is_dir():
        return {}
    by_name = {path.name.lower(): path for path in sorted(_visible_subdirs(root))}
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        path = next((by_name[alias] for alias in aliases if alias in by_name), None)
        if path is not None:
            found[split] = path
    return found


def _no_splits_message(root: Path) -> str:
    subdirs = sorted(path.name for path in _visible_subdirs(root))
    message = f"{root}: no train/valid/test folders found"
    if subdirs:
        message += f" (it holds: {_preview(subdirs)})"
        if any(_class_files(root / name)[0] for name in subdirs):
            message += f"; these look like class folders: move them into {root}/train/"
    nested = find_split_root(root)
    if nested is not None and nested != root:
        message += f"; the dataset seems to be in {nested}: pass that folder instead"
    return message + f". Expected layout: {root}/{{train,valid,test}}/<class>/<image>"


def _visible_subdirs(folder: Path) -> list[Path]:
    try:
        return [
            path for path in folder.iterdir()
            if path.is_dir() and not path.name.startswith(".") and path.name not in _IGNORED_DIRS
        ]
    except OSError:
        return []


def _visible_files(folder: Path) -> list[Path]:
    try:
        return sorted(
            path for path in folder.iterdir()
            if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST_NAME
        )
    except OSError:
        return []


def _class_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) anywhere under a class folder, hidden ones skipped, sorted."""
    images, others = [], []
    for folder, subdirs, files in os.walk(class_dir):
        subdirs[:] = sorted(name for name in subdirs if not name.startswith(".") and name not in _IGNORED_DIRS)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return images, others


def path_problem(path: Path) -> str | None:
    """Why no file can be at `path` (a NUL byte, a name that is not UTF-8), or None: that path is its own
    problem, never the dataset's.

    >>> path_problem(Path("train/a\\x00.png")), path_problem(Path("train/a.png"))
    ('the path holds a NUL byte, which no file name can', None)
    """
    text = str(path)
    if "\x00" in text:
        return "the path holds a NUL byte, which no file name can"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not UTF-8 (training data needs text names); rename the file"
    return None


def _decode_all(paths: list[Path], root: Path, progress: bool) -> list[str | None]:
    """For each path, None when it decodes, else the reason it does not. Order is kept."""
    from tqdm import tqdm

    def reason(path: Path) -> str | None:
        if problem := path_problem(path):
            return problem
        # A path from a manifest or a pairs file may lie outside the folder: named as written, then.
        relative = _relative(path, root) if path.is_relative_to(root) else str(path)
        try:
            link = link_problem(root, path)
            if link:
                return f"the file {link[1]}"
            open_image(path, name=relative)
        except MediaError as error:
            return str(error).removeprefix(f"{relative}: ")
        except Exception as error:  # noqa: BLE001 - one odd file must not abort a scan of thousands.
            return f"unreadable ({type(error).__name__}: {plain_reason(error)})"
        return None

    # Pillow releases the GIL while decoding, so threads give a real speed-up; as many as the container's CPUs.
    from core.processes import usable_cpus

    workers = min(8, usable_cpus())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(reason, paths)
        return list(tqdm(results, total=len(paths), desc="verify", unit="img", disable=not progress, file=sys.stderr))


def files_fingerprint(root: str | Path) -> str:
    """A hash of every split and class folder and every file in them, with each file's size and mtime.

    Only names are listed and stat-ed (no decoding), so checking a manifest's freshness stays quick.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for split, split_dir in sorted(_find_split_dirs(root).items()):
        for class_dir in sorted(_visible_subdirs(split_dir), key=lambda path: path.name):
            digest.update(f"{split}/{class_dir.name}/\n".encode())
            images, others = _class_files(class_dir)
            for path in sorted(images + others):
                stat = stat_without_following_loops(path)
                # surrogateescape: a file name that is not UTF-8 is listed (and left out by verify), never a crash.
                entry = f"{_relative(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def drop_unreadable(rows: list[dict[str, Any]], root: Path, log=print) -> tuple[list[dict[str, Any]], int]:
    """The rows whose image still decodes, and how many were skipped; a file can break after `verify`.

    Raises:
        DatasetError: More than MAX_UNREADABLE_FRACTION of the rows are unreadable, naming the first file.
    """
    reasons = _decode_all([Path(row["image_path"]) for row in rows], root, progress=False)
    bad = [(row["image_path"], reason) for row, reason in zip(rows, reasons) if reason is not None]
    for path, reason in bad[:5]:
        log(f"skipping unreadable image {path}: {reason}")
    if bad and len(bad) > MAX_UNREADABLE_FRACTION * len(rows):
        path, reason = bad[0]
        raise DatasetError(
            f"{len(bad)} of {len(rows)} training images are unreadable (more than {MAX_UNREADABLE_FRACTION:.0%}), "
            f"e.g. {path}: {reason}; run `python -m image_vlm.data verify --root {root}` to list them"
        )
    if bad:
        log(f"skipped {len(bad)} unreadable image(s) of {len(rows)}")
    return [row for row, reason in zip(rows, reasons) if reason is None], len(bad)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _preview(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


if __name__ == "__main__":
    sys.exit(main())
