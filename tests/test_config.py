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


# A preset names the model it is for, default or not: the reader should not need to know the recipe's default model.
NAMED_EVEN_AT_DEFAULT = {"model.name"}


def restated_defaults(cls, data: dict, path: tuple[str, ...] = (), whole: dict | None = None) -> list[str]:
    """The dotted keys of a preset's mapping whose removal leaves the validated config the same: defaults restated.

    Judged on the whole config, so a default that depends on another field (the answer-only prompt) or a
    curriculum stage's inherited value counts as what it is there.
    """
    whole = data if whole is None else whole
    reference = cls.model_validate(whole).model_dump()
    restated = []
    for key, value in list(data.items()):
        dotted = ".".join((*path, key))
        if dotted in NAMED_EVEN_AT_DEFAULT:
            continue
        node = whole
        for part in path:
            node = node[part]
        node.pop(key)
        try:
            same = cls.model_validate(whole).model_dump() == reference
        finally:
            node[key] = value
        if same:
            restated.append(dotted)
        elif isinstance(value, dict):
            restated += restated_defaults(cls, value, (*path, key), whole)
    return restated


PRESETS = [path for path in SHIPPED if not path.name.startswith("schema")]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_no_preset_restates_a_default(path):
    """A preset lists only what differs from the config's defaults (written once, in the config classes), so a
    reader sees what makes it this preset and a changed default reaches every preset."""
    cls = recipe_config("image" if path.parent.parent.name == "image_vlm" else "video")
    assert restated_defaults(cls, yaml.safe_load(path.read_text())) == []


def test_every_stage_section_hands_its_shared_fields_to_the_trainer(tmp_path):
    """GRPO, the warm start, SFT and DPO take their length, batch, optimizer, schedule and seed from one section
    (`OptimizerSection`): every field, set away from its default, reaches the stage's TRL config."""
    from core.config import OptimizerSection
    from core.dpo import dpo_arguments
    from core.runs import RunDir
    from core.stages import sft_arguments
    from image_vlm.train import grpo_arguments
    from video_vlm.config import VideoConfig

    shared = {"max_steps": 12, "num_train_epochs": 2.0, "per_device_train_batch_size": 8,
              "gradient_accumulation_steps": 3, "learning_rate": 3e-4, "lr_scheduler_type": "linear", "warmup_steps": 2,
              "optim": "sgd", "seed": 7}
    assert set(shared) == set(OptimizerSection.model_fields) - {"trainer"}
    run = RunDir(tmp_path / "run")
    # The warm start counts steps only: it has no epochs to set.
    overrides = [f"{section}.{key}={value}" for section in ("train", "warm_start", "dpo") for key, value in shared.items()
                 if (section, key) != ("warm_start", "num_train_epochs")]
    image = load_config(ImageConfig, None, [*overrides, "logging.report_to=none", "train.num_generations=4"])
    video = load_config(VideoConfig, None, [o for o in overrides if not o.startswith("warm_start")] + ["logging.report_to=none"])
    warm_start = sft_arguments(image, image.warm_start, run, tmp_path, "warm_start")
    for args in (grpo_arguments(image, run), warm_start,
                 dpo_arguments(image, image.dpo, run, tmp_path), sft_arguments(video, video.train, run, tmp_path),
                 dpo_arguments(video, video.dpo, run, tmp_path)):
        expected = {**shared, "num_train_epochs": args.num_train_epochs} if args is warm_start else shared
        assert {key: getattr(args, key) for key in shared} == expected, type(args).__name__  # TRL's enums equal names


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


# ------------------------------------------------------------------------------------------ the trainer pass-through

TRAINER_SECTIONS = [("image", "train"), ("image", "warm_start"), ("image", "dpo"), ("video", "train"), ("video", "dpo")]


def recipe_config(recipe: str):
    from video_vlm.config import VideoConfig

    return ImageConfig if recipe == "image" else VideoConfig


@pytest.mark.parametrize("recipe, section", TRAINER_SECTIONS, ids=[f"{r}:{s}" for r, s in TRAINER_SECTIONS])
@pytest.mark.parametrize("key, value", [("output_dir", "runs/other-run/checkpoints"), ("push_to_hub", "true"),
                                        ("hub_token", "hf_FAKEtoken0123"), ("save_total_limit", "1"),
                                        ("logging_dir", "/srv/other-logs"), ("report_to", "wandb"),
                                        ("deepspeed", "ds_zero3.json"), ("resume_from_checkpoint", "/srv/ckpt-7"),
                                        ("run_name", "borrowed-name")])
def test_the_trainer_pass_through_refuses_what_the_product_owns(recipe, section, key, value):
    """A key of `<section>.trainer` the product owns (where a run saves, keeps, logs and publishes) is refused on the
    command line as on the page, in one line that names the key and never echoes its value."""
    with pytest.raises(ConfigError) as refused:
        load_config(recipe_config(recipe), None, [f"{section}.trainer.{key}={value}"])
    message = str(refused.value)
    assert message.startswith(f"command line: '{section}.trainer' value error, {key}: ") and "\n" not in message
    assert len(value) < 5 or value not in message


def test_a_stage_s_trainer_is_checked_too_and_its_values_never_shown():
    from video_vlm.config import VideoConfig

    with pytest.raises(ConfigError) as refused:
        load_config(VideoConfig, None, ["stages=[{name: a, train: {trainer: {hub_token: hf_FAKEtoken0123}}}]"])
    message = str(refused.value)
    assert "stage 'a' (train overrides): 'trainer' value error, hub_token: the product's own settings" in message
    assert "hf_FAKEtoken0123" not in message and "\n" not in message


