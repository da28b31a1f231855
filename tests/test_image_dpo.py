"""DPO for images: pairs ranked by the recipe's own rewards, a user's pairs file checked line by line, and the tiny
preset, stopped once in each stage and relaunched, beating the warm start it began from on held-out images."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, StopAfter, launch_run, stop_in_stage
from core.config import ConfigError
from core.preference import finish_pairs, read_pairs, sample_pairs
from core.runs import RunDir
from image_vlm.config import ImageConfig

TINY_DPO = "image_vlm/configs/tiny_dpo.yaml"
YES, NO = "<SOLUTION>Yes</SOLUTION>", "<SOLUTION>No</SOLUTION>"


def started_run(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_status("starting")
    return run


def prompts(n: int) -> list[dict]:
    return [{"prompt_id": f"img{i}.png", "image_path": f"img{i}.png", "answer": "Yes" if i % 2 else "No"} for i in range(n)]


def test_pairs_are_ranked_by_the_recipes_own_scorer(tmp_path, monkeypatch):
    import image_vlm.pairs as pairs

    cfg = ImageConfig(method="dpo", data={"reasoning": False}, pairs={"samples_per_prompt": 3})
    answers = [YES, "Yes", NO]
    sampled = {}

    def sampler(cfg, model, processor):
        def sample(batch):
            sampled.setdefault("batches", []).append([p["prompt_id"] for p in batch])
            return [list(answers) for _ in batch]
        return sample

    class Model:
        def eval(self):
            return self

    monkeypatch.setattr(pairs, "answer_sampler", sampler)
    # The recipe's scorer as it ships: the weighted rewards. For an image whose answer is Yes, YES scores format +
    # 2 x correctness = 3, the bare "Yes" 0 and NO 1: YES is chosen, the bare answer rejected.
    run = started_run(tmp_path)
    # A task row's image_path is joined onto the dataset root; the pairs line keeps it relative to the root.
    row = {"image_path": f"{cfg.data.root}/train/a.png", "answer": "Yes", "label": "x"}
    summary = pairs.run_pairs_stage(cfg, run, StopAfter(), None, Model(), [row])
    (line,) = [json.loads(text) for text in run.pairs_path.read_text().splitlines()]
    assert (line["chosen"], line["rejected"], line["chosen_score"], line["rejected_score"]) == (YES, "Yes", 3.0, 0.0)
    assert line["image_path"] == "train/a.png" and line["model"] == cfg.model.name and summary.pairs == 1

    # A substituted scorer decides instead: here the longest answer wins, so the ranking follows it, not the rewards.
    monkeypatch.setattr(pairs, "weighted_reward", lambda weights, completions, **columns: [float(len(c)) for c in completions])
    run = RunDir(tmp_path / "second")
    run.path.mkdir()
    pairs.run_pairs_stage(cfg, run, StopAfter(), None, Model(), [{"image_path": "a.png", "answer": "Yes", "label": "x"}])
    (line,) = [json.loads(text) for text in run.pairs_path.read_text().splitlines()]
    assert (line["chosen"], line["rejected"]) == (YES, "Yes")  # 24 characters against 3
    assert line["margin"] == len(YES) - len("Yes")


def test_pairs_stage_stops_between_batches_and_continues_where_it_stopped(tmp_path):
    run = started_run(tmp_path)
    calls: list[list[str]] = []

    def sample(batch):
        calls.append([p["prompt_id"] for p in batch])
        return [["good", "bad"] for _ in batch]

    def score(prompt, texts):
        return [1.0 if t == "good" else 0.0 for t in texts]

    # Every second prompt shows no contrast: its answers all score the same.
    def flat_for_odd(prompt, texts):
        return [0.5, 0.5] if int(prompt["prompt_id"][3]) % 2 else score(prompt, texts)

    arguments = dict(batch_size=2, samples_per_prompt=2, temperature=1.0, model="m")
    assert sample_pairs(run, StopAfter(after=2), prompts(6), sample, flat_for_odd, **arguments) is None
    assert len(calls) == 2 and not run.pairs_path.exists()
    assert len(run.candidates_path.read_text().splitlines()) == 4
    summary = sample_pairs(run, StopAfter(), prompts(6), sample, flat_for_odd, **arguments)
    assert calls[2:] == [["img4.png", "img5.png"]]  # only what the stop left
    assert (summary.prompts, summary.pairs, summary.no_contrast, summary.mean_margin) == (6, 3, 3, 1.0)
    assert run.read_status()["step"] == 6 and run.read_status()["total"] == 6


def test_no_contrast_stops_with_one_line_naming_what_to_change(tmp_path):
    run = started_run(tmp_path)
    with pytest.raises(ConfigError) as error:
        sample_pairs(run, StopAfter(), prompts(3), lambda batch: [["a", "b"] for _ in batch], lambda p, t: [1.0, 1.0],
                     batch_size=4, samples_per_prompt=2, temperature=0.7, model="m")
    message = str(error.value)
    assert "all 3 prompts" in message and "pairs.samples_per_prompt, now 2" in message and "pairs.temperature, now 0.7" in message
    assert "\n" not in message
    with pytest.raises(ConfigError):
        finish_pairs(run, 2, 0.7, "m")


def test_a_users_pairs_file_is_checked_line_by_line(tmp_path, wildfire_synthetic):
    from image_vlm.pairs import training_pairs

    image = next((wildfire_synthetic / "train" / "wildfire").glob("*.png"))
    good = {"image_path": str(image.relative_to(wildfire_synthetic)), "chosen": YES, "rejected": NO}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "rejected": ""}),
        json.dumps({**good, "rejected": YES}),
        json.dumps({**good, "image_path": "missing.png"}),
        json.dumps({"chosen": YES, "rejected": NO}),
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = ImageConfig(method="dpo", data={"root": str(wildfire_synthetic)}, pairs={"file": str(path)})
    checked = read_pairs(path, lambda line: None if "image_path" in line else "no image_path", model=cfg.model.name)
    assert [p["chosen"] for p in checked.pairs] == [YES, YES]  # the media check is the recipe's: here a lenient one
    used = training_pairs(cfg, RunDir(tmp_path / "run"))
    # Stored as metadata is, relative to the dataset root: the run's pairs.jsonl reads from any working folder.
    assert len(used) == 1 and used[0]["image_path"] == str(image.relative_to(wildfire_synthetic))
    problems = read_pairs(path, lambda line: None, model=cfg.model.name).problems
    assert [p.split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "rejected must be a non-empty string" in problems[1] and "the same text" in problems[2]

    path.write_text("{not json\n" + json.dumps({**good, "image_path": "missing.png"}) + "\n")
    with pytest.raises(ConfigError, match=r"has no usable line \(2 bad\)"):
        training_pairs(cfg, RunDir(tmp_path / "run"))

    path.write_text(json.dumps({**good, "model": "Qwen/Qwen3-VL-8B-Instruct"}) + "\n")
    with pytest.raises(ConfigError) as error:
        training_pairs(cfg, RunDir(tmp_path / "run"))
    assert "Qwen/Qwen3-VL-8B-Instruct" in str(error.value) and cfg.model.name in str(error.value)


def test_a_pairs_file_with_no_usable_line_stops_before_any_weights_load(tmp_path, wildfire_synthetic, capsys):
    from image_vlm import train

    path = tmp_path / "bad.jsonl"
    path.write_text('{"chosen": "a"}\n')
    code = train.main(["--config", TINY_DPO, "--run-dir", str(tmp_path / "run"), f"data.root={wildfire_synthetic}",
                       f"pairs.file={path}"])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"pairs file {path} has no usable line" in err and "rejected must be a non-empty string" in err
    assert "trainable parameters" not in out  # neither the warm start nor DPO loaded a model


def test_a_users_pairs_file_trains_lora_dpo_against_the_adapter_off_model(tmp_path, wildfire_synthetic, capsys):
    from image_vlm import train

    images = sorted((wildfire_synthetic / "train").glob("*/*.png"))[::12][:4]
    path = tmp_path / "mine.jsonl"
    lines = [json.dumps({"image_path": str(image), "chosen": YES, "rejected": NO}) for image in images]
    path.write_text("\n".join(lines + ['{"image_path": "gone.png", "chosen": "a", "rejected": "b"}']) + "\n")
    run = RunDir(tmp_path / "run")
    code = train.main([
        "--config", TINY_DPO, "--run-dir", str(run.path), f"data.root={wildfire_synthetic}", f"pairs.file={path}",
        "warm_start.enabled=false", "finetune.method=lora", "finetune.r=8", "finetune.alpha=16",
        "dpo.max_steps=2", "dpo.per_device_train_batch_size=2", "logging.save_steps=1000",
    ])
    out = capsys.readouterr().out
    assert code == 0 and run.read_status()["state"] == "finished"
    assert f"{path}:5: image" in out and "cannot be read" in out  # reported, never trained on
    assert f"training on 4 pairs from {path}" in out
    kept = [json.loads(line) for line in run.pairs_path.read_text().splitlines()]
    assert [Path(p["image_path"]) for p in kept] == images  # the run folder records what DPO trained on
    assert (run.path / "adapter" / "adapter_config.json").exists() and not (run.path / "model").exists()
    # A fresh adapter starts as the base model, and the reference is the model with its adapter off: at the first
    # step the policy and the reference agree exactly, so DPO's implicit rewards are 0.
    first = next(m for m in run.read_metrics() if "rewards/chosen" in m)
    assert first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0

    # The pairs CLI samples with this finished run's weights (`--from`). Two DPO steps from random weights still
    # write no tag, so every answer scores 0: the stage stops with the one line that says what to change.
    from image_vlm import pairs

    common = ["--config", TINY_DPO, f"data.root={wildfire_synthetic}", "warm_start.enabled=false", "finetune.method=lora",
              "pairs.max_prompts=4", "pairs.batch_size=4", "--from", str(run.path)]
    assert pairs.main(["--run-dir", str(tmp_path / "pairs"), *common]) == 2
    out, err = capsys.readouterr()
    assert f"sampling with {run.path / 'adapter'}" in out
    assert "no preference pair: the answers of all 4 prompts scored the same" in err and "pairs.samples_per_prompt" in err
    # Another base model than the source run's is refused, naming both.
    assert pairs.main(["--run-dir", str(tmp_path / "other"), *common, "model.name=tiny:qwen3_vl"]) == 2
    err = capsys.readouterr().err
    assert "trained model tiny:qwen2_5_vl, but this config trains tiny:qwen3_vl" in err


def test_a_source_run_with_the_warm_start_on_is_refused_before_anything_trains(tmp_path, capsys):
    """DPO from `pairs.source_run` starts from that run's weights; a warm start before it would train for nothing."""
    from image_vlm import train

    run = RunDir(tmp_path / "run")
    assert train.main(["--config", TINY_DPO, "--run-dir", str(run.path), "pairs.source_run=runs/earlier"]) == 2
    err = capsys.readouterr().err
    assert "pairs.source_run (runs/earlier) starts DPO from that run's weights, so the warm_start stage(s)" in err
    assert not run.metrics_path.exists()


