"""Base against tuned on the held-out clips, with the run's own config.

    python -m video_vlm.evaluate --run runs/video-... [--limit N] [--batch-size B] [--baseline STAGE] [eval.KEY=VALUE ...]

Writes `eval/val.json` in the run folder and prints a table: JSON validity, schema validity, per-field
accuracy, macro-F1 of event_type, caption similarity and the unparseable count, with 95 % intervals, then the
verdict. Base and tuned answers come from one copy of the weights (the adapter switched off for base), on the
same frames, sampled the way training sampled them (`video_vlm.task.sample_clip`). Scoring is the schema's own
(`SchemaSpec.field_scores`), for the models and for the constant baseline (each field's most frequent value).
`--baseline STAGE` puts a finished stage's weights (an SFT stage before DPO) in the base's place and writes
`eval/val-vs-STAGE.json`: what the later stages added to the weights they started from.

The verdict (`core.verdict`) is on the mean field accuracy, through a paired bootstrap of tuned minus base, after
checking that tuned beats the constant baseline. An answer cut off at `eval.max_new_tokens` is reported as such,
not as "no JSON object found"; `eval.max_new_tokens=768` on the command line raises the limit for one evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.cli import run_evaluation_main
from core.config import deep_merge, eval_settings, validate_config
from core.files import write_json_atomic
from core.models import load_run_model
from core.provenance import model_and_data
from core.runs import RunDir
from core.verdict import (
    bootstrap_interval,
    constant_answer,
    mean_of_columns,
    most_frequent,
    paired_bootstrap_interval,
    paired_rate_interval,
    rounded,
    same_answer_warning,
    truncation_note,
    truncation_warning,
    verdict,
    verdict_sentence,
    wilson_interval,
)
from video_vlm.config import VideoConfig
from video_vlm.schema import UNKNOWN, SchemaSpec
from video_vlm.task import clip_frames, load_task_schema, prompt_messages, split_items, verified_items

SPLIT = "val"
MODELS = ("base", "tuned")


def answer_score(schema: SchemaSpec, text: str, label: dict) -> float:
    """One answer's score in [0, 1], from the same parsing and field scores as `score_outputs`: the mean of
    "a JSON object was found", "it passes the schema" and its mean accuracy over the scored (enum and list)
    fields whose label is known. DPO's pairs stage ranks sampled answers with it (video_vlm/pairs.py).

    >>> from video_vlm.schema import load_schema
    >>> schema = load_schema(None)
    >>> label = {"caption": "A white square moves left.", "event_type": "collision", "rule_violations": [],
    ...          "intended_action": "turn_left", "traffic_density": "low", "visibility": "good", "scene": "Urban"}
    >>> good = schema.render_label(label)
    >>> answer_score(schema, good, label), answer_score(schema, "no json", label)
    (1.0, 0.0)
    >>> round(answer_score(schema, good.replace("turn_left", "turn_right"), label), 3)  # valid, 5 of 6 fields
    0.944
    """
    parsed = schema.parse_output(text)
    return parsed_score(schema, parsed, label)


def parsed_score(schema: SchemaSpec, parsed, label: dict) -> float:
    """`answer_score` of an answer `SchemaSpec.parse_output` has already parsed."""
    prediction = parsed.parsed if isinstance(parsed.parsed, dict) else None
    scores = schema.field_scores(prediction, label)
    known = [scores[field] for field in schema.enum_fields + schema.list_fields if scores[field] is not None]
    accuracy = sum(known) / len(known) if known else 0.0
    return (float(parsed.ok_json) + float(parsed.valid) + accuracy) / 3


def score_outputs(schema: SchemaSpec, texts: list[str], labels: list[dict], truncated: list[bool] | None = None,
                  max_new_tokens: int = 0) -> dict[str, Any]:
    """Validity rates, per-field accuracy, macro-F1 and caption similarity of model outputs against labels, with
    95 % intervals (`ci95`: Wilson for the rates, a bootstrap over clips for the field scores and means).

    Fields are scored on the JSON the model wrote even when another field breaks the schema (validity is
    its own number); a field whose label is "unknown" is left out. Enum fields score exact matches, list
    fields the Jaccard index of the two sets. An answer that hit `max_new_tokens` (`truncated`) without a JSON
    object is reported as cut off, naming the setting to raise, and counted in `truncated`.

    >>> from video_vlm.schema import load_schema
    >>> schema = load_schema(None)
    >>> label = {"caption": "A white square moves left.", "event_type": "collision", "rule_violations": [],
    ...          "intended_action": "turn_left", "traffic_density": "low", "visibility": "good", "scene": "Urban"}
    >>> good = schema.render_label(label)
    >>> m = score_outputs(schema, [good, "no json", good.replace("turn_left", "turn_right")], [label] * 3)
    >>> m["json_rate"], m["valid_rate"], m["unparseable"], m["field_accuracy"]["intended_action"]
    (0.667, 0.667, 1, 0.333)
    >>> m["ci95"]["json_rate"]
    [0.208, 0.939]
    >>> cut = '{"caption": "A white'
    >>> m = score_outputs(schema, [good, cut], [label] * 2, truncated=[False, True], max_new_tokens=8)
    >>> m["truncated"], m["errors"]
    (1, ['answer cut off at eval.max_new_tokens=8 (generation hit the limit): raise it, e.g. eval.max_new_tokens=16'])
    """
    parsed = [schema.parse_output(text) for text in texts]
    predictions = [p.parsed if isinstance(p.parsed, dict) else None for p in parsed]
    n = len(texts)
    truncated = list(truncated) if truncated is not None else [False] * n
    scores = [schema.field_scores(pred, label) for pred, label in zip(predictions, labels)]
    scored_fields = schema.enum_fields + schema.list_fields
    field_accuracy = field_means(scores, scored_fields)
    similarities = [s[field] for s in scores for field in schema.text_fields if s[field] is not None]
    macro = {field: schema.macro_f1(predictions, labels, field) for field in scored_fields}
    answer_scores = [parsed_score(schema, p, label) for p, label in zip(parsed, labels)]
    errors = [
        f"answer {truncation_note(max_new_tokens)}" if cut and not p.ok_json else p.error
        for p, cut in zip(parsed, truncated) if not p.valid
    ]
    metrics: dict[str, Any] = {
        "n": n,
        "json_rate": round(sum(p.ok_json for p in parsed) / n, 3) if n else 0.0,
        "valid_rate": round(sum(p.valid for p in parsed) / n, 3) if n else 0.0,
        "unparseable": sum(not p.ok_json for p in parsed),
        "truncated": sum(truncated),
        "field_accuracy": field_accuracy,
        "field_accuracy_mean": round(sum(field_accuracy.values()) / len(field_accuracy), 3) if field_accuracy else None,
        "macro_f1": {field: round(value, 3) for field, value in macro.items() if value is not None},
        "caption_similarity": round(sum(similarities) / len(similarities), 3) if similarities else None,
        "errors": errors[:10],
        # The per-answer score DPO's pairs are ranked by, averaged: what preference training moves.
        "answer_score": round(sum(answer_scores) / n, 3) if n else 0.0,
    }
    if "event_type" in metrics["macro_f1"]:
        metrics["event_type_macro_f1"] = metrics["macro_f1"]["event_type"]
    field_rows = [[s[field] for field in field_accuracy] for s in scores]
    metrics["ci95"] = {
        "json_rate": rounded(wilson_interval(sum(p.ok_json for p in parsed), n)),
        "valid_rate": rounded(wilson_interval(sum(p.valid for p in parsed), n)),
        "field_accuracy_mean": rounded(bootstrap_interval(field_rows)) if field_accuracy else None,
        "field_accuracy": {field: rounded(bootstrap_interval([s[field] for s in scores])) for field in field_accuracy},
        "caption_similarity": rounded(bootstrap_interval([[s[f] for f in schema.text_fields] for s in scores]))
        if similarities else None,
        "answer_score": rounded(bootstrap_interval(answer_scores)) if n else None,
    }
    return metrics


def field_means(scores: list[dict[str, float | None]], fields: list[str]) -> dict[str, float]:
    """Each field's mean score over the clips whose label knows it (3 decimals); fields nobody knows are left out.

    >>> field_means([{"a": 1.0, "b": None}, {"a": 0.0, "b": None}], ["a", "b"])
    {'a': 0.5}
    """
    means = {}
    for field in fields:
        known = [s[field] for s in scores if s[field] is not None]
        if known:
            means[field] = round(sum(known) / len(known), 3)
    return means


def most_frequent_answer(schema: SchemaSpec, labels: list[dict]) -> dict[str, Any]:
    """The constant answer to beat: each scored (enum and list) field's most frequent known label value.

    >>> from video_vlm.schema import load_schema
    >>> labels = [{"scene": "Urban", "rule_violations": []}, {"scene": "Rural", "rule_violations": []},
    ...           {"scene": "Urban", "rule_violations": ["speeding"]}]
    >>> answer = most_frequent_answer(load_schema(None), labels)
    >>> answer["scene"], answer["rule_violations"], "event_type" in answer
    ('Urban', [], False)
    """
    answer = {}
    for field in schema.enum_fields + schema.list_fields:
        values = [label[field] for label in labels if label.get(field, UNKNOWN) != UNKNOWN]
        keys = [tuple(v) if isinstance(v, list) else v for v in values]
        if keys:
            value = most_frequent(keys)
            answer[field] = list(value) if isinstance(value, tuple) else value
    return answer


def compare_outputs(schema: SchemaSpec, outputs: dict[str, list[str]], labels: list[dict],
                    truncated: dict[str, list[bool]] | None = None, max_new_tokens: int = 0,
                    base_label: str = "base") -> dict[str, Any]:
    """Base against tuned from their answers to the same clips: each model's `score_outputs`, the constant
    baseline (each field's most frequent value, scored by `SchemaSpec.field_scores` like the models), the headline
    on the mean field accuracy with the verdict, and warnings (one answer for every clip, answers cut off).

    >>> from video_vlm.schema import load_schema
    >>> schema = load_schema(None)
    >>> label = {"caption": "A car.", "event_type": "collision", "rule_violations": [], "intended_action": "turn_left",
    ...          "traffic_density": "low", "visibility": "good", "scene": "Urban"}
    >>> labels = [label, {**label, "event_type": "no_incident"}] * 4
    >>> same = [schema.render_label(label)] * 8
    >>> report = compare_outputs(schema, {"base": same, "tuned": same}, labels)
    >>> report["verdict"], report["headline"]["difference"], report["baselines"]["most_frequent"]["field_accuracy_mean"]
    ('no better than a constant answer', 0.0, 0.917)
    """
    truncated = truncated or {}
    models = {
        name: score_outputs(schema, texts, labels, truncated.get(name), max_new_tokens) for name, texts in outputs.items()
    }
    scored_fields = schema.enum_fields + schema.list_fields
    known_fields = [f for f in scored_fields if any(label.get(f, UNKNOWN) != UNKNOWN for label in labels)]
    predictions = {name: [schema.parse_output(t).parsed for t in texts] for name, texts in outputs.items()}
    constant = most_frequent_answer(schema, labels)
    rows = {  # per clip, the score of each field some label knows: what the paired bootstraps resample
        name: [[schema.field_scores(p, label)[f] for f in known_fields] for p, label in zip(preds, labels)]
        for name, preds in {**predictions, "most_frequent": [constant] * len(labels)}.items()
    }
    n = len(labels)
    warnings = []
    for name, preds in predictions.items():
        label = base_label if name == "base" else name
        # The fields that are scored: a caption that varies around one fixed set of fields is still one answer.
        answer = constant_answer([json.dumps({f: p.get(f) for f in scored_fields}) if p else None for p in preds])
        models[name]["constant_answer"] = json.loads(answer) if answer is not None else None
        if answer is not None:
            warnings.append(same_answer_warning(label, json.loads(answer), n, "clips"))
        if models[name]["truncated"]:
            warnings.append(truncation_warning(label, models[name]["truncated"], n, max_new_tokens))
    base, tuned = models["base"], models["tuned"]
    tuned_is_constant = tuned["constant_answer"] is not None
    if known_fields:
        constant_accuracy = field_means([schema.field_scores(constant, label) for label in labels], known_fields)
        constant_mean = mean_of_columns(rows["most_frequent"])
        baselines = {"most_frequent": {
            "answer": constant, "field_accuracy": constant_accuracy,
            "field_accuracy_mean": round(constant_mean, 3) if constant_mean is not None else None,
            "ci95": rounded(bootstrap_interval(rows["most_frequent"])),
        }}
        difference = paired_bootstrap_interval(rows["base"], rows["tuned"])
        against_constant = paired_bootstrap_interval(rows["most_frequent"], rows["tuned"])
        base_score, tuned_score = base["field_accuracy_mean"] or 0.0, tuned["field_accuracy_mean"] or 0.0
        constant_score = baselines["most_frequent"]["field_accuracy_mean"] or 0.0
        headline = {
            "metric": "field_accuracy_mean", "label": "field accuracy", "base": base_score, "tuned": tuned_score,
            "difference": round(tuned_score - base_score, 3), "ci95": rounded(difference),
            "interval": "paired bootstrap over clips (2000 resamples, seed 0)",
            "constant": {"label": "each field's most frequent value", "score": constant_score,
                         "difference": round(tuned_score - constant_score, 3), "ci95": rounded(against_constant)},
            "verdict": verdict(difference, against_constant, tuned_is_constant),
        }
    else:  # no field has a known label: validity is all there is to compare, and no constant answer to score
        baselines = {}
        valid = {name: [bool(p) for p in preds] for name, preds in predictions.items()}
        difference = paired_rate_interval(valid["base"], valid["tuned"])
        headline = {
            "metric": "valid_rate", "label": "valid JSON rate", "base": base["valid_rate"], "tuned": tuned["valid_rate"],
            "difference": round(tuned["valid_rate"] - base["valid_rate"], 3), "ci95": rounded(difference),
            "interval": "Newcombe's paired score interval (method 10) on the per-clip outcomes",
            "verdict": verdict(difference, None, tuned_is_constant),
        }
    return {"models": models, "baselines": baselines, "headline": headline, "verdict": headline["verdict"],
            "warnings": warnings}


def evaluate(run: RunDir, limit: int | None = None, batch_size: int | None = None, baseline: str | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> dict:
    from tqdm import tqdm

    from core.generation import generate_answers
    from core.media.errors import MediaError

    settings = deep_merge(run.read_config(), eval_settings(overrides))
    cfg = validate_config(VideoConfig, settings, source=str(run.config_path))
    data = cfg.final_data
    schema = load_task_schema(data)
    report_items = verified_items(data, schema)
    items = split_items(report_items, SPLIT, limit or cfg.eval.limit, data.seed)
    if not items:
        raise ValueError(f"{data.root}: no clip in the '{SPLIT}' split (data.val_fraction is {data.val_fraction})")
    tuned_model, base_model, processor, artifact = load_run_model(run, cfg, baseline)
    batch_size = batch_size or cfg.eval.batch_size
    outputs: dict[str, list[str]] = {name: [] for name in MODELS}
    truncated: dict[str, list[bool]] = {name: [] for name in MODELS}
    seconds = {name: 0.0 for name in MODELS}
    scored, skipped = [], []
    with tqdm(total=len(items), desc="val", unit="clip") as bar:
        for start in range(0, len(items), batch_size):
            batch, conversations = [], []
            for item in items[start : start + batch_size]:
                try:
                    clip = clip_frames(item, report_items.root, data)
                except MediaError as error:  # verified, but damaged past the probe: count it, keep going
                    skipped.append(f"{item.video}: {error}")
                    continue
                batch.append(item)
                conversations.append(prompt_messages(data, schema, video=clip))
            for name, model in (("base", base_model), ("tuned", tuned_model)):
                if not conversations:
                    continue
                started = time.perf_counter()
                answers = generate_answers(
                    model, processor, conversations, max_new_tokens=cfg.eval.max_new_tokens,
                    # A separate base model (full fine-tuning's base, a stage's weights) answers as loaded.
                    use_adapter=name == "tuned" or base_model is not tuned_model, batch_size=batch_size,
                )
                outputs[name] += [answer.text for answer in answers]
                truncated[name] += [answer.truncated for answer in answers]
                seconds[name] += time.perf_counter() - started
            scored += batch
            bar.update(len(items[start : start + batch_size]))
    labels = [item.label for item in scored]
    report: dict[str, Any] = {
        "run": run.id,
        "split": SPLIT,
        "artifact": str(artifact),
        "baseline": baseline or "base",
        "created": time.time(),
        "skipped": skipped,
        "max_new_tokens": cfg.eval.max_new_tokens,
        # What was scored: the weights' revision and the data's fingerprint, as the trainer recorded them.
        "provenance": model_and_data(run),
    }
    report.update(compare_outputs(schema, outputs, labels, truncated, cfg.eval.max_new_tokens, base_label=baseline or "base"))
    for name in MODELS:
        report["models"][name]["seconds"] = round(seconds[name], 2)
    report["examples"] = [
        {
            "video": item.video,
            "start_s": item.start_s,
            "end_s": item.end_s,
            "label": item.label,
            "base": outputs["base"][i],
            "tuned": outputs["tuned"][i],
        }
        for i, item in enumerate(scored[:50])
    ]
    write_json_atomic(run.eval_report_path(SPLIT, baseline), report)
    return report


def format_table(report: dict) -> str:
    base, tuned = report["models"]["base"], report["models"]["tuned"]

    def fmt(value) -> str:
        if value is None:
            return f"{'-':>8}"
        return f"{value:>8d}" if isinstance(value, int) else f"{value:>8.3f}"

    ci = tuned.get("ci95") or {}

    def interval(value) -> str:
        return f"   [{value[0]:.3f}, {value[1]:.3f}]" if isinstance(value, list) else ""

    lines = [f"{'metric':<28} {'base':>8} {'tuned':>8}" + ("   tuned 95% CI" if ci else "")]
    for key in ("json_rate", "valid_rate", "unparseable", "truncated"):
        if key in tuned:
            lines.append(f"{key:<28} {fmt(base.get(key))} {fmt(tuned[key])}{interval(ci.get(key))}")
    for field in tuned["field_accuracy"]:
        lines.append(f"{'accuracy ' + field:<28} {fmt(base['field_accuracy'].get(field))} {fmt(tuned['field_accuracy'][field])}"
                     f"{interval((ci.get('field_accuracy') or {}).get(field))}")
    lines.append(f"{'accuracy (mean)':<28} {fmt(base['field_accuracy_mean'])} {fmt(tuned['field_accuracy_mean'])}"
                 f"{interval(ci.get('field_accuracy_mean'))}")
    if "event_type_macro_f1" in tuned:
        lines.append(f"{'event_type macro-F1':<28} {fmt(base.get('event_type_macro_f1'))} {fmt(tuned['event_type_macro_f1'])}")
    lines.append(f"{'caption_similarity':<28} {fmt(base['caption_similarity'])} {fmt(tuned['caption_similarity'])}"
                 f"{interval(ci.get('caption_similarity'))}")
    if "answer_score" in tuned:
        lines.append(f"{'answer score (pairs rank by)':<28} {fmt(base.get('answer_score'))} {fmt(tuned['answer_score'])}"
                     f"{interval(ci.get('answer_score'))}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Run folder to evaluate")
    parser.add_argument("--limit", type=int, default=None, help="Score at most N validation clips")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--baseline", default=None, help="A finished stage (e.g. the SFT stage before DPO) whose weights answer in the base's place")
    parser.add_argument("overrides", nargs="*", metavar="eval.KEY=VALUE",
                        help="Evaluation settings for this evaluation only, e.g. eval.max_new_tokens=768")
    args = parser.parse_args(argv)
    return run_evaluation_main(
        args.run, lambda run: evaluate(run, args.limit, args.batch_size, args.baseline, args.overrides), _summarise
    )


def _summarise(run: RunDir, report: dict) -> None:
    print(f"{report['split']}: {report['models']['tuned']['n']} clips, artifact {Path(report['artifact']).name}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} clip(s) that failed to decode, e.g. {report['skipped'][0]}")
    print(format_table(report))
    stage = None if report.get("baseline", "base") == "base" else report["baseline"]
    if stage:
        print(f"base = the {stage} stage's weights")
    constant = report["baselines"].get("most_frequent")
    if constant:
        print(f"constant answer (each field's most frequent value): field accuracy {constant['field_accuracy_mean']:.3f}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"verdict: {verdict_sentence(report['headline'], stage or 'base')}")
    print(f"wrote {run.eval_report_path(SPLIT, stage)}")


if __name__ == "__main__":
    sys.exit(main())
