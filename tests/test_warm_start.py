"""The image recipe's SFT warm start: its targets and batches, the user's JSONL of targets, budgets the data
cannot fill, and a run that stops and resumes inside either stage with one run folder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import launch_run, stop_in_stage
from core.config import load_config
from core.runs import RunDir
from image_vlm import train as image_train
from image_vlm import warm_start
from image_vlm.config import ImageConfig, ImageDataSection, WarmStartSection
from image_vlm.warm_start import WarmStartCollator, read_warm_start_jsonl, target_text

TINY = "image_vlm/configs/tiny.yaml"


# ------------------------------------------------------------------------------------------- the JSONL


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_a_warm_start_jsonl_is_checked_line_by_line(tmp_path, wildfire_synthetic):
    fire = sorted((wildfire_synthetic / "train" / "wildfire").iterdir())[0]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    path = write_jsonl(tmp_path / "warm.jsonl", [
        {"image": str(fire), "answer": "yes", "reasoning": "A red patch."},   # 1: good (answer case-folded)
        {"image": str(fire), "label": "nowildfire"},                         # 2: good (a class name)
        "{not json",                                                        # 3
        ["a", "list"],                                                      # 4
        {"answer": "Yes"},                                                  # 5: no image
        {"image": "missing.png", "answer": "Yes"},                          # 6
        {"image": str(fire), "answer": "Maybe"},                            # 7
        {"image": str(fire), "label": "smoke"},                             # 8
        {"image": "broken.png", "answer": "No"},                            # 9
        {"image": str(fire)},                                               # 10: no answer
        {"image": str(fire), "answer": "No", "reasoning": 3},               # 11
    ])
    report = read_warm_start_jsonl(path, ImageDataSection(root=str(wildfire_synthetic)))
    assert [(row["answer"], row["reasoning"]) for row in report.rows] == [("Yes", "A red patch."), ("No", "")]
    assert [(p.line_no, p.kind) for p in report.problems] == [
        (3, "malformed_json"), (4, "not_an_object"), (5, "missing_field"), (6, "missing_image"),
        (7, "unknown_label"), (8, "unknown_label"), (9, "unreadable_image"), (10, "missing_field"), (11, "bad_reasoning"),
    ]
    assert all(p.message.startswith(f"line {p.line_no}: ") for p in report.problems)
    assert "2 valid line(s) of 11; 9 problem(s)" in report.summary()


def test_a_warm_start_jsonl_from_a_windows_editor_reads_line_1(tmp_path, wildfire_synthetic):
    """A byte-order mark is not part of line 1's JSON (the same reader as the video metadata's)."""
    fire = sorted((wildfire_synthetic / "train" / "wildfire").iterdir())[0]
    path = tmp_path / "warm.jsonl"
    path.write_text(json.dumps({"image": str(fire), "answer": "Yes"}) + "\n", encoding="utf-8-sig")
    report = read_warm_start_jsonl(path, ImageDataSection(root=str(wildfire_synthetic)))
    assert not report.problems and len(report.rows) == 1


def test_bad_warm_start_lines_never_reach_training(tmp_path, wildfire_synthetic, capsys):
    fire = sorted((wildfire_synthetic / "train" / "wildfire").iterdir())[0]
    path = write_jsonl(tmp_path / "warm.jsonl", [{"image": str(fire), "answer": "Yes"}, {"image": "gone.png", "answer": "No"}, "oops"])
    cfg = load_config(ImageConfig, TINY, [f"data.root={wildfire_synthetic}", f"warm_start.jsonl={path}", "warm_start.per_device_train_batch_size=1"])
    rows = warm_start.warm_start_rows(cfg, [])
    assert [row["image_path"] for row in rows] == [str(fire)]
    out = capsys.readouterr().out
    assert "skipped [missing_image] line 2: gone.png: no such file" in out and "skipped [malformed_json] line 3" in out


def error_lines(stderr: str) -> list[str]:
    """The error lines of stderr (the dataset check's progress bar also writes there)."""
    return [line for line in stderr.splitlines() if line.startswith("error")]


def test_a_warm_start_jsonl_without_a_usable_line_refuses_the_launch(tmp_path, wildfire_synthetic, capsys):
    path = write_jsonl(tmp_path / "warm.jsonl", ["oops", {"image": "gone.png", "answer": "No"}])
    code = image_train.main(["--config", TINY, "--run-dir", str(tmp_path / "run"), f"data.root={wildfire_synthetic}",
                             f"warm_start.jsonl={path}"])
    assert code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "warm_start.jsonl" in err[0] and "no usable line" in err[0], err


# ------------------------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("override, words", [
    ("warm_start.max_steps=0", ["'warm_start.max_steps'", ">= 1"]),
    ("warm_start.max_samples=500", ["warm_start.max_samples (500)", "data.max_train_samples is 96"]),
])
def test_a_warm_start_budget_out_of_range_is_a_one_line_config_error(tmp_path, override, words, capsys):
    code = image_train.main(["--config", TINY, "--run-dir", str(tmp_path / "run"), override])
    assert code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "run").exists()


