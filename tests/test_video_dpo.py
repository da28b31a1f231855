"""DPO for video: pairs ranked by the evaluation's own scores, a user's pairs file checked line by line, and the tiny
preset, stopped once in its pairs stage and once in its DPO stage and relaunched, beating the SFT stage it began
from on held-out clips. (The collator's batch layout and TRL's loss on it: tests/test_video_collator.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, StopAfter, launch_run, stop_in_stage
from core.config import ConfigError
from core.runs import RunDir
from video_vlm.config import VideoConfig

TINY_DPO = "video_vlm/configs/tiny_dpo.yaml"


class Model:
    def eval(self):
        return self


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    from video_vlm.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("dashcam") / "data", n=12, seed=0)


def started_run(path: Path) -> RunDir:
    run = RunDir(path)
    run.path.mkdir()
    run.write_status("starting")
    return run


def only_line(run: RunDir) -> dict:
    (line,) = [json.loads(text) for text in run.pairs_path.read_text().splitlines()]
    return line


def test_pairs_are_ranked_by_the_recipes_own_scorer(dataset_root, tmp_path, monkeypatch):
    import video_vlm.pairs as pairs
    from video_vlm.task import load_task_schema, split_items, verified_items

    cfg = VideoConfig(method="dpo", data={"root": str(dataset_root)}, pairs={"samples_per_prompt": 3, "max_prompts": 1})
    schema = load_task_schema(cfg.data)
    (item,) = split_items(verified_items(cfg.data, schema), "train")[:1]
    right = schema.render_label(item.label)
    wrong_action = right.replace(item.label["intended_action"], "turn_left" if item.label["intended_action"] != "turn_left" else "turn_right")
    answers = ["no json here", wrong_action, right]
    monkeypatch.setattr(pairs, "answer_sampler", lambda cfg, model, processor, root: lambda batch: [list(answers) for _ in batch])

    # The recipe's scorer as it ships (the evaluation's parsing and field scores): the label's own JSON is chosen,
    # the answer with no JSON rejected; the one wrong field sits in between.
    run = started_run(tmp_path / "own")
    summary = pairs.run_pairs_stage(cfg, run, StopAfter(), None, Model())
    line = only_line(run)
    assert (line["chosen"], line["rejected"], line["chosen_score"], line["rejected_score"]) == (right, "no json here", 1.0, 0.0)
    assert (line["video"], line["start_s"], line["end_s"], line["line_no"], line["label"]) == (
        item.video, item.start_s, item.end_s, item.line_no, item.label)
    assert line["schema"] == "dashcam" and line["model"] == cfg.model.name and summary.pairs == 1
    from video_vlm.evaluate import answer_score, score_outputs

    assert score_outputs(schema, answers, [item.label] * 3)["answer_score"] == round(
        sum(answer_score(schema, text, item.label) for text in answers) / 3, 3)  # the evaluation reports the same score

    # A substituted scorer decides instead: here the shortest answer wins, so the ranking follows it, not the schema.
    monkeypatch.setattr(pairs, "answer_score", lambda schema, text, label: -float(len(text)))
    run = started_run(tmp_path / "substituted")
    pairs.run_pairs_stage(cfg, run, StopAfter(), None, Model())
    line = only_line(run)
    assert (line["chosen"], line["rejected"]) == ("no json here", max(answers, key=len))


def pairs_file(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_a_users_pairs_file_is_checked_line_by_line(dataset_root, tmp_path):
    from video_vlm.pairs import training_pairs

    metadata = [json.loads(text) for text in (dataset_root / "metadata.jsonl").read_text().splitlines()]
    video = metadata[0]["video"]
    good = {"video": video, "start_s": 0.0, "end_s": 1.0, "chosen": '{"scene": "Urban"}', "rejected": "no"}
    path = pairs_file(tmp_path / "mine.jsonl", [
        good,                                                     # 1: used
        "{not json",                                              # 2
        {**good, "rejected": ""},                                 # 3
        {**good, "video": "videos/missing.mp4"},                  # 4
        {**good, "start_s": 0.5, "end_s": 99.0},                  # 5: past the clip's end
        {"line_no": 3, "chosen": "a", "rejected": "b"},           # 6: used, the window of metadata line 3
        {"line_no": 999, "chosen": "a", "rejected": "b"},         # 7
        {"chosen": "a", "rejected": "b"},                         # 8: no clip at all
    ])
    cfg = VideoConfig(method="dpo", data={"root": str(dataset_root)}, pairs={"file": str(path)})
    used = training_pairs(cfg, RunDir(tmp_path / "run"))
    # Stored as metadata.jsonl stores them, relative to the dataset root (the DPO collator joins the root once).
    assert [p["video"] for p in used] == [video, metadata[2]["video"]]
    assert used[1]["start_s"] == metadata[2].get("start_s", used[1]["start_s"]) and used[1]["line_no"] == 3
    from core.preference import read_pairs
    from video_vlm.pairs import clip_problem

    problems = read_pairs(path, lambda line: clip_problem(cfg, line, {}), model=cfg.model.name, schema="dashcam").problems
    assert [p.split(": ")[0] for p in problems] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7, 8)]
    assert "missing.mp4" in problems[2] and "past the end" in problems[3] and "line_no 999" in problems[5]

    # Pairs made for another schema, or with another model, are refused, naming both.
    pairs_file(path, [{**good, "schema": "warehouse"}])
    with pytest.raises(ConfigError) as error:
        training_pairs(cfg, RunDir(tmp_path / "run"))
    assert "warehouse" in str(error.value) and "dashcam" in str(error.value)
    pairs_file(path, [{**good, "model": "Qwen/Qwen3-VL-8B-Instruct"}])
    with pytest.raises(ConfigError) as error:
        training_pairs(cfg, RunDir(tmp_path / "run"))
    assert "Qwen/Qwen3-VL-8B-Instruct" in str(error.value) and cfg.model.name in str(error.value)


def test_a_pairs_file_with_no_usable_line_stops_before_any_weights_load(dataset_root, tmp_path, capsys):
    from video_vlm import train

    path = pairs_file(tmp_path / "bad.jsonl", ['{"chosen": "a"}', {"video": "videos/missing.mp4", "chosen": "a", "rejected": "b"}])
    code = train.main(["--config", TINY_DPO, "--run-dir", str(tmp_path / "run"), f"data.root={dataset_root}",
                       f"pairs.file={path}"])
    out, err = capsys.readouterr()
    assert code == 2
    (message,) = [line for line in err.splitlines() if "no usable line" in line]
    assert f"pairs file {path} has no usable line (2 bad)" in message and "rejected must be a non-empty string" in message
    assert "trainable parameters" not in out  # neither the SFT stage nor DPO loaded a model


def test_a_stage_named_like_dpos_own_stages_is_refused():
    with pytest.raises(ValueError, match="stage name 'pairs' is taken"):
        VideoConfig(method="dpo", stages=[{"name": "pairs"}])
    VideoConfig(stages=[{"name": "pairs"}])  # an SFT run may call a stage so


def test_a_source_run_after_sft_stages_is_refused_before_anything_trains(tmp_path, capsys):
    """DPO from `pairs.source_run` starts from that run's weights; the SFT stages before it would train for nothing."""
    from video_vlm import train

    run = RunDir(tmp_path / "run")
    assert train.main(["--config", TINY_DPO, "--run-dir", str(run.path), "pairs.source_run=runs/earlier"]) == 2
    err = capsys.readouterr().err
    assert "pairs.source_run (runs/earlier) starts DPO from that run's weights, so the sft stage(s)" in err
    assert not run.metrics_path.exists()


