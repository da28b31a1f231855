"""Base against tuned on the held-out clips, with the run's own config.

    python -m video_vlm.evaluate --run runs/video-... [--limit N] [--batch-size B] [--baseline STAGE]

Writes `eval/val.json` in the run folder and prints a table: JSON validity, schema validity, per-field
accuracy, macro-F1 of event_type, caption similarity and the unparseable count. Base and tuned answers come
from one copy of the weights (the adapter switched off for base), on the same frames, sampled the way
training sampled them (`video_vlm.task.sample_clip`). Scoring is the schema's own (`SchemaSpec.field_scores`).
`--baseline STAGE` puts a finished stage's weights (an SFT stage before DPO) in the base's place and writes
`eval/val-vs-STAGE.json`: what the later stages added to the weights they started from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core.cli import run_evaluation_main
from core.config import validate_config
from core.export import load_run_model, report_name
from core.files import write_json_atomic
from core.runs import RunDir
from video_vlm.config import VideoConfig
from video_vlm.schema import SchemaSpec
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


def score_outputs(schema: SchemaSpec, texts: list[str], labels: list[dict]) -> dict[str, Any]:
    """Validity rates, per-field accuracy, macro-F1 and caption similarity of model outputs against labels.

    Fields are scored on the JSON the model wrote even when another field breaks the schema (validity is
    its own number); a field whose label is "unknown" is left out. Enum fields score exact matches, list
    fields the Jaccard index of the two sets.

    >>> from video_vlm.schema import load_schema
    >>> schema = load_schema(None)
    >>> label = {"caption": "A white square moves left.", "event_type": "collision", "rule_violations": [],
    ...          "intended_action": "turn_left", "traffic_density": "low", "visibility": "good", "scene": "Urban"}
    >>> good = schema.render_label(label)
    >>> m = score_outputs(schema, [good, "no json", good.replace("turn_left", "turn_right")], [label] * 3)
    >>> m["json_rate"], m["valid_rate"], m["unparseable"], m["field_accuracy"]["intended_action"]
    (0.667, 0.667, 1, 0.333)
    """
    parsed = [schema.parse_output(text) for text in texts]
    predictions = [p.parsed if isinstance(p.parsed, dict) else None for p in parsed]
    n = len(texts)
    scores = [schema.field_scores(pred, label) for pred, label in zip(predictions, labels)]
    scored_fields = schema.enum_fields + schema.list_fields
    field_accuracy = {}
    for field in scored_fields:
        known = [s[field] for s in scores if s[field] is not None]
        if known:
            field_accuracy[field] = round(sum(known) / len(known), 3)
    similarities = [s[field] for s in scores for field in schema.text_fields if s[field] is not None]
    macro = {field: schema.macro_f1(predictions, labels, field) for field in scored_fields}
    metrics: dict[str, Any] = {
        "n": n,
        "json_rate": round(sum(p.ok_json for p in parsed) / n, 3) if n else 0.0,
        "valid_rate": round(sum(p.valid for p in parsed) / n, 3) if n else 0.0,
        "unparseable": sum(not p.ok_json for p in parsed),
        "field_accuracy": field_accuracy,
        "field_accuracy_mean": round(sum(field_accuracy.values()) / len(field_accuracy), 3) if field_accuracy else None,
        "macro_f1": {field: round(value, 3) for field, value in macro.items() if value is not None},
        "caption_similarity": round(sum(similarities) / len(similarities), 3) if similarities else None,
        "errors": [p.error for p in parsed if not p.valid][:10],
        # The per-answer score DPO's pairs are ranked by, averaged: what preference training moves.
        "answer_score": round(sum(parsed_score(schema, p, label) for p, label in zip(parsed, labels)) / n, 3) if n else 0.0,
    }
    if "event_type" in metrics["macro_f1"]:
        metrics["event_type_macro_f1"] = metrics["macro_f1"]["event_type"]
    return metrics


def evaluate(run: RunDir, limit: int | None = None, batch_size: int | None = None, baseline: str | None = None) -> dict:
    from tqdm import tqdm

    from core.generation import generate
    from core.media.errors import MediaError

    cfg = validate_config(VideoConfig, run.read_config(), source=str(run.config_path))
    data = cfg.final_data
    schema = load_task_schema(data)
    report_items = verified_items(data, schema)
    items = split_items(report_items, SPLIT, limit or cfg.eval.limit, data.seed)
    if not items:
        raise ValueError(f"{data.root}: no clip in the '{SPLIT}' split (data.val_fraction is {data.val_fraction})")
    tuned_model, base_model, processor, artifact = load_run_model(run, cfg, baseline)
    batch_size = batch_size or cfg.eval.batch_size
    outputs: dict[str, list[str]] = {name: [] for name in MODELS}
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
                outputs[name] += generate(
                    model, processor, conversations, max_new_tokens=cfg.eval.max_new_tokens,
                    # A separate base model (full fine-tuning's base, a stage's weights) answers as loaded.
                    use_adapter=name == "tuned" or base_model is not tuned_model, batch_size=batch_size,
                )
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
        "models": {},
    }
    for name in MODELS:
        metrics = score_outputs(schema, outputs[name], labels)
        metrics["seconds"] = round(seconds[name], 2)
        report["models"][name] = metrics
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
    write_json_atomic(run.eval_dir / f"{report_name(SPLIT, baseline)}.json", report)
    return report


def format_table(report: dict) -> str:
    base, tuned = report["models"]["base"], report["models"]["tuned"]

    def fmt(value) -> str:
        if value is None:
            return f"{'-':>8}"
        return f"{value:>8d}" if isinstance(value, int) else f"{value:>8.3f}"

    rows = [("json_rate", "json_rate"), ("valid_rate", "valid_rate"), ("unparseable", "unparseable")]
    lines = [f"{'metric':<28} {'base':>8} {'tuned':>8}"]
    for label, key in rows:
        lines.append(f"{label:<28} {fmt(base[key])} {fmt(tuned[key])}")
    for field in tuned["field_accuracy"]:
        lines.append(f"{'accuracy ' + field:<28} {fmt(base['field_accuracy'].get(field))} {fmt(tuned['field_accuracy'][field])}")
    lines.append(f"{'accuracy (mean)':<28} {fmt(base['field_accuracy_mean'])} {fmt(tuned['field_accuracy_mean'])}")
    if "event_type_macro_f1" in tuned:
        lines.append(f"{'event_type macro-F1':<28} {fmt(base.get('event_type_macro_f1'))} {fmt(tuned['event_type_macro_f1'])}")
    lines.append(f"{'caption_similarity':<28} {fmt(base['caption_similarity'])} {fmt(tuned['caption_similarity'])}")
    if "answer_score" in tuned:
        lines.append(f"{'answer score (pairs rank by)':<28} {fmt(base.get('answer_score'))} {fmt(tuned['answer_score'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Run folder to evaluate")
    parser.add_argument("--limit", type=int, default=None, help="Score at most N validation clips")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--baseline", default=None, help="A finished stage (e.g. the SFT stage before DPO) whose weights answer in the base's place")
    args = parser.parse_args(argv)
    return run_evaluation_main(
        args.run, lambda run: evaluate(run, args.limit, args.batch_size, args.baseline), _summarise
    )


def _summarise(run: RunDir, report: dict) -> None:
    print(f"{report['split']}: {report['models']['tuned']['n']} clips, artifact {Path(report['artifact']).name}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} clip(s) that failed to decode, e.g. {report['skipped'][0]}")
    print(format_table(report))
    stage = None if report.get("baseline", "base") == "base" else report["baseline"]
    if stage:
        print(f"base = the {stage} stage's weights")
    print(f"wrote {run.eval_dir / (report_name(SPLIT, stage) + '.json')}")


if __name__ == "__main__":
    sys.exit(main())