@pytest.mark.parametrize("recipe", ["image", "video"])
def test_the_pairs_cli_refuses_a_pairs_file_before_the_run_folder_or_the_data(recipe, tmp_path, capsys):
    """`python -m <recipe>.pairs` samples new pairs: with `pairs.file` set they exist already, so the command stops
    in one line before it makes a run folder or reads the data."""
    import importlib

    pairs = importlib.import_module(f"{recipe}_vlm.pairs")
    run = RunDir(tmp_path / "run")
    assert pairs.main(["--run-dir", str(run.path), "pairs.file=mine.jsonl", f"data.root={tmp_path / 'nothing'}"]) == 2
    err = capsys.readouterr().err
    assert "error: pairs.file is set (mine.jsonl): these pairs exist already; drop pairs.file to sample new ones" in err
    assert not run.path.exists()


def launch(run: RunDir, workdir: Path) -> subprocess.Popen:
    """The preset as the README runs it, with its own relative data.root, from `workdir` (the test's own folder,
    where the synthetic images are generated)."""
    return launch_run("image_vlm.train", run.path, "--config", str(ROOT / TINY_DPO), "pairs.batch_size=2", cwd=workdir)


def stop_in(run: RunDir, workdir: Path, stage: str, min_step: int) -> None:
    stop_in_stage(lambda: launch(run, workdir), run, stage, min_step)


