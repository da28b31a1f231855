"""The output schema: prompt, label validation, tolerant parsing with strict checks, rendering, scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from video_vlm.schema import (
    UNKNOWN,
    caption_similarity,
    extract_json_object,
    load_schema,
)

EXAMPLE_SCHEMA = Path(__file__).resolve().parents[1] / "video_vlm" / "configs" / "schema_example.yaml"

GOOD = {
    "caption": "A car turns left at a busy crossing.",
    "event_type": "near_miss",
    "rule_violations": ["failure_to_yield"],
    "intended_action": "turn_left",
    "traffic_density": "high",
    "visibility": "good",
    "scene": "Urban",
}


@pytest.fixture(scope="module")
def spec():
    return load_schema(None)


def test_default_schema_fields(spec):
    assert spec.field_names == [
        "caption", "event_type", "rule_violations", "intended_action", "traffic_density", "visibility", "scene",
    ]
    assert spec.text_fields == ["caption"]
    assert spec.list_fields == ["rule_violations"]
    assert "rule_violations" not in spec.enum_fields and "scene" in spec.enum_fields
    assert spec.field("scene").values == ["Urban", "Sub-urban", "Rural", "Highway"]


def test_example_yaml_is_the_default_schema():
    assert load_schema(EXAMPLE_SCHEMA) == load_schema(None)


def test_prompt_lists_every_field_and_value(spec):
    prompt = spec.prompt()
    for field in spec.fields:
        assert f'"{field.name}"' in prompt
        for value in field.values:
            assert f'"{value}"' in prompt
    assert "Answer with one JSON object only" in prompt
    assert UNKNOWN not in prompt


# ------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        "Here is my analysis:\n```\n" + json.dumps(GOOD) + "\n```\nLet me know!",
        "The clip {briefly}: " + json.dumps(GOOD) + " -- done.",
        "Answer: " + json.dumps(GOOD) + "\nSecond try: " + json.dumps({**GOOD, "scene": "Rural"}),
    ],
    ids=["bare", "json-fence", "plain-fence", "prose-with-braces", "two-objects"],
)
def test_parse_output_finds_the_object(spec, text):
    result = spec.parse_output(text)
    assert (result.ok_json, result.valid, result.error) == (True, True, None)
    assert result.value == GOOD


def test_parse_output_handles_braces_inside_strings(spec):
    good = {**GOOD, "caption": "A sign reads {STOP} and a \"}\" appears."}
    result = spec.parse_output("Output: " + json.dumps(good))
    assert result.valid and result.value["caption"] == good["caption"]


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"event_type": "crash"}, 'event_type: "crash" is not one of collision, near_miss, no_incident'),
        ({"scene": "urban"}, "scene"),
        ({"rule_violations": ["speeding", "littering"]}, 'rule_violations: ["littering"] not allowed'),
        ({"rule_violations": "speeding"}, "rule_violations: expected a list"),
        ({"visibility": UNKNOWN}, 'visibility: "unknown" is only allowed in labels'),
        ({"caption": ""}, "caption: expected a non-empty string"),
        ({"caption": 3}, "caption: expected a non-empty string"),
        ({"weather": "rain"}, "unexpected field(s): weather"),
    ],
)
def test_parse_output_is_strict(spec, change, fragment):
    result = spec.parse_output(json.dumps({**GOOD, **change}))
    assert result.ok_json and not result.valid and result.value is None
    assert fragment in result.error
    assert result.parsed == {**GOOD, **change}


def test_parse_output_missing_field_and_no_json(spec):
    partial = {key: value for key, value in GOOD.items() if key != "traffic_density"}
    result = spec.parse_output(json.dumps(partial))
    assert not result.valid and "traffic_density: missing field (allowed: low, high)" in result.error
    for text in ["", "I cannot tell.", "{'caption': 'single quotes are not JSON'}", "[1, 2]", '{"a": 1']:
        result = spec.parse_output(text)
        assert (result.ok_json, result.valid, result.value) == (False, False, None), text


def test_extract_json_object_prefers_fenced_block():
    text = 'Template {"x": 0} then ```json\n{"x": 1}\n```'
    assert extract_json_object(text) == {"x": 1}


# ------------------------------------------------------------------------------------------- labels


def test_validate_label_accepts_unknown_and_names_problems(spec):
    nexar = {name: UNKNOWN for name in spec.field_names} | {"event_type": "collision"}
    value, errors = spec.validate_label(nexar)
    assert errors == [] and value == nexar

    value, errors = spec.validate_label({**GOOD, "event_type": "crash", "scene": None})
    assert value is None
    assert any(error.startswith("event_type:") and "collision, near_miss, no_incident" in error for error in errors)
    assert any(error.startswith("scene:") for error in errors)
    value, errors = spec.validate_label("not a dict")
    assert value is None and "expected a JSON object" in errors[0]


def test_validate_label_canonicalises_lists(spec):
    value, _ = spec.validate_label({**GOOD, "rule_violations": ["ignoring_traffic_signs", "speeding", "speeding"]})
    assert value["rule_violations"] == ["speeding", "ignoring_traffic_signs"]


def test_render_label_is_canonical_json_with_value_spans(spec):
    shuffled = dict(reversed(list(GOOD.items())))
    text = spec.render_label(shuffled)
    assert text == spec.render_label(GOOD)
    assert list(json.loads(text)) == spec.field_names and json.loads(text) == GOOD
    label = {**GOOD, "caption": UNKNOWN, "rule_violations": UNKNOWN}
    text = spec.render_label(label)
    spans = spec.render_label_spans(label)
    assert [name for name, _, _ in spans] == spec.field_names
    pieces = {name: text[start:end] for name, start, end in spans}
    assert pieces["caption"] == '"unknown"' and pieces["rule_violations"] == '"unknown"'
    assert pieces["scene"] == '"Urban"'
    assert all(json.loads(pieces[name]) == label[name] for name in spec.field_names)


def test_render_label_accepts_a_pydantic_object(spec):
    obj = spec.output_model.model_validate(GOOD)
    assert spec.render_label(obj) == spec.render_label(GOOD)


# ------------------------------------------------------------------------------------------- scores


def test_field_scores(spec):
    pred = {**GOOD, "caption": "A car turns right at a busy crossing.", "event_type": "collision",
            "rule_violations": ["failure_to_yield", "speeding"]}
    label = {**GOOD, "scene": UNKNOWN}
    scores = spec.field_scores(pred, label)
    assert scores["event_type"] == 0.0
    assert scores["intended_action"] == 1.0
    assert scores["rule_violations"] == pytest.approx(0.5)  # Jaccard {fty} / {fty, speeding}
    assert scores["caption"] == pytest.approx(7 / 8)  # token F1: 7 of 8 words shared
    assert scores["scene"] is None
    assert spec.field_scores(None, label) == {name: (None if name == "scene" else 0.0) for name in spec.field_names}
    assert spec.field_scores({**GOOD, "rule_violations": []}, {**GOOD, "rule_violations": []})["rule_violations"] == 1.0


def test_caption_similarity():
    assert caption_similarity("Same words here", "same WORDS here!") == 1.0
    assert caption_similarity("nothing shared", "totally different") == 0.0
    assert caption_similarity("", "something") == 0.0


def test_macro_f1_enum(spec):
    labels = [{"event_type": value} for value in ["collision", "collision", "no_incident", "near_miss", UNKNOWN]]
    preds = [{"event_type": "collision"}, None, {"event_type": "no_incident"}, {"event_type": "collision"},
             {"event_type": "collision"}]
    # collision: tp 1, fp 1, fn 1 -> 0.5; no_incident: 1.0; near_miss: tp 0, fn 1 -> 0.0. The unknown is skipped.
    assert spec.macro_f1(preds, labels, "event_type") == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert spec.macro_f1(preds[-1:], labels[-1:], "event_type") is None


def test_macro_f1_list_and_text_field(spec):
    labels = [{"rule_violations": value} for value in (["speeding"], [], ["speeding", "failure_to_yield"])]
    preds = [{"rule_violations": value} for value in (["speeding"], ["speeding"], ["failure_to_yield"])]
    # speeding: tp 1, fp 1, fn 1 -> 0.5; failure_to_yield: tp 1 -> 1.0.
    assert spec.macro_f1(preds, labels, "rule_violations") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="free text"):
        spec.macro_f1(preds, labels, "caption")


# ------------------------------------------------------------------------------------- custom schemas


def test_custom_yaml_schema_builds_its_own_model(tmp_path):
    path = tmp_path / "pets.yaml"
    path.write_text(
        "name: pets\n"
        "description: Frames from a pet camera.\n"
        "fields:\n"
        "  - {name: summary, type: str, description: What the pet does.}\n"
        "  - {name: animal, type: enum, values: [cat, dog]}\n"
        "  - {name: actions, type: list, values: [eat, sleep, play]}\n"
    )
    spec = load_schema(path)
    assert spec.field_names == ["summary", "animal", "actions"]
    assert spec.prompt().startswith("Frames from a pet camera.")
    result = spec.parse_output('```json\n{"summary": "A cat naps.", "animal": "cat", "actions": ["sleep"]}\n```')
    assert result.valid and result.value["animal"] == "cat"
    assert not spec.parse_output('{"summary": "x", "animal": "horse", "actions": []}').valid
    assert spec.output_model.model_json_schema()["properties"]["animal"]["enum"] == ["cat", "dog"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("name: x\nfields:\n  - {name: a, type: enum}\n", "needs a list of allowed values"),
        ("name: x\nfields:\n  - {name: a, type: enum, values: [maybe, unknown]}\n", "reserved"),
        ("name: x\nfields:\n  - {name: a, type: enum, values: [yes, no]}\n", "quote them"),
        ("name: x\nfields:\n  - {name: a, type: str}\n  - {name: a, type: str}\n", "repeated field names"),
        ("name: x\nfields:\n  - {name: a, type: number}\n", "type"),
        ("name: x\nfields: [\n", "cannot read"),
    ],
)
def test_invalid_schema_files_name_the_file(tmp_path, body, fragment):
    path = tmp_path / "bad_schema.yaml"
    path.write_text(body)
    with pytest.raises(ValueError) as caught:
        load_schema(path)
    assert "bad_schema.yaml" in str(caught.value) and fragment in str(caught.value)


@pytest.mark.parametrize(
    "body, problem",
    [
        ("name: x\nfields:\n  - {name: a, type: enum, values: [cat, cat]}\n",
         "not a valid schema: fields.0: repeated values (at values.1)"),
        ("name: x\nfields:\n  - {name: a, type: str}\n  - {name: a, type: str}\n",
         "not a valid schema: fields: repeated field names (at fields.1)"),
        ("name: x\nfields:\n  - {name: a, type: str, colour: red}\n",
         "not a valid schema: an unknown key in fields.0 (allowed: name, type, values, description)"),
        ("name: x\nfields: [\n",
         "cannot read the schema file: not valid YAML at line 3, column 1 (expected the node content, but found '<stream end>')"),
        ("name: x\nfields: red: [cat]\n",
         "cannot read the schema file: not valid YAML at line 2, column 12 (mapping values are not allowed here)"),
    ],
)
def test_schema_errors_say_where_and_what_never_the_file_s_text(tmp_path, body, problem):
    """The message names the line or the field and the kind of problem: a schema file may be anything a user pointed
    at (tests/test_page_paths.py checks the same with a secret in the file)."""
    path = tmp_path / "bad_schema.yaml"
    path.write_text(body)
    with pytest.raises(ValueError) as caught:
        load_schema(path)
    assert str(caught.value) == f"{path}: {problem}"
    assert not any(word in str(caught.value) for word in ("cat", "red", "colour")), "no text of the file"
