"""The run folder is the contract: the README lists every entry of it with its one writer, `RunDir.LAYOUT` names the
same entries and writers, RunDir's paths are exactly those entries, and no other module spells a run-folder file
name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from core.runs import EVALUATION, EXPORT, LAUNCHER, STOP, TRAINER, RunDir

REPO = Path(__file__).resolve().parents[1]
SECTION = "## The run folder (the contract)"


def readme_listing() -> dict[str, str]:
    """{entry: writer} from the README's `runs/<run-id>/` listing: an entry line is indented two spaces (a wrapped
    description more), its first word the entry and its second the writer."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    block = section.split("```", 2)[1]
    listing = {}
    for line in block.splitlines():
        if re.match(r"  \S", line):
            name, writer = line.split()[:2]
            assert name not in listing, f"README lists {name} twice"
            listing[name] = writer
    return listing


def rundir_entries() -> dict[str, Path]:
    """{entry: path} of every path property of RunDir, read on a folder `r`; a `_dir` property is a folder ("name/")."""
    run = RunDir("r")
    entries = {}
    for attribute, value in vars(RunDir).items():
        if isinstance(value, property) and attribute.endswith(("_path", "_dir")):
            path = getattr(run, attribute)
            assert path.parent == run.path, f"RunDir.{attribute} is not an entry of the run folder: {path}"
            entries[path.name + ("/" if attribute.endswith("_dir") else "")] = path
    return entries


def test_the_readme_lists_every_entry_of_the_run_folder_with_its_writer():
    listing = readme_listing()
    assert set(listing) == set(RunDir.LAYOUT), (
        f"README only: {sorted(set(listing) - set(RunDir.LAYOUT))}; RunDir.LAYOUT only: "
        f"{sorted(set(RunDir.LAYOUT) - set(listing))}")
    assert listing == RunDir.LAYOUT, {name: (listing[name], RunDir.LAYOUT[name]) for name in listing
                                      if listing[name] != RunDir.LAYOUT[name]}
    assert set(RunDir.LAYOUT.values()) <= {TRAINER, LAUNCHER, EVALUATION, EXPORT, STOP}


def test_rundir_knows_a_path_for_every_entry_and_no_other():
    entries = rundir_entries()
    assert set(entries) == set(RunDir.LAYOUT), (
        f"paths without a LAYOUT entry: {sorted(set(entries) - set(RunDir.LAYOUT))}; entries without a path: "
        f"{sorted(set(RunDir.LAYOUT) - set(entries))}")


def test_no_module_but_core_runs_spells_a_run_folder_file_name():
    """A file name of the run folder as a string anywhere in the product (not a docstring's mention): it belongs to
    RunDir. Folder names ("model", "eval", ...) are config keys too, so only file names are looked for."""
    names = {name for name in RunDir.LAYOUT if not name.endswith("/")}
    found = []
    for top in ("core", "ui", "image_vlm", "video_vlm"):
        for path in sorted((REPO / top).rglob("*.py")):
            if path == REPO / "core" / "runs.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, "spell these through RunDir instead:\n" + "\n".join(found)
