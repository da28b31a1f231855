"""The page is reachable by people who do not own the box: the files and folders a config from the page names stay
inside the data and runs folders (links followed), and no message shows a file's content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from core.config import ConfigError
from image_vlm.config import ImageConfig
from video_vlm.config import VideoConfig

SECRET = "hf_FAKEtoken0123456789abcdef"

# (recipe, field) for every config field that names a file or folder; the product's list must be this one.
PATH_FIELDS = [
    ("image", "model.name"), ("image", "data.root"), ("image", "warm_start.jsonl"), ("image", "pairs.file"),
    ("image", "pairs.source_run"),
    ("video", "model.name"), ("video", "data.root"), ("video", "data.schema_file"), ("video", "data.frame_cache_dir"),
    ("video", "pairs.file"), ("video", "pairs.source_run"),
    ("video", "stages.easy.data.root"), ("video", "stages.easy.data.schema_file"),
    ("video", "stages.easy.data.frame_cache_dir"),
]


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """The page's data and runs folders, a launcher that must not be reached, and a box file holding a token."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    (data / "set").mkdir(parents=True)
    runs.mkdir()
    monkeypatch.setenv("VLM_DATA_DIR", str(data))
    monkeypatch.setenv("VLM_RUNS_DIR", str(runs))
    monkeypatch.setattr("ui.recipes.launch_training", lambda *a, **k: pytest.fail("must not launch"))
    token = tmp_path / "home" / ".cache" / "huggingface" / "token"
    token.parent.mkdir(parents=True)
    token.write_text(SECRET + "\n")
    return data.resolve(), runs.resolve(), token


def config(recipe: str, field: str, value: str):
    """A valid config of `recipe` whose `field` (dotted; `stages.<name>.data.<key>` for a curriculum stage) is `value`,
    its dataset inside the data folder otherwise (a preset's `data/...` is relative to the working folder)."""
    values = {"data": {"root": os.path.join(os.environ["VLM_DATA_DIR"], "set")}}
    if field.startswith("stages."):
        _, name, _, key = field.split(".")
        return VideoConfig.model_validate({**values, "stages": [{"name": name, "data": {key: value}}]})
    section, key = field.split(".")
    values.setdefault(section, {})[key] = value
    return (ImageConfig if recipe == "image" else VideoConfig).model_validate(values)


def allowed(data: Path, runs: Path) -> str:
    return f"is outside the folders the page may use ({data}, {runs})"


def test_a_schema_file_outside_the_roots_is_refused_before_anything_starts(roots):
    """The review's case: the Video page's "Schema file" set to the box's Hugging Face token."""
    from ui.recipes import VIDEO, start_training

    data, runs, token = roots
    cfg = VideoConfig(data={"root": str(data / "set"), "schema_file": str(token)})
    with pytest.raises(ConfigError) as refused:
        start_training(VIDEO, cfg)
    message = str(refused.value)
    assert message == f"data.schema_file: {token} {allowed(data, runs)}"
    assert SECRET not in message and "\n" not in message
    assert list(runs.iterdir()) == [], "no run folder, no launch.yaml"


@pytest.mark.parametrize("recipe, field", PATH_FIELDS, ids=[f"{r}:{f}" for r, f in PATH_FIELDS])
def test_every_path_field_must_stay_inside_the_roots(roots, tmp_path, recipe, field):
    from core.page_paths import page_path_problems
    from ui.recipes import RECIPES, start_training

    data, runs, token = roots
    outside = tmp_path / "elsewhere"
    outside.mkdir()  # a folder, so that model.name reads as a local model folder
    with pytest.raises(ConfigError) as refused:
        start_training(RECIPES[recipe], config(recipe, field, str(outside)))
    assert str(refused.value) == f"{field}: {outside} {allowed(data, runs)}"
    inside = data / "set" if field != "pairs.source_run" else runs / "image-20260101-000000"
    inside.mkdir(exist_ok=True)
    assert page_path_problems(config(recipe, field, str(inside))) == []


def test_the_product_lists_every_path_field_once():
    from core.page_paths import PATH_FIELDS as listed

    assert sorted(listed) == sorted({field for _, field in PATH_FIELDS if not field.startswith("stages.")})


def test_a_hub_id_or_tiny_model_is_not_a_path(roots):
    from core.page_paths import page_path_problems

    for name in ("Qwen/Qwen2.5-VL-7B-Instruct", "tiny:internvl"):
        assert page_path_problems(VideoConfig(model={"name": name}, data={"root": str(roots[0] / "set")})) == []
    problems = page_path_problems(VideoConfig(model={"name": "~/models/mine"}, data={"root": str(roots[0] / "set")}))
    assert [p.split(":")[0] for p in problems] == ["model.name"]


def test_a_link_inside_the_data_folder_that_leads_out_is_refused(roots, tmp_path):
    from core.page_paths import page_path_problems
    from ui.recipes import VIDEO, start_training

    data, runs, token = roots
    (data / "set" / "schema.yaml").symlink_to(token)
    (data / "elsewhere").symlink_to(tmp_path / "home", target_is_directory=True)
    cfg = VideoConfig(data={"root": str(data / "elsewhere"), "schema_file": str(data / "set" / "schema.yaml")})
    with pytest.raises(ConfigError) as refused:
        start_training(VIDEO, cfg)
    link = "(through a link that leads out of them)"
    assert str(refused.value).split("; ") == page_path_problems(cfg) == [
        f"data.root: {data / 'elsewhere'} {allowed(data, runs)} {link}",
        f"data.schema_file: {data / 'set' / 'schema.yaml'} {allowed(data, runs)} {link}",
    ]
    relative = os.path.relpath(data / "set" / "schema.yaml")  # taken against the working folder, as the trainer does
    assert page_path_problems(VideoConfig(data={"root": str(data / "set"), "schema_file": relative}))


