"""Base against tuned on held-out images, with the run's own config.

    python -m image_vlm.evaluate --run runs/image-... [--split test] [--limit N] [--baseline STAGE] [eval.KEY=VALUE ...]

Writes `eval/<split>.json` in the run folder (`eval/<split>-vs-<STAGE>.json` when a finished stage's weights,
e.g. the warm start a DPO run began from, answer in the base model's place) and prints a table: accuracy, precision, recall, F1,
confusion matrix, format-compliance rate and the unparseable count, each with its 95 % interval, then the verdict.
Scoring is the reward's own (`image_vlm.rewards.score_answer`), so the metric and the training signal cannot drift
apart; the constant-answer baseline is scored by it too.

The verdict (`core.verdict`) compares tuned with base through the interval of their paired accuracy difference,
after checking that tuned beats always giving the split's most frequent answer. Answers cut off at
`eval.max_new_tokens` are counted apart; `eval.max_new_tokens=512` on the command line raises the limit for one
evaluation (only `eval.*` settings change: the weights and data are the run's).
"""

from __future__ import annotations

import argparse
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
    constant_answer,
    most_frequent,
    paired_rate_interval,
    ratio_bootstrap_interval,
    rounded,
    same_answer_warning,
    truncation_warning,
    verdict,
    verdict_sentence,
    wilson_interval,
)
from image_vlm.config import ImageConfig
from image_vlm.rewards import SOLUTION_END, SOLUTION_START, score_answer
from image_vlm.task import image_size_arguments, prompt_messages, task_rows

UNPARSEABLE = "unparseable"