def test_a_warm_start_larger_than_the_dataset_is_refused_before_loading_weights(tmp_path, wildfire_synthetic, capsys):
    # 24 images per class: 48 training rows, fewer than asked for (and than data.max_train_samples allows).
    code = image_train.main(["--config", TINY, "--run-dir", str(tmp_path / "run"), f"data.root={wildfire_synthetic}",
                             "warm_start.max_samples=60"])
    assert code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "warm_start.max_samples (60) is larger than the training split" in err[0] and "48" in err[0], err


# ------------------------------------------------------------------------------------------- targets and batches


def test_targets_follow_the_reasoning_toggle():
    assert target_text("Yes", "I see.") == "<REASONING>I see.</REASONING><SOLUTION>Yes</SOLUTION>"
    assert target_text("Yes", "I see.", reasoning=False) == "<SOLUTION>Yes</SOLUTION>"
    data = ImageConfig.model_validate({"data": {"reasoning": False}}).data
    assert "<REASONING>" not in data.system_prompt and "<SOLUTION>" in data.system_prompt


@pytest.fixture(scope="module")
def qwen_processor():
    from core.config import ModelSection
    from core.models import load_processor
    from image_vlm.task import image_size_arguments

    return load_processor(ModelSection(name="tiny:qwen2_5_vl"), **image_size_arguments(ModelSection(name="tiny:qwen2_5_vl"), 3136))


def supervised_texts(processor, batch) -> list[str]:
    return [processor.tokenizer.decode([t for t in row.tolist() if t != -100]) for row in batch["labels"]]


@pytest.mark.parametrize("reasoning", [True, False])
def test_the_collator_supervises_only_the_target(qwen_processor, wildfire_synthetic, reasoning):
    from image_vlm.task import task_rows
    from image_vlm.warm_start import template_rows

    data = ImageDataSection(root=str(wildfire_synthetic), max_pixels=3136, reasoning=reasoning)
    rows = template_rows(task_rows(data, "train"))[:4]
    batch = WarmStartCollator(qwen_processor, data, WarmStartSection(answers="labels"))(rows)
    assert {"input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"} <= set(batch)
    for text, row in zip(supervised_texts(qwen_processor, batch), rows):
        # The target and the end of turn, nothing of the prompt.
        assert text.startswith(target_text(row["answer"], "I see.", reasoning)) and "<|im_end|>" in text, text
        assert "Fire" not in text and "system" not in text


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "gemma3", "gemma4"])
def test_the_target_follows_the_prompt_generation_continues_from(kind, wildfire_synthetic):
    """The warm start teaches each target right after the very prompt GRPO and evaluation generate from. Gemma 4's
    (thinking off) ends in an empty thought channel that its past answers do not show: trained on the template's
    history form, the model would learn to answer where it is never asked, and the labels would be cut."""
    from core.config import ModelSection
    from core.generation import answer_affixes, build_inputs
    from core.models import load_processor
    from image_vlm.task import image_size_arguments, prompt_messages, task_rows
    from image_vlm.warm_start import template_rows

    model = ModelSection(name=f"tiny:{kind}")
    processor = load_processor(model, **image_size_arguments(model, 3136))
    data = ImageDataSection(root=str(wildfire_synthetic), max_pixels=3136)
    rows = template_rows(task_rows(data, "train"))[:2]
    batch = WarmStartCollator(processor, data, WarmStartSection(answers="labels"))(rows)
    _, end = answer_affixes(processor)
    for index, row in enumerate(rows):
        from core.media.image import open_image

        prompt = build_inputs(processor, [prompt_messages(data, open_image(row["image_path"]))])["input_ids"][0].tolist()
        ids = [t for t, m in zip(batch["input_ids"][index].tolist(), batch["attention_mask"][index].tolist()) if m]
        assert ids[: len(prompt)] == prompt, processor.tokenizer.decode(ids)
        supervised = processor.tokenizer.decode([t for t in batch["labels"][index].tolist() if t != -100])
        assert supervised.rstrip() == target_text(row["answer"], "I see.", True) + end, supervised


