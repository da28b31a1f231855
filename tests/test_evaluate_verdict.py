"""The evaluation reports tell the truth: intervals, constant-answer baselines, the verdict, and cut-off answers."""

from __future__ import annotations

import json

import pytest

from image_vlm.evaluate import compare_answers
from video_vlm.evaluate import compare_outputs, score_outputs
from video_vlm.schema import load_schema

LABEL = {"caption": "A white square moves left.", "event_type": "collision", "rule_violations": [],
         "intended_action": "turn_left", "traffic_density": "low", "visibility": "good", "scene": "Urban"}


def constant_no_report() -> dict:
    """48 balanced images; base answers "Yes" to 10 of the 24 fires and writes nothing usable otherwise, tuned
    answers "No" to everything."""
    expected = ["Yes"] * 24 + ["No"] * 24
    base = ["<SOLUTION>Yes</SOLUTION>"] * 10 + ["I cannot tell."] * 38
    tuned = ["<REASONING>Green.</REASONING><SOLUTION>No</SOLUTION>"] * 48
    return compare_answers(expected, {"base": base, "tuned": tuned}, ["Yes", "No"], "Yes", reasoning=True)


def test_a_constant_no_is_no_better_than_a_constant_answer():
    report = constant_no_report()
    tuned = report["models"]["tuned"]
    assert report["models"]["base"]["accuracy"] == pytest.approx(10 / 48) and tuned["accuracy"] == 0.5
    assert tuned["precision"] == tuned["recall"] == tuned["f1"] == 0.0
    assert report["verdict"] == "no better than a constant answer"
    assert 'tuned answers "No" to all 48 images' in report["warnings"]
    assert tuned["constant_answer"] == "No" and report["models"]["base"]["constant_answer"] is None
    assert tuned["ci95"]["accuracy"] == [0.364, 0.636]  # Wilson for 24 of 48
    assert report["baselines"]["majority"]["accuracy"] == 0.5 and report["baselines"]["chance"]["accuracy"] == 0.5
    headline = report["headline"]
    assert headline["difference"] == pytest.approx(0.5 - 0.208, abs=1e-3) and headline["ci95"][0] > 0
    assert headline["constant"]["difference"] == 0.0 and headline["constant"]["ci95"][0] < 0 < headline["constant"]["ci95"][1]
    json.dumps(report, allow_nan=False)  # the report is plain JSON


def test_a_real_gain_is_better_and_a_null_one_indistinguishable():
    expected = ["Yes", "No"] * 24
    right = [f"<SOLUTION>{e}</SOLUTION>" for e in expected]
    coin = [f"<SOLUTION>{'Yes' if i % 4 < 2 else 'No'}</SOLUTION>" for i in range(48)]  # half right, not constant
    better = compare_answers(expected, {"base": coin, "tuned": right}, ["Yes", "No"], "Yes", reasoning=False)
    assert better["verdict"] == "better" and better["headline"]["ci95"][0] > 0 and not better["warnings"]
    same = compare_answers(expected, {"base": right, "tuned": right}, ["Yes", "No"], "Yes", reasoning=False)
    assert same["verdict"] == "indistinguishable" and same["headline"]["difference"] == 0.0


def test_a_truncated_video_answer_is_reported_as_cut_off_not_as_missing_json():
    schema = load_schema(None)
    good = schema.render_label(LABEL)
    texts = [good, good[:30], "no json here"]
    metrics = score_outputs(schema, texts, [LABEL] * 3, truncated=[False, True, False], max_new_tokens=96)
    assert metrics["truncated"] == 1 and metrics["unparseable"] == 2
    cut, missing = metrics["errors"]
    assert "eval.max_new_tokens=96" in cut and "cut off" in cut and "no JSON object" not in cut
    assert cut.endswith("raise it, e.g. eval.max_new_tokens=192")
    assert missing == "no JSON object found in the output"

    report = compare_outputs(schema, {"base": texts, "tuned": texts}, [LABEL] * 3,
                             truncated={"base": [False] * 3, "tuned": [False, True, False]}, max_new_tokens=96)
    assert report["models"]["tuned"]["truncated"] == 1 and report["models"]["base"]["truncated"] == 0
    assert [w for w in report["warnings"] if "cut off" in w] == [
        "tuned: 1 of 3 answers were cut off at eval.max_new_tokens=96 (generation hit the limit): raise it, "
        "e.g. eval.max_new_tokens=192"
    ]


def varied_labels(n: int = 24) -> list[dict]:
    actions = ("turn_left", "turn_right", "change_lanes")
    return [{**LABEL, "event_type": ("collision", "no_incident")[i % 2], "intended_action": actions[i % 3],
             "traffic_density": ("low", "high")[i // 2 % 2], "visibility": ("good", "bad")[i // 3 % 2]} for i in range(n)]


def test_video_verdict_on_field_accuracy_against_the_most_frequent_values():
    schema = load_schema(None)
    labels = varied_labels()
    right = [schema.render_label(label) for label in labels]
    report = compare_outputs(schema, {"base": right, "tuned": right}, labels)
    frequent = report["baselines"]["most_frequent"]
    assert frequent["answer"]["scene"] == "Urban" and frequent["field_accuracy"]["scene"] == 1.0
    assert frequent["field_accuracy"]["event_type"] == 0.5
    headline = report["headline"]
    assert headline["metric"] == "field_accuracy_mean" and headline["difference"] == 0.0
    assert report["verdict"] == "indistinguishable", "the same answers: +0.000 is no gain"
    assert headline["constant"]["ci95"][0] > 0, "both beat the constant answer"
    assert report["models"]["tuned"]["ci95"]["field_accuracy_mean"] == [1.0, 1.0]

    constant = [schema.render_label({**LABEL, "intended_action": "turn_right"})] * len(labels)
    report = compare_outputs(schema, {"base": ["no json"] * len(labels), "tuned": constant}, labels)
    assert report["verdict"] == "no better than a constant answer"
    (warning,) = [w for w in report["warnings"] if "to all" in w]
    assert warning.startswith('tuned answers {"event_type": "collision"') and warning.endswith("to all 24 clips")


def test_generation_marks_answers_that_hit_the_token_limit():
    """A tiny random model never writes its end token in 6 tokens: cut off. With every token an end token, it stops
    after one: finished."""
    from core.generation import generate, generate_answers
    from core.models import load_model, load_processor
    from video_vlm.config import VideoConfig

    cfg = VideoConfig.model_validate({"model": {"name": "tiny:internvl", "dtype": "float32"}})
    model, processor = load_model(cfg.model).eval(), load_processor(cfg.model)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe the clip."}]}]
    (cut,) = generate_answers(model, processor, [messages], max_new_tokens=6)
    assert cut.truncated
    assert generate(model, processor, [messages], max_new_tokens=6) == [cut.text], "generate() still returns texts"
    model.generation_config.eos_token_id = list(range(model.config.get_text_config().vocab_size))
    (finished,) = generate_answers(model, processor, [messages], max_new_tokens=6)
    assert not finished.truncated