def test_the_trainer_pass_through_keeps_the_knobs_a_user_tunes():
    cfg = load_config(ImageConfig, None, ["train.trainer.weight_decay=0.1", "train.trainer.vllm_server_timeout=30",
                                          "dpo.trainer.label_smoothing=0.1", "warm_start.trainer.max_grad_norm=0.5"])
    assert cfg.train.trainer == {"weight_decay": 0.1, "vllm_server_timeout": 30}
    assert (cfg.dpo.trainer, cfg.warm_start.trainer) == ({"label_smoothing": 0.1}, {"max_grad_norm": 0.5})
    with pytest.raises(ConfigError, match=r"'train.trainer' value error, seed: a field of this section, set it there"):
        load_config(ImageConfig, None, ["train.trainer.seed=3"])
    with pytest.raises(ConfigError, match=r"weight_decy: not a knob this trainer passes through; allowed: adam_beta1"):
        load_config(ImageConfig, None, ["dpo.trainer.weight_decy=0.1"])


def test_every_allowed_knob_is_an_argument_of_its_trl_config():
    """The allowlist names real arguments of the installed TRL (a renamed one would fail only at launch, in TRL)."""
    import dataclasses
    import fnmatch

    from trl import DPOConfig, GRPOConfig, SFTConfig

    from core.config import DPO_KNOBS, GRPO_KNOBS, PRODUCT_ARGUMENTS, SFT_KNOBS, looks_secret

    for args_cls, knobs in ((GRPOConfig, GRPO_KNOBS), (SFTConfig, SFT_KNOBS), (DPOConfig, DPO_KNOBS)):
        fields = {field.name for field in dataclasses.fields(args_cls)}
        assert [k for k in knobs if not any(fnmatch.fnmatchcase(f, k) for f in fields)] == [], args_cls.__name__
        owned = [k for k in knobs if looks_secret(k) or any(fnmatch.fnmatchcase(k, p) for p in PRODUCT_ARGUMENTS)]
        assert owned == [], f"{args_cls.__name__}: {owned} are the product's own"


# ---------------------------------------------------------------------------------------------- secrets on disk

SECRET = "hf_FAKEtoken0123456789abcdef"


def test_secret_looking_values_are_redacted_wherever_a_config_is_written(tmp_path, monkeypatch):
    """The run's launch.yaml (page), config.yaml (command line, the same to_yaml) and the page's saved form: a value
    under a key that names a credential is never written, whatever let it into the config."""
    from conftest import fake_popen
    from core.config import redact_secrets
    from core.runs import RunDir
    from image_vlm.config import GRPOSection
    from ui.recipes import IMAGE, save_form, saved_form_path, start_training

    assert redact_secrets({"a": {"hub_token": SECRET, "max_new_tokens": 8}, "b": [{"wandb_api_key": SECRET}]}) == {
        "a": {"hub_token": "<redacted>", "max_new_tokens": 8}, "b": [{"wandb_api_key": "<redacted>"}]}
    data, runs = tmp_path / "data", tmp_path / "runs"
    (data / "set").mkdir(parents=True)
    monkeypatch.setenv("VLM_DATA_DIR", str(data))
    monkeypatch.setenv("VLM_RUNS_DIR", str(runs))
    monkeypatch.setattr("core.launch.subprocess.Popen", fake_popen([]))
    cfg = ImageConfig(data={"root": str(data / "set")})
    # Built without validation: the allowlist refuses such keys, so this stands for anything that slips past it.
    trainer = {"wandb_api_key": SECRET, "weight_decay": 0.1}
    cfg.train = GRPOSection.model_construct(**{**dict(cfg.train), "trainer": trainer})
    run, _ = start_training(IMAGE, cfg)
    launch = (run.path / "launch.yaml").read_text()
    assert SECRET not in launch
    assert yaml.safe_load(launch)["train"]["trainer"] == {"wandb_api_key": "<redacted>", "weight_decay": 0.1}
    config_yaml = RunDir(tmp_path / "cli-run")
    config_yaml.write_config(to_yaml(cfg))  # what core.cli writes as the run's config.yaml
    assert SECRET not in config_yaml.config_path.read_text()
    save_form(IMAGE, "tiny", cfg.model_dump(mode="json"))
    assert SECRET not in saved_form_path(IMAGE).read_text()


def test_a_broken_config_file_is_named_by_line_never_quoted(tmp_path):
    """PyYAML's own message quotes the broken line: for a file that was never a config (a token file), the secret."""
    path = tmp_path / "config.yaml"
    path.write_text(f"model:\n  name: {SECRET}: x\n")
    with pytest.raises(ConfigError) as bad:
        load_config(ImageConfig, path)
    column = len("  name: " + SECRET) + 1
    assert str(bad.value) == f"{path}: not valid YAML at line 2, column {column} (mapping values are not allowed here)"
    path.write_text(f"model: *{SECRET}\n")
    with pytest.raises(ConfigError) as bad:
        load_config(ImageConfig, path)
    assert str(bad.value) == f"{path}: not valid YAML at line 1, column 8 (found undefined alias …)"
    path.write_bytes(b"\xff\xfe" + SECRET.encode("utf-16-le"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(ImageConfig, path)
