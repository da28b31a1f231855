"""The video SFT collator: the loss sees the answer only, unknown fields are masked, batches pad to their
longest sample, bad clips are skipped and counted, and an over-long sample refuses the launch."""

from __future__ import annotations

import json

import pytest
import torch

from core.generation import answer_affixes, build_inputs
from core.models import load_processor
from video_vlm.collator import IGNORE_INDEX, VideoDPOCollator, VideoSFTCollator
from video_vlm.config import VideoConfig, VideoDataSection
from video_vlm.schema import UNKNOWN, load_schema
from video_vlm.task import clip_frames, item_row, prompt_messages, row_item, verified_items
from video_vlm.token_budget import budget_problem, token_budget

TINY_CONFIG = "video_vlm/configs/tiny.yaml"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    from video_vlm.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("dashcam") / "data", n=10, seed=0)


@pytest.fixture(scope="module")
def data(dataset_root) -> VideoDataSection:
    return VideoDataSection(root=str(dataset_root), num_frames=4, frame_max_side=56)


@pytest.fixture(scope="module")
def schema():
    return load_schema(None)


@pytest.fixture(scope="module")
def processor():
    return load_processor(VideoConfig(model={"name": "tiny:internvl"}).model)


@pytest.fixture(scope="module")
def rows(data, schema) -> list[dict]:
    report = verified_items(data, schema)
    return [item_row(item, report.root) for item in report.items]


def supervised_text(processor, labels: torch.Tensor) -> str:
    return processor.tokenizer.decode(labels[labels != IGNORE_INDEX])


@pytest.mark.parametrize("kind, affixes", [
    ("qwen3_vl", ("", "<|im_end|>")), ("smolvlm2", (" ", "<end_of_utterance>")), ("gemma3", ("", "<end_of_turn>")),
    # Gemma 4's generation prompt (thinking off) ends in an empty thought channel its past answers do not show: the
    # answer still ends with the template's own end of turn, not the tokenizer's <eos>.
    ("gemma4", ("", "<turn|>")),
])
def test_answer_affixes_come_from_each_familys_template(kind, affixes):
    """SmolVLM2's generation prompt ends "Assistant:" and its answers follow a space: the label must start with it,
    or the model is taught a token sequence it never generates after the prompt."""
    from core.config import ModelSection
    from core.models import load_processor

    assert answer_affixes(load_processor(ModelSection(name=f"tiny:{kind}"))) == affixes


def test_labels_are_exactly_the_answer_and_the_end_token(processor, data, schema, rows):
    collator = VideoSFTCollator(processor, data, schema, max_length=1024)
    batch = collator(rows[:2])
    assert answer_affixes(processor) == ("", "<|im_end|>")
    for index, row in enumerate(rows[:2]):
        labels = batch["labels"][index]
        expected = schema.render_label(json.loads(row["label"])) + "<|im_end|>"
        assert supervised_text(processor, labels) == expected
        kept = labels != IGNORE_INDEX
        assert torch.equal(labels[kept], batch["input_ids"][index][kept])  # unshifted: the model shifts


def test_the_training_prompt_is_the_inference_prompt(processor, data, schema, rows):
    """Same frames, same template, same tokens: training sees what inference will show the model."""
    collator = VideoSFTCollator(processor, data, schema, max_length=1024)
    sample = collator.encode(rows[0])
    item = row_item(rows[0])
    inference = build_inputs(processor, [prompt_messages(data, schema, video=clip_frames(item, data.root, data))])
    assert sample["input_ids"][: sample["prompt_length"]] == inference["input_ids"][0].tolist()
    assert torch.equal(sample["media"]["pixel_values"], inference["pixel_values"])
    assert inference["pixel_values"].shape[0] == data.num_frames


def test_unknown_fields_are_masked_from_the_loss(processor, data, schema, rows):
    label = json.loads(rows[0]["label"])
    partial = {**label, "caption": UNKNOWN, "rule_violations": UNKNOWN}
    row = {**rows[0], "label": json.dumps(partial)}
    collator = VideoSFTCollator(processor, data, schema, max_length=1024)
    full_labels = collator([rows[0]])["labels"][0]
    labels = collator([row])["labels"][0]
    text = supervised_text(processor, labels)
    assert UNKNOWN not in text
    for known in ("event_type", "intended_action", "traffic_density", "visibility", "scene"):
        assert f'"{known}": {json.dumps(label[known])}' in text
    assert '{"caption":' in text and '"rule_violations":' in text  # keys stay supervised
    assert label["caption"] not in text
    assert text.endswith("<|im_end|>")
    assert (labels != IGNORE_INDEX).sum() < (full_labels != IGNORE_INDEX).sum()