@pytest.mark.slow
def test_tiny_dpo_preset_stopped_in_each_stage_beats_its_warm_start(tmp_path):
    from image_vlm.evaluate import evaluate

    run, data = RunDir(tmp_path / "image-dpo"), tmp_path
    stop_in(run, data, "pairs", 2)
    sampled = len(run.candidates_path.read_text().splitlines())
    assert 0 < sampled < run.read_status()["total"] and not run.pairs_path.exists()

    stop_in(run, data, "dpo", 3)
    log = (tmp_path / "image-dpo.log").read_text()
    assert f"{sampled} of " in log and "prompts sampled earlier; continuing" in log
    assert run.newest_weights().parent == run.checkpoints_dir / "dpo"  # a DPO checkpoint, where the relaunch resumes

    proc = launch(run, data)
    assert proc.wait(timeout=900) == 0
    status = run.read_status()
    assert status["state"] == "finished" and status["stage"] == "dpo", status
    assert "resuming from" in (tmp_path / "image-dpo.log").read_text().split("prompts sampled earlier")[-1]

    metrics = [m for m in run.read_metrics() if m.get("stage") == "dpo" and "loss" in m]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(metrics[-1])
    assert [m["step"] for m in metrics] == list(range(1, status["total"] + 1))  # each step once across the relaunches
    summary = json.loads((run.path / "pairs_summary.json").read_text())
    assert run.read_config()["data"]["root"] == str(tmp_path / "data" / "synthetic-wildfire"), "the preset's relative root, recorded absolute"
    assert summary["pairs"] >= 20 and summary["prompts"] == summary["pairs"] + summary["no_contrast"]

    report = evaluate(run, baseline="warm_start")
    start, tuned = report["models"]["base"]["accuracy"], report["models"]["tuned"]["accuracy"]
    assert report["baseline"] == "warm_start"
    assert tuned >= start + 0.2, f"DPO: held-out accuracy {start:.3f} at the warm start, {tuned:.3f} after"

    # The compare view answers with the DPO run's weights, as for any other method; full fine-tuning answers from
    # its own model/ folder, the same Yes or No as evaluation's greedy answer.
    from conftest import last
    from image_vlm.rewards import parse_solution
    from ui.compare_models import image_messages, load_compare_model, stream_answer

    artifact = run.final_artifact()
    loaded = load_compare_model("image", run.id, str(run.path), str(artifact), artifact.stat().st_mtime)
    example = next(e for e in report["examples"] if e["tuned"].count("<SOLUTION>") == 1)
    answer = last(stream_answer(loaded, image_messages(loaded.config, Path(example["image_path"])), use_adapter=True))
    assert parse_solution(answer) == parse_solution(example["tuned"])
    load_compare_model.clear()