def test_a_stage_name_cannot_lead_out_of_the_run_folder():
    """A stage's name is a folder of the run (checkpoints/<name>, stages/<name>): a path there would save elsewhere."""
    with pytest.raises(ValueError, match="stages.0.name"):
        VideoConfig(stages=[{"name": "../../other-run/checkpoints"}])
    assert VideoConfig(stages=[{"name": "easy-1.5"}]).stages[0].name == "easy-1.5"


# ---------------------------------------------------------------------------------------------- no content echoed


SCHEMA_FILES = {
    "a token file": SECRET + "\n",
    "a YAML error on the secret's line": f"name: x\nfields: {SECRET}: [\n",
    "a credentials file": json.dumps({"username": "me", "key": SECRET}),
    "a secret as a value": f"name: x\nfields:\n  - {{name: a, type: {SECRET}}}\n",
    "a secret as a value list": f"name: x\nfields:\n  - {{name: a, type: enum, values: [{SECRET}, {SECRET}]}}\n",
    "a secret as an alias": f"name: *{SECRET}\n",
}


@pytest.mark.parametrize("body", SCHEMA_FILES.values(), ids=SCHEMA_FILES.keys())
def test_a_bad_schema_inside_the_roots_says_where_and_what_not_the_content(roots, body):
    from core.page_paths import page_path_problems
    from video_vlm.schema import load_schema

    data, _, _ = roots
    path = data / "set" / "schema.yaml"
    path.write_text(body)
    assert page_path_problems(VideoConfig(data={"root": str(data / "set"), "schema_file": str(path)})) == []
    with pytest.raises(ValueError) as bad:
        load_schema(path)
    message = str(bad.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert SECRET not in message and bad.value.__cause__ is None, "a chained error would print the file's text too"


def test_the_page_s_dataset_check_shows_no_schema_content(roots):
    """What the Video page shows under the dataset picker (ui.datasets) when the schema file is bad."""
    from ui.datasets import check_video_dataset

    data, _, _ = roots
    (data / "set" / "schema.yaml").write_text(SCHEMA_FILES["a credentials file"])
    shown = check_video_dataset(str(data / "set"), (), 0.2, 4, str(data / "set" / "schema.yaml"))["error"]
    assert "not a valid schema: name: field required; fields: field required; 2 unknown keys at the top level" in shown
    assert SECRET not in shown


def test_the_cli_s_status_json_shows_no_schema_content(roots, tmp_path):
    """A run whose schema file is a credentials file stops with one line, in status.json too, that names the file
    and the kinds of problem only (about 15 s: the tiny model is built, nothing trains)."""
    data, runs, _ = roots
    schema = data / "set" / "schema.yaml"
    schema.write_text(SCHEMA_FILES["a credentials file"])
    run = runs / "video-schema"
    result = run_cli("video_vlm.train", "--config", "video_vlm/configs/tiny.yaml", "--run-dir", str(run),
                     f"data.root={data / 'dashcam'}", f"data.schema_file={schema}", timeout=600)
    status = json.loads((run / "status.json").read_text())
    assert result.returncode == 2 and status["state"] == "failed", result.stderr[-2000:]
    assert result.stderr.splitlines()[-1].startswith(f"error: {schema}: not a valid schema: ")
    assert str(schema) in status["error"] and SECRET not in status["error"]
    assert SECRET not in result.stdout + result.stderr


def test_a_bad_pairs_file_names_lines_and_kinds_not_their_text(roots):
    from core.preference import read_pairs

    data, _, _ = roots
    path = data / "set" / "pairs.jsonl"
    path.write_text("\n".join([
        f"{SECRET} is not JSON",
        json.dumps({"username": "me", "key": SECRET}),
        json.dumps({"chosen": SECRET, "rejected": SECRET}),
        json.dumps([SECRET]),
    ]) + "\n")
    with pytest.raises(ConfigError) as refused:
        read_pairs(path, lambda line: None, model="tiny:internvl")
    message = str(refused.value)
    assert message.startswith(f"pairs file {path} has no usable line (4 bad): {path}:1: not valid JSON (")
    assert SECRET not in message
    path.write_text(json.dumps({"model": {"hub_token": SECRET}, "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ConfigError) as refused:
        read_pairs(path, lambda line: None, model="tiny:internvl")
    assert str(refused.value).startswith(f"{path}:1: these pairs were made with a model field that is a dict, not a")
    assert SECRET not in str(refused.value)


def test_the_dataset_check_opens_no_schema_or_folder_outside_the_roots(dirs, tmp_path):
    """The page's dataset check runs while the form is filled in: a schema file or a data folder outside the data
    and runs folders is refused by name there too, before anything is opened (the schema file's text never shows)."""
    from ui.datasets import dataset_report
    from ui.recipes import VIDEO

    runs, data = dirs
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "token.yaml"
    secret.write_text("hf_FAKE_TOKEN_abcdef: [\n")
    (data / "clips").mkdir()
    report = dataset_report(VIDEO, data / "clips", {"schema_file": str(secret)})
    assert report["error"].startswith(f"data.schema_file: {secret} is outside the folders the page may use")
    assert "hf_FAKE_TOKEN" not in report["error"]
    report = dataset_report(VIDEO, outside, {})
    assert report["error"].startswith(f"data.root: {outside} is outside the folders the page may use")