def classification_metrics(expected: list[str], predicted: list[str | None], format_ok: list[bool], positive: str) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 for `positive`, confusion matrix, format compliance.

    >>> m = classification_metrics(["Yes", "Yes", "No", "No"], ["Yes", None, "Yes", "No"], [True, False, True, True], "Yes")
    >>> m["accuracy"], m["precision"], m["recall"], m["unparseable"], m["format_rate"]
    (0.5, 0.5, 0.5, 1, 0.75)
    >>> m["confusion"]["Yes"]
    {'Yes': 1, 'No': 0, 'unparseable': 1}
    """
    classes = sorted(set(expected), key=lambda c: (c != positive, c))
    norm = [p if p in classes else (UNPARSEABLE if p is None else p) for p in predicted]
    columns = classes + sorted({p for p in norm if p not in classes and p != UNPARSEABLE}) + [UNPARSEABLE]
    confusion = {c: {col: 0 for col in columns} for c in classes}
    for e, p in zip(expected, norm):
        confusion[e][p] += 1
    n = len(expected)
    tp = sum(e == positive and p == positive for e, p in zip(expected, norm))
    fp = sum(e != positive and p == positive for e, p in zip(expected, norm))
    fn = sum(e == positive and p != positive for e, p in zip(expected, norm))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "n": n,
        "accuracy": sum(e == p for e, p in zip(expected, norm)) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "format_rate": sum(format_ok) / n if n else 0.0,
        "unparseable": sum(p == UNPARSEABLE for p in norm),
        "positive": positive,
        "confusion": confusion,
    }


def canonical_answer(parsed: str | None, answers: list[str]) -> str | None:
    """Map a parsed solution onto the configured answers, ignoring case and spaces."""
    if parsed is None:
        return None
    for answer in answers:
        if parsed.strip().lower() == answer.strip().lower():
            return answer
    return parsed.strip()


def metric_intervals(expected: list[str], predicted: list[str | None], format_ok: list[bool], positive: str) -> dict:
    """95 % intervals of `classification_metrics`' rates: Wilson for accuracy, precision, recall and format rate
    (precision over the answers that said `positive`, recall over the samples that are), a bootstrap for F1.

    >>> classes = ["Yes", "No"] * 24
    >>> metric_intervals(classes, ["No"] * 48, [True] * 48, "Yes")["accuracy"]
    [0.364, 0.636]
    """
    n = len(expected)
    tp = [e == positive and p == positive for e, p in zip(expected, predicted)]
    fp = [e != positive and p == positive for e, p in zip(expected, predicted)]
    fn = [e == positive and p != positive for e, p in zip(expected, predicted)]
    return {
        "accuracy": rounded(wilson_interval(sum(e == p for e, p in zip(expected, predicted)), n)),
        "precision": rounded(wilson_interval(sum(tp), sum(tp) + sum(fp))),
        "recall": rounded(wilson_interval(sum(tp), sum(tp) + sum(fn))),
        "f1": rounded(ratio_bootstrap_interval([2 * t for t in tp], [2 * t + a + b for t, a, b in zip(tp, fp, fn)])),
        "format_rate": rounded(wilson_interval(sum(format_ok), n)),
    }


def compare_answers(expected: list[str], outputs: dict[str, list[str]], answers: list[str], positive: str,
                    reasoning: bool = True, truncated: dict[str, list[bool]] | None = None, max_new_tokens: int = 0,
                    base_label: str = "base") -> dict[str, Any]:
    """Base against tuned from their answers to the same images: each model's metrics with intervals, the
    constant-answer baselines, the headline with the verdict, and warnings (one answer for every image, answers
    cut off at `max_new_tokens`). `truncated` holds, per model, which answers hit the token limit.

    >>> expected = ["Yes", "No"] * 4
    >>> outputs = {"base": ["?"] * 8, "tuned": ["<SOLUTION>No</SOLUTION>"] * 8}
    >>> report = compare_answers(expected, outputs, ["Yes", "No"], "Yes")
    >>> report["verdict"], report["warnings"]
    ('no better than a constant answer', ['tuned answers "No" to all 8 images'])
    """
    truncated = truncated or {}
    models: dict[str, dict[str, Any]] = {}
    correct: dict[str, list[bool]] = {}
    predictions: dict[str, list[str | None]] = {}
    # The constant answer runs through the same scorer as the models: one scorer for every number in the report.
    majority = most_frequent(expected, order=[positive, *answers])  # a tie scores the same whichever wins
    constant_texts = [f"{SOLUTION_START}{majority}{SOLUTION_END}"] * len(expected)
    for name, texts in {**outputs, "majority": constant_texts}.items():
        scores = [score_answer(t, e, reasoning) for t, e in zip(texts, expected)]
        predicted = [canonical_answer(s["parsed"], answers) for s in scores]
        format_ok = [s["format_ok"] for s in scores]
        correct[name] = [e == p for e, p in zip(expected, predicted)]
        predictions[name] = predicted
        if name == "majority":
            continue
        metrics = classification_metrics(expected, predicted, format_ok, positive)
        metrics["ci95"] = metric_intervals(expected, predicted, format_ok, positive)
        metrics["truncated"] = sum(truncated.get(name) or [])
        models[name] = metrics
    n = len(expected)
    baselines = {
        "majority": {"answer": majority, "accuracy": round(sum(correct["majority"]) / n, 3) if n else 0.0,
                     "ci95": rounded(wilson_interval(sum(correct["majority"]), n))},
        "chance": {"accuracy": round(1 / len(answers), 3) if answers else 0.0, "answers": len(answers)},
    }
    warnings = []
    for name in models:
        label = base_label if name == "base" else name
        answer = constant_answer(predictions[name])
        models[name]["constant_answer"] = answer
        if answer is not None:
            warnings.append(same_answer_warning(label, answer, n, "images"))
        if models[name]["truncated"]:
            warnings.append(truncation_warning(label, models[name]["truncated"], n, max_new_tokens))
    difference = paired_rate_interval(correct["base"], correct["tuned"])
    against_constant = paired_rate_interval(correct["majority"], correct["tuned"])
    base_score, tuned_score = models["base"]["accuracy"], models["tuned"]["accuracy"]
    headline = {
        "metric": "accuracy", "label": "accuracy", "base": base_score, "tuned": tuned_score,
        "difference": round(tuned_score - base_score, 3), "ci95": rounded(difference),
        "interval": "Newcombe's paired score interval (method 10) on the per-image outcomes",
        "constant": {"label": f'always "{majority}"', "score": baselines["majority"]["accuracy"],
                     "difference": round(tuned_score - baselines["majority"]["accuracy"], 3),
                     "ci95": rounded(against_constant)},
        "verdict": verdict(difference, against_constant, models["tuned"]["constant_answer"] is not None),
    }
    return {"models": models, "baselines": baselines, "headline": headline, "verdict": headline["verdict"],
            "warnings": warnings}


def evaluate(run: RunDir, split: str | None = None, limit: int | None = None, batch_size: int | None = None,
             baseline: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    from tqdm import tqdm

    from core.generation import generate_answers
    from core.media.image import open_image

    settings = deep_merge(run.read_config(), eval_settings(overrides))
    cfg = validate_config(ImageConfig, settings, source=str(run.config_path))
    split = split or cfg.data.eval_split
    rows = task_rows(cfg.data, split, limit or cfg.eval.limit)
    model, base_model, processor, artifact = load_run_model(
        run, cfg, baseline, **image_size_arguments(cfg.model, cfg.data.max_pixels)
    )
    answers = list(dict.fromkeys(cfg.data.labels.values()))
    positive = cfg.data.labels.get("wildfire", answers[0])
    batch_size = batch_size or cfg.eval.batch_size
    report: dict[str, Any] = {
        "run": run.id, "split": split, "artifact": str(artifact), "baseline": baseline or "base", "created": time.time(),
        "max_new_tokens": cfg.eval.max_new_tokens, "models": {},
        # What was scored: the weights' revision and the data's fingerprint, as the trainer recorded them.
        "provenance": model_and_data(run),
    }
    outputs: dict[str, list[str]] = {}
    truncated: dict[str, list[bool]] = {}
    seconds: dict[str, float] = {}
    # A separate baseline model (full fine-tuning's base, or a stage's weights) answers with its weights as loaded.
    for name, use_adapter in (("base", base_model is not model), ("tuned", True)):
        generated = []
        started = time.perf_counter()
        with tqdm(total=len(rows), desc=f"{name:>5}", unit="img") as bar:
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                conversations = [prompt_messages(cfg.data, open_image(r["image_path"])) for r in batch]
                generated += generate_answers(
                    model if name == "tuned" else base_model, processor, conversations, max_new_tokens=cfg.eval.max_new_tokens,
                    use_adapter=use_adapter, batch_size=batch_size,
                )
                bar.update(len(batch))
        seconds[name] = round(time.perf_counter() - started, 2)
        outputs[name] = [answer.text for answer in generated]
        truncated[name] = [answer.truncated for answer in generated]
    report.update(compare_answers(
        [r["answer"] for r in rows], outputs, answers, positive, cfg.data.reasoning, truncated, cfg.eval.max_new_tokens,
        base_label=baseline or "base",
    ))
    for name, value in seconds.items():
        report["models"][name]["seconds"] = value
    report["examples"] = [
        {"image_path": r["image_path"], "answer": r["answer"], "base": outputs["base"][i], "tuned": outputs["tuned"][i]}
        for i, r in enumerate(rows[:50])
    ]
    write_json_atomic(run.eval_report_path(split, baseline), report)
    return report


def format_table(report: dict) -> str:
    keys = ("accuracy", "precision", "recall", "f1", "format_rate", "unparseable", "truncated")
    base_ci, tuned_ci = (report["models"][name].get("ci95") or {} for name in ("base", "tuned"))
    lines = [f"{'metric':<12} {'base':>8} {'tuned':>8}   {'base 95% CI':<16} {'tuned 95% CI'}"]
    for key in keys:
        if key not in report["models"]["tuned"]:
            continue
        base, tuned = report["models"]["base"][key], report["models"]["tuned"][key]
        fmt = (lambda v: f"{v:>8d}") if isinstance(base, int) else (lambda v: f"{v:>8.3f}")
        intervals = f"{_interval(base_ci.get(key)):<16} {_interval(tuned_ci.get(key))}"
        lines.append(f"{key:<12} {fmt(base)} {fmt(tuned)}   {intervals}".rstrip())
    for name in ("base", "tuned"):
        lines.append(f"confusion ({name}, rows = expected): {report['models'][name]['confusion']}")
    return "\n".join(lines)


def _interval(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Run folder to evaluate")
    parser.add_argument("--split", default=None, help="Split to score (default: the config's data.eval_split)")
    parser.add_argument("--limit", type=int, default=None, help="Score at most N images, class-balanced")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--baseline", default=None, help="A finished stage (e.g. warm_start) whose weights answer in the base's place")
    parser.add_argument("overrides", nargs="*", metavar="eval.KEY=VALUE",
                        help="Evaluation settings for this evaluation only, e.g. eval.max_new_tokens=512")
    args = parser.parse_args(argv)
    return run_evaluation_main(
        args.run, lambda run: evaluate(run, args.split, args.limit, args.batch_size, args.baseline, args.overrides),
        _summarise,
    )


def _summarise(run: RunDir, report: dict) -> None:
    print(f"{report['split']}: {report['models']['base']['n']} images, artifact {Path(report['artifact']).name}")
    print(format_table(report))
    stage = None if report.get("baseline", "base") == "base" else report["baseline"]
    if stage:
        print(f"base = the {stage} stage's weights")
    majority, chance = report["baselines"]["majority"], report["baselines"]["chance"]
    print(f"constant answers on the same images: always \"{majority['answer']}\" {majority['accuracy']:.3f} "
          f"{_interval(majority['ci95'])}, chance {chance['accuracy']:.3f}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"verdict: {verdict_sentence(report['headline'], stage or 'base')}")
    print(f"wrote {run.eval_report_path(report['split'], stage)}")


if __name__ == "__main__":
    sys.exit(main())
