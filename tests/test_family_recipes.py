"""Every family of the table in every recipe its inputs allow, on its tiny model: two training steps to a finished
run whose artifact loads, the run's own evaluation, and an answer from each side of the compare view. A family
without video input is refused by the video recipe with one line, before the GPU is taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import IMAGE_SMOKE, VIDEO_SMOKE, last
from core.families import FAMILIES
from core.runs import RunDir

PAIRS = [(family.key, recipe) for family in FAMILIES for recipe in ("image", "video") if recipe in family.modalities]
REFUSED = [family.key for family in FAMILIES if "video" not in family.modalities]


@pytest.fixture(scope="module")
def dashcam(tmp_path_factory) -> Path:
    from video_vlm.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("dashcam") / "data", n=8, seed=0)


def train_two_steps(recipe: str, key: str, run_dir: Path, data_root: Path) -> int:
    if recipe == "image":
        from image_vlm import train

        overrides = [*IMAGE_SMOKE, "train.max_steps=2", "logging.save_steps=1000", "eval.limit=4", "eval.batch_size=4"]
        config = "image_vlm/configs/tiny.yaml"
    else:
        from video_vlm import train

        overrides = [*VIDEO_SMOKE, "train.max_steps=2", "logging.save_steps=1000", "eval.limit=2", "eval.batch_size=2"]
        config = "video_vlm/configs/tiny.yaml"
    return train.main(["--config", config, "--run-dir", str(run_dir), *overrides, f"model.name=tiny:{key}", f"data.root={data_root}"])


@pytest.mark.slow
@pytest.mark.parametrize("key, recipe", PAIRS)
def test_a_family_trains_evaluates_and_answers_in_compare(key, recipe, tmp_path, wildfire_synthetic, dashcam, capsys):
    from core.families import family_by_key
    from core.models import load_tuned
    from ui.compare_models import image_messages, load_compare_model, stream_answer, video_messages

    family = family_by_key(key)
    run = RunDir(tmp_path / "run")
    data_root = wildfire_synthetic if recipe == "image" else dashcam
    assert train_two_steps(recipe, key, run.path, data_root) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"model family: {family.title}" in out
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 2, status

    # The artifact loads on its own, through the same loader evaluation uses.
    from core.config import load_config
    from ui.recipes import RECIPES

    cfg = load_config(RECIPES[recipe].config_cls, run.config_path)
    artifact = run.adapter_dir
    assert artifact.is_dir() and load_tuned(cfg.model, artifact, cfg.finetune) is not None

    # The run's evaluation: base and tuned scored on held-out data.
    if recipe == "image":
        from image_vlm import evaluate
    else:
        from video_vlm import evaluate
    assert evaluate.main(["--run", str(run.path)]) == 0
    reports = run.eval_reports()
    assert reports, "no evaluation report written"
    report = json.dumps(next(iter(reports.values())))
    assert '"base"' in report and '"tuned"' in report

    # The compare view: one loaded model answers as base (adapter off) and as tuned.
    loaded = load_compare_model(recipe, run.id, str(run.path), str(artifact), artifact.stat().st_mtime)
    if recipe == "image":
        sample = next(data_root.glob("**/*.png"))
        messages = image_messages(loaded.config, sample)
    else:
        sample = next(data_root.glob("**/*.mp4"))
        messages = video_messages(loaded.config, sample)
    for use_adapter in (False, True):
        answer = last(stream_answer(loaded, messages, use_adapter=use_adapter))
        assert isinstance(answer, str)
    load_compare_model.clear()


@pytest.mark.parametrize("key", REFUSED)
def test_a_family_without_video_is_refused_by_the_video_recipe_in_one_line(key, tmp_path, dashcam, capsys):
    from core.families import family_by_key
    from video_vlm import train

    code = train.main(["--config", "video_vlm/configs/tiny.yaml", "--run-dir", str(tmp_path / "run"),
                       f"model.name=tiny:{key}", f"data.root={dashcam}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{family_by_key(key).title} (tiny:{key}) takes no video input; for video use one of:" in err
    assert "Traceback" not in err