@pytest.mark.parametrize("kind", ["qwen2_5_vl", "gemma4"])
def test_dpo_scores_answers_after_the_prompt_they_were_sampled_from(kind, wildfire_synthetic):
    """TRL's collator gets the generation prompt the pairs were sampled after (GRPO's and evaluation's) and answers
    between the template's affixes. Left to TRL, a conversational prompt is cut where the template's past-answer form
    departs from its generation prompt: for Gemma 4 (thinking off), before its empty thought channel."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from core.config import ModelSection
    from core.generation import build_inputs
    from core.media.image import open_image
    from core.models import load_processor
    from image_vlm.pairs import pairs_dataset
    from image_vlm.task import image_size_arguments, prompt_messages

    cfg = ImageConfig(method="dpo", model={"name": f"tiny:{kind}"}, data={"root": str(wildfire_synthetic), "max_pixels": 3136})
    processor = load_processor(cfg.model, **image_size_arguments(ModelSection(name=cfg.model.name), 3136))
    image = next((wildfire_synthetic / "train" / "wildfire").glob("*.png"))
    dataset = pairs_dataset(cfg, [{"image_path": str(image.relative_to(wildfire_synthetic)), "chosen": YES, "rejected": NO}],
                            processor)
    batch = DataCollatorForVisionPreference(processor)([dict(row) for row in dataset])
    expected = build_inputs(processor, [prompt_messages(cfg.data, open_image(image))])["input_ids"][0].tolist()
    row = list(zip(batch["input_ids"][0].tolist(), batch["attention_mask"][0].tolist(), batch["completion_mask"][0].tolist()))
    prompt = [token for token, seen, completion in row if seen and not completion]
    assert prompt == expected, processor.tokenizer.decode(prompt)
    chosen = processor.tokenizer.decode([token for token, _, completion in row if completion])
    assert chosen.startswith(YES) and chosen.rstrip().endswith("<turn|>" if kind == "gemma4" else "<|im_end|>"), chosen