def test_random_answers_are_coin_flips_drawn_afresh(qwen_processor, wildfire_synthetic):
    from image_vlm.task import task_rows
    from image_vlm.warm_start import template_rows

    data = ImageDataSection(root=str(wildfire_synthetic), max_pixels=3136)
    rows = template_rows([r for r in task_rows(data, "train") if r["answer"] == "Yes"])[:4]
    collator = WarmStartCollator(qwen_processor, data, WarmStartSection(answers="random", seed=0))
    answers = [text.split("<SOLUTION>")[1].split("</SOLUTION>")[0] for _ in range(8) for text in supervised_texts(qwen_processor, collator(rows))]
    # Every image is a wildfire, yet the targets say Yes and No about equally: the warm start teaches no answer.
    assert 8 <= answers.count("No") <= 24, answers


# ------------------------------------------------------------------------------------------- stages in one run folder


# Enough warm-start steps to teach the format (and to land a stop in), enough GRPO steps to stop past a
# checkpoint and resume to the end; every step more is minutes across three launches on a busy CPU.
WARM_STEPS, GRPO_STEPS = 100, 20
STAGED = (
    f"warm_start.max_steps={WARM_STEPS}", "warm_start.per_device_train_batch_size=8", f"train.max_steps={GRPO_STEPS}",
    "train.per_device_train_batch_size=4", "train.max_completion_length=24",
    "logging.save_steps=5", "data.max_train_samples=32",
)


def launch(run: RunDir, data: Path) -> subprocess.Popen:
    return launch_run("image_vlm.train", run.path, "--config", TINY, f"data.root={data}", *STAGED)


def stop_in(run: RunDir, data: Path, stage: str) -> None:
    """Launch (or relaunch) the run, ask it to stop once `stage` has logged a few steps, and wait for the end."""
    stop_in_stage(lambda: launch(run, data), run, stage, 6, timeout_s=300)


@pytest.mark.slow
def test_stop_and_resume_inside_either_stage(tmp_path, wildfire_synthetic):
    """Stopped in the warm start, the relaunch resumes it from its checkpoint; stopped in GRPO, the next relaunch
    skips the finished warm start and resumes GRPO. Every metric line names its stage, once per step."""
    run = RunDir(tmp_path / "staged")
    stop_in(run, wildfire_synthetic, "warm_start")
    warm_checkpoints = list((run.checkpoints_dir / "warm_start").glob("checkpoint-*"))
    assert warm_checkpoints and run.stage_artifact("warm_start") is None

    stop_in(run, wildfire_synthetic, "grpo")
    assert run.stage_artifact("warm_start") is not None and list((run.checkpoints_dir / "grpo").glob("checkpoint-*"))

    proc = launch(run, wildfire_synthetic)
    assert proc.wait(timeout=600) == 0
    log = (run.path.parent / f"{run.id}.log").read_text()
    assert "resuming from" in log and "[warm_start] finished earlier" in log
    status = run.read_status()
    assert status["state"] == "finished" and status["stage"] == "grpo" and status["stages"] == ["warm_start", "grpo"]
    # The preset fine-tunes in full (a LoRA on the 2-layer tiny model does not learn the tags in minutes).
    assert status["step"] == GRPO_STEPS and (run.model_dir / "config.json").exists()
    lines = [m for m in run.read_metrics() if "loss" in m]
    assert {m.get("stage") for m in lines} == {"warm_start", "grpo"}
    for stage, steps in (("warm_start", WARM_STEPS), ("grpo", GRPO_STEPS)):
        logged = [m["step"] for m in lines if m["stage"] == stage]
        assert logged == list(range(1, steps + 1)), (stage, logged)
    # GRPO started from the warm start: the format is there from its first step.
    first = next(m for m in lines if m["stage"] == "grpo")
    assert first["rewards/format_reward/mean"] > 0.5
