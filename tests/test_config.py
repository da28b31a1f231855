"""Config loading: overrides, field-named errors, shipped YAMLs, and comments generated from descriptions."""

from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, field_specs, load_config, to_yaml
from image_vlm.config import ImageConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(ROOT.glob("*_vlm/configs/*.yaml"))


def test_defaults_are_the_issue_defaults():
    cfg = ImageConfig()
    assert cfg.model.name == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (cfg.finetune.r, cfg.finetune.alpha) == (32, 64)
    assert cfg.train.num_generations >= 4 and cfg.logging.logging_steps == 1


def test_overrides_reach_nested_fields(tmp_path):
    cfg = load_config(ImageConfig, None, ["train.learning_rate=3e-5", "finetune.method=qlora", "rewards.weights.format=0.5"])
    assert cfg.train.learning_rate == 3e-5
    assert cfg.finetune.method == "qlora"
    assert cfg.rewards.weights == {"format": 0.5}


def test_unknown_key_names_the_field_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config(ImageConfig, None, ["train.learning_rat=1e-5"])
    message = str(err.value)
    assert "train.learning_rat" in message and "learning_rate" in message


def test_out_of_range_value_names_the_bounds():
    with pytest.raises(ConfigError) as err:
        load_config(ImageConfig, None, ["finetune.r=0"])
    assert "finetune.r" in str(err.value) and ">= 1" in str(err.value)


def test_bad_choice_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        load_config(ImageConfig, None, ["finetune.method=dora"])
    assert "lora | qlora | full" in str(err.value)


def test_unknown_reward_lists_the_rewards():
    with pytest.raises(ConfigError) as err:
        load_config(ImageConfig, None, ["rewards.weights.speed=1"])
    assert "speed" in str(err.value) and "correctness" in str(err.value)


def test_generations_must_divide_the_batch():
    with pytest.raises(ConfigError) as err:
        load_config(ImageConfig, None, ["train.num_generations=3"])
    assert "num_generations" in str(err.value)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(ImageConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(ImageConfig, bad)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_shipped_yaml_validates_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("make " in first or "python -m" in first), f"{path} must start with its command"
    if path.name.startswith("schema"):
        return
    recipe = path.parent.parent.name
    if recipe == "image_vlm":
        load_config(ImageConfig, path)
    else:
        from video_vlm.config import VideoConfig

        load_config(VideoConfig, path)


def test_yaml_dump_round_trips_with_description_comments():
    cfg = load_config(ImageConfig, None, ["train.max_steps=7"])
    text = to_yaml(cfg)
    assert "# LoRA rank" in text
    assert ImageConfig.model_validate(yaml.safe_load(text)) == cfg


def test_field_specs_carry_help_and_ranges():
    rows = {row["key"]: row for row in field_specs(ImageConfig)}
    assert rows["finetune.method"]["choices"] == ("lora", "qlora", "full")
    assert rows["finetune.r"]["bounds"] == {"ge": 1, "le": 1024}
    assert rows["train.learning_rate"]["description"]
