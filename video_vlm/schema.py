"""The output schema, defined once: it drives the prompt, label checks, output parsing, scores and UI columns.

A schema is a `SchemaSpec`: a list of fields, each a free-text string (`str`), one value out of a set
(`enum`) or a list of values out of a set (`list`). The dashcam task below is one such spec; another task
is a YAML file with the same shape (see `video_vlm/configs/schema_example.yaml`) passed to `load_schema`.

Unknown values: a source dataset may lack some fields (Nexar has no captions). Labels say so explicitly
with the string "unknown" (`UNKNOWN`), for any field type. Those fields are masked out of the training loss
(`render_label_spans` gives their character spans) and left out of scores (`field_scores` gives None).
Model outputs may NOT say "unknown": the model is never trained to produce it, so an output using it has
copied the placeholder and is counted invalid, like any other value outside the schema.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from core.config import ConfigError, yaml_error_text

UNKNOWN = "unknown"

DEFAULT_SCHEMA = {
    "name": "dashcam",
    "description": "You are shown frames sampled in order from a dashcam clip recorded by the ego vehicle.",
    "fields": [
        {
            "name": "caption",
            "type": "str",
            "description": "One or two sentences describing what happens in the clip.",
        },
        {
            "name": "event_type",
            "type": "enum",
            "values": ["collision", "near_miss", "no_incident"],
            "description": "Whether the ego vehicle collides, nearly collides, or neither.",
        },
        {
            "name": "rule_violations",
            "type": "list",
            "values": ["speeding", "failure_to_yield", "ignoring_traffic_signs"],
            "description": "Traffic rules broken in the clip; an empty list when none are.",
        },
        {
            "name": "intended_action",
            "type": "enum",
            "values": ["turn_left", "turn_right", "change_lanes"],
            "description": "What the ego vehicle is doing or about to do.",
        },
        {
            "name": "traffic_density",
            "type": "enum",
            "values": ["low", "high"],
            "description": "How much other traffic is around.",
        },
        {
            "name": "visibility",
            "type": "enum",
            "values": ["good", "bad"],
            "description": "Bad when night, rain, fog, glare or a dirty windscreen hide the road.",
        },
        {
            "name": "scene",
            "type": "enum",
            "values": ["Urban", "Sub-urban", "Rural", "Highway"],
            "description": "Kind of road environment.",
        },
    ],
}


class FieldSpec(BaseModel):
    """One output field.

    Attributes:
        name: JSON key (letters, digits, underscores).
        type: "str" (free text), "enum" (one of `values`) or "list" (zero or more of `values`).
        values: Allowed values for enum and list fields.
        description: Shown to the model in the prompt and to people in the UI.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["str", "enum", "list"]
    values: list[str] = []
    description: str = ""

    @field_validator("values", mode="before")
    @classmethod
    def _values_are_text(cls, values: Any) -> Any:
        if not isinstance(values, list):
            return values
        for value in values:
            if isinstance(value, bool) or value is None:
                raise ValueError(
                    f"value {value!r} is not text: YAML reads unquoted yes/no/on/off/null as booleans or null, "
                    "so quote them"
                )
        # Numbers are harmless to accept as their text (values: [1, 2, 3]).
        return [str(value) if isinstance(value, (int, float)) else value for value in values]

    # The messages below name positions, not the file's text: a schema file may be anything a user pointed at.
    @model_validator(mode="after")
    def _values_match_type(self) -> FieldSpec:
        if self.type == "str" and self.values:
            raise ValueError("a str field takes no values")
        if self.type != "str" and not self.values:
            raise ValueError(f"an {self.type} field needs a list of allowed values")
        repeated = [index for index, value in enumerate(self.values) if value in self.values[:index]]
        if repeated:
            raise ValueError(f"repeated values (at values.{', values.'.join(map(str, repeated))})")
        if UNKNOWN in self.values:
            raise ValueError(f"{UNKNOWN!r} is reserved for labels a dataset lacks")
        return self


class ParseResult(NamedTuple):
    """What `SchemaSpec.parse_output` made of a model's text.

    Attributes:
        ok_json: A JSON object was found and parsed.
        valid: It also passed strict schema validation.
        value: The validated object (canonical key order), None unless valid.
        error: Why it is not valid, None when valid.
        parsed: The JSON object as found, even when invalid (for display), None when no JSON was found.
    """

    ok_json: bool
    valid: bool
    value: dict | None
    error: str | None
    parsed: dict | None = None


