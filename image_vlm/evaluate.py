"""Base against tuned on held-out images, with the run's own config.

    python -m image_vlm.evaluate --run runs/image-... [--split test] [--limit N] [--baseline STAGE]

Writes `eval/<split>.json` in the run folder (`eval/<split>-vs-<STAGE>.json` when a finished stage's weights,
e.g. the warm start a DPO run began from, answer in the base model's place) and prints a table: accuracy, precision, recall, F1,
confusion matrix, format-compliance rate and the unparseable count. Scoring is the reward's own
(`image_vlm.rewards.score_answer`), so the metric and the training signal cannot drift apart.
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
from image_vlm.config import ImageConfig
from image_vlm.rewards import score_answer
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


def evaluate(run: RunDir, split: str | None = None, limit: int | None = None, batch_size: int | None = None,
             baseline: str | None = None) -> dict:
    from tqdm import tqdm

    from core.generation import generate
    from core.media.image import open_image

    cfg = validate_config(ImageConfig, run.read_config(), source=str(run.config_path))
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
        "models": {},
    }
    outputs: dict[str, list[str]] = {}
    # A separate baseline model (full fine-tuning's base, or a stage's weights) answers with its weights as loaded.
    for name, use_adapter in (("base", base_model is not model), ("tuned", True)):
        texts: list[str] = []
        started = time.perf_counter()
        with tqdm(total=len(rows), desc=f"{name:>5}", unit="img") as bar:
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                conversations = [prompt_messages(cfg.data, open_image(r["image_path"])) for r in batch]
                texts += generate(
                    model if name == "tuned" else base_model, processor, conversations, max_new_tokens=cfg.eval.max_new_tokens,
                    use_adapter=use_adapter, batch_size=batch_size,
                )
                bar.update(len(batch))
        scores = [score_answer(t, r["answer"], cfg.data.reasoning) for t, r in zip(texts, rows)]
        predicted = [canonical_answer(s["parsed"], answers) for s in scores]
        metrics = classification_metrics([r["answer"] for r in rows], predicted, [s["format_ok"] for s in scores], positive)
        metrics["seconds"] = round(time.perf_counter() - started, 2)
        report["models"][name] = metrics
        outputs[name] = texts
    report["examples"] = [
        {"image_path": r["image_path"], "answer": r["answer"], "base": outputs["base"][i], "tuned": outputs["tuned"][i]}
        for i, r in enumerate(rows[:50])
    ]
    write_json_atomic(run.eval_dir / f"{report_name(split, baseline)}.json", report)
    return report


def format_table(report: dict) -> str:
    keys = ("accuracy", "precision", "recall", "f1", "format_rate", "unparseable")
    lines = [f"{'metric':<12} {'base':>8} {'tuned':>8}"]
    for key in keys:
        base, tuned = report["models"]["base"][key], report["models"]["tuned"][key]
        fmt = (lambda v: f"{v:>8d}") if isinstance(base, int) else (lambda v: f"{v:>8.3f}")
        lines.append(f"{key:<12} {fmt(base)} {fmt(tuned)}")
    for name in ("base", "tuned"):
        lines.append(f"confusion ({name}, rows = expected): {report['models'][name]['confusion']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="Run folder to evaluate")
    parser.add_argument("--split", default=None, help="Split to score (default: the config's data.eval_split)")
    parser.add_argument("--limit", type=int, default=None, help="Score at most N images, class-balanced")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--baseline", default=None, help="A finished stage (e.g. warm_start) whose weights answer in the base's place")
    args = parser.parse_args(argv)
    return run_evaluation_main(
        args.run, lambda run: evaluate(run, args.split, args.limit, args.batch_size, args.baseline), _summarise
    )


def _summarise(run: RunDir, report: dict) -> None:
    print(f"{report['split']}: {report['models']['base']['n']} images, artifact {Path(report['artifact']).name}")
    print(format_table(report))
    stage = None if report.get("baseline", "base") == "base" else report["baseline"]
    if stage:
        print(f"base = the {stage} stage's weights")
    print(f"wrote {run.eval_dir / (report_name(report['split'], stage) + '.json')}")


if __name__ == "__main__":
    sys.exit(main())