# ------------------------------------------------------------------------------ the tiny preset, stopped twice


def launch(run: RunDir, workdir: Path) -> subprocess.Popen:
    """The preset as the README runs it, with its own relative data.root, from `workdir` (the test's own folder,
    where the synthetic clips are generated)."""
    return launch_run("video_vlm.train", run.path, "--config", str(ROOT / TINY_DPO), "pairs.batch_size=4", cwd=workdir)


def stop_in(run: RunDir, workdir: Path, stage: str, min_step: int) -> None:
    stop_in_stage(lambda: launch(run, workdir), run, stage, min_step)


@pytest.fixture(scope="module")
def stopped_twice(tmp_path_factory):
    """The tiny DPO preset as shipped (but for the pairs batch), stopped in its pairs stage, relaunched and stopped
    in its DPO stage, relaunched to the end: (run, log text, prompts sampled before the stop)."""
    base = tmp_path_factory.mktemp("video-dpo")
    run, data = RunDir(base / "video-dpo"), base
    stop_in(run, data, "pairs", 4)
    sampled = len(run.candidates_path.read_text().splitlines())
    in_pairs = (sampled, run.read_status()["total"], run.pairs_path.exists())
    stop_in(run, data, "dpo", 3)
    in_dpo = run.newest_weights()
    proc = launch(run, data)
    assert proc.wait(timeout=900) == 0
    return run, (base / "video-dpo.log").read_text(), in_pairs, in_dpo