class SchemaSpec(BaseModel):
    """A task's output schema. Build with `load_schema`.

    Attributes:
        name: Short task name.
        description: Context for the model, first line of the prompt.
        fields: The output fields, in the order the JSON lists them.
        instruction: A fixed instruction that replaces the generated field list in the prompt. Training
            teaches the format either way; a short one saves prompt tokens on every sample, at the price of a
            model that only answers in the format when asked with these exact words.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    fields: list[FieldSpec]
    instruction: str = ""

    @field_validator("fields")
    @classmethod
    def _unique_names(cls, fields: list[FieldSpec]) -> list[FieldSpec]:
        if not fields:
            raise ValueError("a schema needs at least one field")
        names = [field.name for field in fields]
        repeated = [index for index, name in enumerate(names) if name in names[:index]]
        if repeated:
            raise ValueError(f"repeated field names (at fields.{', fields.'.join(map(str, repeated))})")
        return fields

    # ------------------------------------------------------------------------------------- field groups

    @property
    def field_names(self) -> list[str]:
        """All field names, in order."""
        return [field.name for field in self.fields]

    @property
    def enum_fields(self) -> list[str]:
        """Fields with one value out of a set."""
        return [field.name for field in self.fields if field.type == "enum"]

    @property
    def list_fields(self) -> list[str]:
        """Fields with a list of values out of a set."""
        return [field.name for field in self.fields if field.type == "list"]

    @property
    def text_fields(self) -> list[str]:
        """Free-text fields."""
        return [field.name for field in self.fields if field.type == "str"]

    def field(self, name: str) -> FieldSpec:
        """The spec of one field by name."""
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"no field {name!r} in schema {self.name!r}; fields: {', '.join(self.field_names)}")

    # ---------------------------------------------------------------------------------- pydantic models

    def _build_model(self, allow_unknown: bool) -> type[BaseModel]:
        definitions: dict[str, Any] = {}
        for field in self.fields:
            if field.type == "str":
                annotation: Any = str
            elif field.type == "enum":
                annotation = Literal[tuple(field.values)]
            else:
                annotation = list[Literal[tuple(field.values)]]
            if allow_unknown:
                annotation = annotation | Literal[UNKNOWN]
            definitions[field.name] = (annotation, Field(description=field.description))
        suffix = "Label" if allow_unknown else "Output"
        return create_model(
            f"{self.name.title().replace('_', '').replace('-', '')}{suffix}",
            __config__=ConfigDict(extra="forbid", strict=True),
            **definitions,
        )

    @cached_property
    def output_model(self) -> type[BaseModel]:
        """Pydantic model of a model output: every field required, no unknowns, no extra keys."""
        return self._build_model(allow_unknown=False)

    @cached_property
    def label_model(self) -> type[BaseModel]:
        """Pydantic model of a label: like `output_model` but any field may be "unknown"."""
        return self._build_model(allow_unknown=True)

    # ---------------------------------------------------------------------------------------- the prompt

    def prompt(self) -> str:
        """Instruction text: the fields, their allowed values, and the JSON-only answer format.

        >>> SchemaSpec(name="t", fields=[{"name": "a", "type": "str"}], instruction="Answer as JSON.").prompt()
        'Answer as JSON.'
        """
        lines = [self.description.strip()] if self.description.strip() else []
        if self.instruction.strip():
            return "\n".join([*lines, self.instruction.strip()])
        lines.append("Describe the clip as a JSON object with exactly these keys:")
        for field in self.fields:
            choices = ", ".join(json.dumps(value) for value in field.values)
            if field.type == "str":
                kind = "a string"
            elif field.type == "enum":
                kind = f"one of {choices}"
            else:
                kind = f"a list of zero or more of {choices}"
            description = f" {field.description.strip()}" if field.description.strip() else ""
            lines.append(f'- "{field.name}": {kind}.{description}')
        example = ", ".join(f'"{name}": ...' for name in self.field_names)
        lines.append(f"Answer with one JSON object only, like {{{example}}}, and no other text.")
        return "\n".join(lines)

    # -------------------------------------------------------------------------------------- validation

    def _value_problem(self, field: FieldSpec, value: Any, allow_unknown: bool) -> str | None:
        """Why `value` is not allowed for `field`, or None when it is."""
        if value == UNKNOWN:
            return None if allow_unknown else f'{field.name}: "{UNKNOWN}" is only allowed in labels'
        choices = ", ".join(field.values)
        if field.type == "str":
            if not isinstance(value, str) or not value.strip():
                return f"{field.name}: expected a non-empty string, got {json.dumps(value)}"
        elif field.type == "enum":
            if not isinstance(value, str) or value not in field.values:
                return f"{field.name}: {json.dumps(value)} is not one of {choices}"
        else:
            if not isinstance(value, list):
                return f"{field.name}: expected a list of values from {choices}, got {json.dumps(value)}"
            outside = [item for item in value if not isinstance(item, str) or item not in field.values]
            if outside:
                return f"{field.name}: {json.dumps(outside)} not allowed; allowed values: {choices}"
        return None

    def problems(self, obj: Any, allow_unknown: bool) -> list[tuple[str, str]]:
        """Every way `obj` breaks the schema, as (kind, message) with kind one of not_an_object,
        missing_field, bad_value, unexpected_field. Empty when valid."""
        if not isinstance(obj, dict):
            message = f"expected a JSON object with keys {', '.join(self.field_names)}, got {type(obj).__name__}"
            return [("not_an_object", message)]
        found = []
        for field in self.fields:
            if field.name not in obj:
                allowed = f" (allowed: {', '.join(field.values)})" if field.values else ""
                found.append(("missing_field", f"{field.name}: missing field{allowed}"))
                continue
            problem = self._value_problem(field, obj[field.name], allow_unknown)
            if problem:
                found.append(("bad_value", problem))
        extra = [str(key) for key in obj if key not in self.field_names]
        if extra:
            message = f"unexpected field(s): {', '.join(extra)}; fields: {', '.join(self.field_names)}"
            found.append(("unexpected_field", message))
        return found

    def _validate(self, obj: Any, allow_unknown: bool) -> tuple[dict | None, list[str]]:
        errors = [message for _, message in self.problems(obj, allow_unknown)]
        if errors:
            return None, errors
        model = self.label_model if allow_unknown else self.output_model
        return self.canonical(model.model_validate(obj).model_dump()), []

    def validate_label(self, label: Any) -> tuple[dict | None, list[str]]:
        """Check a dataset label; any field may be "unknown".

        Returns:
            (the label in canonical form, []) when valid, else (None, one message per problem naming the
            field and the allowed values).
        """
        return self._validate(label, allow_unknown=True)

    def validate_output(self, obj: Any) -> tuple[dict | None, list[str]]:
        """Strictly check a model output: like `validate_label` but "unknown" is not allowed."""
        return self._validate(obj, allow_unknown=False)

    def parse_output(self, text: str) -> ParseResult:
        """Find the JSON object in a model's text (fenced or surrounded by prose), then validate strictly.

        >>> spec = load_schema(None)
        >>> good = {"caption": "A car turns.", "event_type": "no_incident", "rule_violations": [],
        ...         "intended_action": "turn_left", "traffic_density": "low", "visibility": "good",
        ...         "scene": "Urban"}
        >>> spec.parse_output("Sure! ```json\\n" + json.dumps(good) + "\\n``` Hope it helps.").valid
        True
        >>> result = spec.parse_output(json.dumps({**good, "scene": "Moon"}))
        >>> result.ok_json, result.valid, result.error
        (True, False, 'scene: "Moon" is not one of Urban, Sub-urban, Rural, Highway')
        >>> spec.parse_output("no JSON here").ok_json
        False
        """
        parsed = extract_json_object(text)
        if parsed is None:
            return ParseResult(False, False, None, "no JSON object found in the output", None)
        value, errors = self.validate_output(parsed)
        if errors:
            return ParseResult(True, False, None, "; ".join(errors), parsed)
        return ParseResult(True, True, value, None, parsed)

    # ------------------------------------------------------------------------------------------ labels

    def canonical(self, obj: dict) -> dict:
        """Keys in schema order; list values deduplicated and in the schema's value order."""
        result = {}
        for field in self.fields:
            value = obj[field.name]
            if field.type == "list" and isinstance(value, list):
                value = [allowed for allowed in field.values if allowed in value]
            result[field.name] = value
        return result

    def render_label(self, obj: dict | BaseModel) -> str:
        """The canonical JSON text of a label: the training target (unknown fields included, to be masked).

        >>> spec = SchemaSpec(name="t", fields=[{"name": "a", "type": "str"},
        ...                                     {"name": "b", "type": "list", "values": ["x", "y"]}])
        >>> spec.render_label({"b": ["y", "x"], "a": "unknown"})
        '{"a": "unknown", "b": ["x", "y"]}'
        """
        return self._render(obj)[0]

    def render_label_spans(self, obj: dict | BaseModel) -> list[tuple[str, int, int]]:
        """Each field's value span in `render_label(obj)`, as (field, start_char, end_char).

        The span covers the JSON value as written, quotes or brackets included, so a collator can mask
        the tokens of unknown fields' values while keys and punctuation stay supervised.

        >>> spec = SchemaSpec(name="t", fields=[{"name": "a", "type": "str"},
        ...                                     {"name": "b", "type": "list", "values": ["x", "y"]}])
        >>> label = {"a": "unknown", "b": ["y", "x"]}
        >>> text = spec.render_label(label)
        >>> [(name, text[start:end]) for name, start, end in spec.render_label_spans(label)]
        [('a', '"unknown"'), ('b', '["x", "y"]')]
        """
        return self._render(obj)[1]

    def _render(self, obj: dict | BaseModel) -> tuple[str, list[tuple[str, int, int]]]:
        if isinstance(obj, BaseModel):
            obj = obj.model_dump()
        obj = self.canonical(obj)
        text, spans = "{", []
        for index, (name, value) in enumerate(obj.items()):
            text += ("" if index == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": "
            start = len(text)
            text += json.dumps(value, ensure_ascii=False)
            spans.append((name, start, len(text)))
        return text + "}", spans

    # ------------------------------------------------------------------------------------------ scores

    def field_scores(self, pred: dict | None, label: dict) -> dict[str, float | None]:
        """Per-field score of one prediction against its label.

        Enums score 1.0 on an exact match else 0.0; lists score the Jaccard index of the two sets (1.0
        when both are empty), so a partly right list gets partial credit; text fields score
        `caption_similarity`. A field whose label is "unknown" scores None (left out of averages). An
        invalid prediction (None) scores 0.0 on every known field.
        """
        scores: dict[str, float | None] = {}
        for field in self.fields:
            truth = label.get(field.name, UNKNOWN)
            if truth == UNKNOWN:
                scores[field.name] = None
                continue
            guess = None if pred is None else pred.get(field.name)
            if guess is None:
                scores[field.name] = 0.0
            elif field.type == "enum":
                scores[field.name] = float(guess == truth)
            elif field.type == "list":
                scores[field.name] = jaccard(guess if isinstance(guess, list) else [], truth)
            else:
                scores[field.name] = caption_similarity(str(guess), str(truth))
        return scores

    def macro_f1(self, preds: list[dict | None], labels: list[dict], field: str) -> float | None:
        """Macro-averaged F1 of one enum or list field over a set of predictions.

        Items whose label is "unknown" are skipped; an invalid prediction (None) counts as wrong. Enums: F1
        per class, averaged over classes that occur in the labels or predictions. Lists: each value is a
        yes/no label per item, F1 per value averaged over values that occur anywhere.

        Returns:
            The macro F1, or None when no item has a known label for the field.
        """
        spec = self.field(field)
        if spec.type == "str":
            raise ValueError(f"macro_f1 needs an enum or list field; {field!r} is free text")
        pairs = [
            (pred, label[field])
            for pred, label in zip(preds, labels, strict=True)
            if label.get(field, UNKNOWN) != UNKNOWN
        ]
        if not pairs:
            return None

        def as_set(value: Any) -> set[str]:
            if spec.type == "enum":
                return {value} if isinstance(value, str) and value in spec.values else set()
            return {item for item in value if item in spec.values} if isinstance(value, list) else set()

        truth_sets = [as_set(truth) for _, truth in pairs]
        guess_sets = [as_set(None if pred is None else pred.get(field)) for pred, _ in pairs]
        classes = set().union(*truth_sets, *guess_sets)
        if not classes:
            return 1.0  # list field where every label and prediction is empty: all correct
        f1s = []
        for value in sorted(classes):
            true_pos = sum(value in t and value in g for t, g in zip(truth_sets, guess_sets))
            false_pos = sum(value not in t and value in g for t, g in zip(truth_sets, guess_sets))
            false_neg = sum(value in t and value not in g for t, g in zip(truth_sets, guess_sets))
            f1s.append(2 * true_pos / (2 * true_pos + false_pos + false_neg))
        return sum(f1s) / len(f1s)


# ------------------------------------------------------------------------------------- module functions


def load_schema(path: str | Path | None = None) -> SchemaSpec:
    """The schema in a YAML file, or the dashcam schema when `path` is None.

    Raises:
        ConfigError: (a ValueError) The file is missing, not YAML, or not a valid schema; the message names the file,
            the line or the field, and the kind of problem, never the file's text (see `schema_problems`).
    """
    if path is None:
        return SchemaSpec.model_validate(DEFAULT_SCHEMA)
    path = Path(path)
    # `from None` throughout: a chained error would print PyYAML's or pydantic's own text, which quotes the file.
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read the schema file (not UTF-8 text)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the schema file ({error.strerror or type(error).__name__})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: cannot read the schema file: {yaml_error_text(error)}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: not a valid schema: the top level must be a mapping with name and fields, not {kind}")
    try:
        return SchemaSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{path}: not a valid schema: {schema_problems(error)}") from None


def schema_problems(error: ValidationError) -> str:
    """Pydantic's errors for a schema file as one line: where (`fields.2.type`) and what kind, never the input.

    Pydantic's own text quotes each wrong value, and an unknown key's name: from a file that was never a schema
    (a credentials file, say), that is the secret itself.

    >>> try:
    ...     SchemaSpec.model_validate({"name": "x", "key": "hf_secret", "fields": [{"name": "a", "type": "hf_secret"}]})
    ... except ValidationError as error:
    ...     print(*schema_problems(error).split("; "), sep="\\n")
    fields.0.type: input should be 'str', 'enum' or 'list'
    an unknown key at the top level (allowed: name, description, fields, instruction)
    """
    problems, unknown = [], Counter()
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        if item["type"] == "extra_forbidden":
            unknown[".".join(loc[:-1])] += 1
            continue
        message = item["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        problems.append(f"{'.'.join(loc)}: {message}" if loc else message)
    for where, count in unknown.items():
        keys = "an unknown key" if count == 1 else f"{count} unknown keys"
        allowed = ", ".join((FieldSpec if where else SchemaSpec).model_fields)
        problems.append(f"{keys} {f'in {where}' if where else 'at the top level'} (allowed: {allowed})")
    return "; ".join(problems)


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in `text`: inside a ```json fence when there is one, else the first balanced
    {...} that parses.

    >>> extract_json_object('The answer: {"a": "x}"} and more {"b": 1}')
    {'a': 'x}'}
    >>> extract_json_object('```json\\n{"a": [1, 2]}\\n```')
    {'a': [1, 2]}
    >>> extract_json_object("{not json}") is None
    True
    """
    fenced = [match.group(1) for match in re.finditer(r"```(?:json|JSON)?\s*(.*?)```", text, flags=re.DOTALL)]
    for candidate in [*fenced, text]:
        for start in (index for index, char in enumerate(candidate) if char == "{"):
            end = _balanced_end(candidate, start)
            if end is None:
                continue
            try:
                value = json.loads(candidate[start:end])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _balanced_end(text: str, start: int) -> int | None:
    """Index one past the brace closing the one at `start`, skipping braces inside JSON strings."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def jaccard(guess: list, truth: list) -> float:
    """Jaccard index of two lists as sets; 1.0 when both are empty.

    >>> jaccard(["speeding"], ["speeding", "failure_to_yield"])
    0.5
    >>> jaccard([], [])
    1.0
    """
    guess_set, truth_set = set(guess), set(truth)
    if not guess_set and not truth_set:
        return 1.0
    return len(guess_set & truth_set) / len(guess_set | truth_set)


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def caption_similarity(prediction: str, reference: str) -> float:
    """Token-level F1 between two captions (SQuAD-style bag of lower-cased words), in [0, 1].

    Cheap and dependency-free; order-blind.

    >>> round(caption_similarity("A red car turns left.", "a red car turns right"), 3)
    0.8
    >>> caption_similarity("", "")
    1.0
    """
    predicted, expected = _tokens(prediction), _tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)