def test_batches_pad_to_their_longest_sample_not_to_max_length(processor, data, schema, rows):
    short_row = min(rows, key=lambda r: len(r["label"]))
    long_row = max(rows, key=lambda r: len(r["label"]))
    collator = VideoSFTCollator(processor, data, schema, max_length=1024)
    lengths = [len(collator.encode(r)["input_ids"]) for r in (short_row, long_row)]
    assert lengths[0] < lengths[1]
    batch = collator([short_row, long_row])
    assert batch["input_ids"].shape == (2, lengths[1]) and lengths[1] < 1024
    assert batch["attention_mask"].sum(1).tolist() == lengths
    pad = processor.tokenizer.pad_token_id
    assert (batch["input_ids"][0, lengths[0] :] == pad).all()
    assert (batch["labels"][0, lengths[0] :] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape[0] == 2 * data.num_frames


def test_a_bad_clip_is_skipped_and_counted(processor, data, schema, rows, tmp_path, capsys):
    (tmp_path / "empty.mp4").write_bytes(b"")
    bad = {**rows[0], "root": str(tmp_path), "video": "empty.mp4"}
    collator = VideoSFTCollator(processor, data, schema, max_length=1024)
    batch = collator([rows[0], bad, rows[1]])
    assert batch["input_ids"].shape[0] == 2
    assert collator.skipped == 1 and dict(collator.skipped_kinds) == {"empty_file": 1}
    assert "skipped clip empty.mp4 (metadata.jsonl line" in capsys.readouterr().err


def test_a_batch_of_only_bad_clips_draws_a_replacement(processor, data, schema, rows, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    bad = {**rows[0], "root": str(tmp_path), "video": "empty.mp4"}
    collator = VideoSFTCollator(processor, data, schema, max_length=1024, replacements=[bad, rows[3]])
    batch = collator([bad, bad])
    assert batch["input_ids"].shape[0] == 1 and collator.skipped >= 2
    with pytest.raises(RuntimeError, match="no clip of the batch"):
        VideoSFTCollator(processor, data, schema, max_length=1024)([bad])


def test_an_over_long_sample_is_skipped_never_truncated(processor, data, schema, rows):
    collator = VideoSFTCollator(processor, data, schema, max_length=1024)
    length = len(collator.encode(rows[0])["input_ids"])
    strict = VideoSFTCollator(processor, data, schema, max_length=length - 1, replacements=rows[:1])
    with pytest.raises(RuntimeError):
        strict([rows[0]])
    assert strict.skipped_kinds["too_long"] >= 2


def test_token_budget_matches_a_real_sample(processor, data, schema, rows):
    label = json.loads(rows[0]["label"])
    budget = token_budget(processor, data, schema, label)
    sample = VideoSFTCollator(processor, data, schema).encode(rows[0])
    assert budget["total"] == len(sample["input_ids"])
    assert budget["frames"] == data.num_frames
    assert budget["video_tokens"] == data.num_frames * budget["tokens_per_frame"]
    image_tokens = sum(token == processor.image_token_id for token in sample["input_ids"])
    assert image_tokens == data.num_frames * processor.image_seq_length
    assert budget["prompt_tokens"] + budget["video_tokens"] + budget["answer_tokens"] == budget["total"]
    assert budget_problem(budget, budget["total"]) is None
    assert "train.max_length" in budget_problem(budget, budget["total"] - 1)


def test_train_refuses_to_launch_when_a_sample_exceeds_max_length(dataset_root, tmp_path, capsys):
    from video_vlm import train

    run_dir = tmp_path / "runs" / "too-long"
    code = train.main(
        ["--config", TINY_CONFIG, "--run-dir", str(run_dir), f"data.root={dataset_root}", "train.max_length=128"]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "train.max_length is 128" in captured.err and "never truncated" in captured.err
    assert "token budget per sample" in captured.out  # the preview is printed before the refusal
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "adapter").exists()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


# --------------------------------------------------------------------------------- one over-long line


def dataset_with_long_answers(source, target, copies: int = 1, caption_chars: int = 20_000):
    """A copy of `source` plus `copies` lines whose caption alone is far past train.max_length (a pasted text)."""
    import shutil

    from video_vlm.data import split_for

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("manifest.json", ".frame_cache"))
    lines = (target / "metadata.jsonl").read_text().splitlines()
    train_lines = [json.loads(line) for line in lines if split_for(json.loads(line)["video"], 0.2) == "train"]
    for record in train_lines[:copies]:
        lines.append(json.dumps({**record, "caption": "pasted text " * (caption_chars // 12)}))
    (target / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return target, len(lines) - copies + 1


def test_one_over_long_answer_is_skipped_named_and_counted_not_a_refusal(dataset_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path / "runs"))  # this test's own GPU lock
    from conftest import VIDEO_SMOKE
    from core.runs import RunDir
    from video_vlm import train

    root, long_line = dataset_with_long_answers(dataset_root, tmp_path / "data")
    run_dir = tmp_path / "runs" / "one-long"
    code = train.main(
        ["--config", TINY_CONFIG, "--run-dir", str(run_dir), f"data.root={root}", *VIDEO_SMOKE, "train.max_steps=1",
         "data.max_skipped_fraction=0.2"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"metadata.jsonl line {long_line}" in captured.out and "[too_long]" in captured.out
    assert "train.max_length 1024" in captured.out and "never truncated" in captured.out
    run = RunDir(run_dir)
    (record,) = [json.loads(line) for line in run.skipped_path.read_text().splitlines()]
    assert (record["line_no"], record["kind"], record["stage"]) == (long_line, "too_long", None)
    counts = run.read_status()["data"]["train"]
    assert counts["problems"]["too_long"] == 1 and counts["skipped"] == 1
    assert run.read_status()["state"] == "finished"


def test_over_long_answers_past_max_skipped_fraction_refuse_the_launch_naming_the_lines(
    dataset_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("VLM_RUNS_DIR", str(tmp_path / "runs"))
    from video_vlm import train

    root, first_long = dataset_with_long_answers(dataset_root, tmp_path / "data", copies=3)
    code = train.main(["--config", TINY_CONFIG, "--run-dir", str(tmp_path / "run"), f"data.root={root}"])
    captured = capsys.readouterr()
    assert code == 2
    assert "3 of" in captured.err and "data.max_skipped_fraction=0.1" in captured.err
    assert f"metadata.jsonl line {first_long}" in captured.err and "train.max_length 1024" in captured.err


# ---------------------------------------------------------------------------------------------- DPO


def dpo_row(row: dict, chosen: str, rejected: str) -> dict:
    return {"video": row["video"], "root": row["root"], "start_s": row["start_s"], "end_s": row["end_s"],
            "chosen": chosen, "rejected": rejected}


def test_dpo_batches_are_trls_layout_chosen_rows_then_rejected_rows(processor, data, schema, rows):
    """TRL's `_compute_loss` reads [chosen; rejected] rows and a completion mask; each prompt's frames go in twice,
    in row order, and the prompt is the inference prompt on the recipe's own frames."""
    collator = VideoDPOCollator(processor, data, schema)
    pairs = [dpo_row(rows[0], '{"a": 1}', "no"), dpo_row(rows[1], "x", '{"b": [1, 2, 3]}')]
    batch = collator(pairs)
    single = [build_inputs(processor, [prompt_messages(data, schema, video=clip_frames(row_item(r), r["root"], data))])
              for r in rows[:2]]
    assert batch["input_ids"].shape[0] == 4 and batch["completion_mask"].shape == batch["input_ids"].shape
    _, end = answer_affixes(processor)
    for index, (pair, key) in enumerate([(0, "chosen"), (1, "chosen"), (0, "rejected"), (1, "rejected")]):
        ids, mask = batch["input_ids"][index], batch["completion_mask"][index].bool()
        prompt = single[pair]["input_ids"][0]
        assert torch.equal(ids[: len(prompt)], prompt) and not mask[: len(prompt)].any()
        assert processor.tokenizer.decode(ids[mask]) == pairs[pair][key] + end
        assert batch["attention_mask"][index].sum() == len(prompt) + mask.sum()
    frames = [s["pixel_values"] for s in single]
    assert torch.equal(batch["pixel_values"], torch.cat(frames + frames))


def test_trls_dpo_loss_takes_the_recipes_batches(processor, data, schema, rows, tmp_path):
    """At the start the policy is its reference, so every implicit reward is 0 and TRL's sigmoid loss is log 2."""
    import math

    from trl import DPOTrainer

    from core.dpo import dpo_arguments, reference_model
    from core.runs import RunDir
    from video_vlm.pairs import pairs_dataset

    cfg = VideoConfig(method="dpo", model={"name": "tiny:internvl", "dtype": "float32"},
                      finetune={"method": "full", "gradient_checkpointing": False}, logging={"report_to": "none"})
    from core.models import load_stage_start

    model = load_stage_start(cfg.model, cfg.finetune, None)
    pairs = [{**dpo_row(r, schema.render_label(row_item(r).label), "not json"), "video": str(row_item(r).video_path(r["root"]))}
             for r in rows[:2]]
    collator = VideoDPOCollator(processor, data, schema)
    trainer = DPOTrainer(model=model, ref_model=reference_model(cfg.model, cfg.finetune, None),
                         args=dpo_arguments(cfg, cfg.dpo, RunDir(tmp_path / "run"), tmp_path / "out"),
                         data_collator=collator, train_dataset=pairs_dataset(pairs), processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    logged = trainer._metrics["train"]
    assert logged["rewards/margins"] == [pytest.approx(0.0, abs=1e-6)] and logged["logps/chosen"][0] < 0