@pytest.mark.slow
def test_stop_and_resume_in_the_pairs_and_dpo_stages(stopped_twice):
    run, log, (sampled, total, paired), in_dpo = stopped_twice
    assert 0 < sampled < total and not paired  # stopped between batches: candidates kept, no pairs.jsonl yet
    assert f"{sampled} of {total} prompts sampled earlier; continuing" in log
    assert in_dpo.parent == run.checkpoints_dir / "dpo"  # a DPO checkpoint, where the last relaunch resumed
    assert "[sft] finished earlier" in log and "resuming from" in log.split("prompts sampled earlier")[-1]
    status = run.read_status()
    assert status["state"] == "finished" and status["stage"] == "dpo" and status["stages"] == ["sft", "pairs", "dpo"]
    metrics = [m for m in run.read_metrics() if m.get("stage") == "dpo" and "loss" in m]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(metrics[-1])
    assert [m["step"] for m in metrics] == list(range(1, status["total"] + 1))  # each step once across the relaunches
    # On the UI's run-wide axis DPO's first step follows the SFT stage's last: the pairs stage adds no steps.
    from ui.charts import metrics_frame

    frame = metrics_frame(run.read_metrics())
    assert frame.loc[frame["stage"] == "dpo", "run_step"].min() == frame.loc[frame["stage"] == "sft", "run_step"].max() + 1
    candidates = [json.loads(line) for line in run.candidates_path.read_text().splitlines()]
    assert len({c["prompt_id"] for c in candidates}) == len(candidates) == total  # no clip sampled twice
    summary = json.loads((run.path / "pairs_summary.json").read_text())
    assert run.read_config()["data"]["root"] == str(run.path.parent / "data" / "synthetic-dashcam"), "the preset's relative root, recorded absolute"
    assert summary["pairs"] >= 1 and summary["prompts"] == summary["pairs"] + summary["no_contrast"] == total


@pytest.mark.slow
def test_tiny_dpo_preset_beats_its_sft_stage_on_held_out_clips(stopped_twice):
    from video_vlm.evaluate import evaluate, format_table

    run = stopped_twice[0]
    report = evaluate(run, baseline="sft")
    start, tuned = report["models"]["base"], report["models"]["tuned"]
    print(format_table(report))
    assert report["baseline"] == "sft" and (run.eval_dir / "val-vs-sft.json").is_file()
    gains = {key: (tuned[key] or 0) - (start[key] or 0) for key in ("json_rate", "field_accuracy_mean")}
    assert max(gains.values()) >= 0.2, f"DPO over its SFT stage: {gains}"
