"""The SFT warm start that runs before GRPO: its targets, a user's own targets from JSONL, its batches and rows
(image_vlm/train.py runs it with `core.stages.sft_stage`).

A model that has never seen the tags (random weights, or a base model that answers in prose) never writes a
`<SOLUTION>` block, so every reward is 0, the group advantages vanish, and GRPO has nothing to learn from.
A short supervised stage on answers in the format fixes that, the way R1-style recipes start.

Targets come from a template (`<REASONING>` with a fixed text, then `<SOLUTION>` with the answer) or from a
JSONL of the user's own reasoning. With `warm_start.answers: random` the template's answers are coin flips,
drawn afresh each time a row is batched: the model learns the format but not the task, so what GRPO adds
afterwards shows in its correctness curve.

    python -m image_vlm.warm_start verify --config image_vlm/configs/tiny.yaml   # the JSONL's per-line report
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from core.config import ConfigError
from core.jsonl import json_object_lines
from image_vlm.config import ImageConfig, ImageDataSection, WarmStartSection
from image_vlm.rewards import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START

WARM_START = "warm_start"  # the stage's name in the run folder: checkpoints/warm_start/, stages/warm_start/

IGNORE_INDEX = -100


def target_text(answer: str, reasoning_text: str, reasoning: bool = True) -> str:
    """The completion the warm start teaches, in the format the rewards score.

    >>> target_text("Yes", "I see.")
    '<REASONING>I see.</REASONING><SOLUTION>Yes</SOLUTION>'
    >>> target_text("No", "ignored", reasoning=False)
    '<SOLUTION>No</SOLUTION>'
    """
    solution = f"{SOLUTION_START}{answer}{SOLUTION_END}"
    return f"{REASONING_START}{reasoning_text}{REASONING_END}{solution}" if reasoning else solution


class Problem(NamedTuple):
    """One bad line of a warm-start JSONL; line_no is 1-based."""

    line_no: int
    kind: str
    message: str


@dataclass
class WarmStartReport:
    """What reading a warm-start JSONL found: the usable rows and, per bad line, why it was left out."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lines: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(problem.kind for problem in self.problems))

    def summary(self) -> str:
        """Totals, then counts per problem kind (the same shape as `video_vlm.data verify`).

        >>> print(WarmStartReport(Path("w.jsonl"), [{}], [Problem(2, "missing_image", "line 2: ...")], 2).summary())
        w.jsonl: 1 valid line(s) of 2; 1 problem(s)
          missing_image: 1
        """
        lines = [f"{self.path}: {len(self.rows)} valid line(s) of {self.lines}; {len(self.problems)} problem(s)"]
        lines += [f"  {kind}: {count}" for kind, count in sorted(self.counts.items())]
        return "\n".join(lines)


def read_warm_start_jsonl(path: str | Path, data: ImageDataSection) -> WarmStartReport:
    """Check a JSONL of warm-start targets line by line; a bad line is reported and left out, never trained on.

    Each line is an object with `image` (a path, relative to the JSONL's folder or absolute), the answer as
    `answer` (one of `data.labels`' answers) or `label` (one of its class names), and, when `data.reasoning`
    is on, optionally `reasoning` (the text inside `<REASONING>`; the config's `reasoning_text` otherwise).
    """
    from core.media.errors import MediaError
    from core.media.image import open_image

    path = Path(path)
    report = WarmStartReport(path)
    if not path.is_file():
        from core.config import ConfigError

        raise ConfigError(f"warm_start.jsonl: {path} not found")
    answers = {answer.casefold(): answer for answer in data.labels.values()}
    for line_no, obj, bad in json_object_lines(path):
        report.lines += 1

        def problem(kind: str, message: str) -> None:
            # Called only within this iteration, so the loop's current line_no is the one meant.
            report.problems.append(Problem(line_no, kind, f"line {line_no}: {message}"))  # noqa: B023

        if bad:
            problem(*bad)
            continue
        image = obj.get("image")
        if not isinstance(image, str) or not image.strip():
            problem("missing_field", "no 'image' path")
            continue
        if "answer" in obj:
            answer = answers.get(str(obj["answer"]).strip().casefold())
            if answer is None:
                problem("unknown_label", f"answer {obj['answer']!r} is not one of {', '.join(data.labels.values())} (data.labels)")
                continue
        elif "label" in obj:
            if obj["label"] not in data.labels:
                problem("unknown_label", f"label {obj['label']!r} is not one of {', '.join(data.labels)} (data.labels)")
                continue
            answer = data.labels[obj["label"]]
        else:
            problem("missing_field", "no 'answer' or 'label'")
            continue
        reasoning = obj.get("reasoning", "")
        if not isinstance(reasoning, str):
            problem("bad_reasoning", f"'reasoning' must be text, got {type(reasoning).__name__}")
            continue
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        if not image_path.is_file():
            problem("missing_image", f"{image}: no such file")
            continue
        try:
            open_image(image_path)
        except MediaError as error:
            problem("unreadable_image", str(error))
            continue
        report.rows.append({"image_path": str(image_path), "answer": answer, "reasoning": reasoning.strip(), "own": True})
    return report


def template_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warm-start rows from the training split's rows: the template supplies the target."""
    return [{"image_path": row["image_path"], "answer": row["answer"], "reasoning": "", "own": False} for row in rows]


class WarmStartCollator:
    """Turns warm-start rows into a labelled batch: the prompt exactly as GRPO and evaluation build it, then the
    target and the end of turn; the loss covers only the target (and the end-of-turn token).

    Template rows get a coin-flip answer per batch with `answers: random`, so no image is ever tied to one
    answer; a JSONL row always keeps its own answer and reasoning.
    """

    def __init__(self, processor, data: ImageDataSection, warm_start: WarmStartSection):
        self.processor = processor
        self.data = data
        self.warm_start = warm_start
        self.rng = random.Random(warm_start.seed)
        self.choices = list(dict.fromkeys(data.labels.values()))
        from core.generation import answer_affixes

        # The end as the template writes it: the sequence is then, token for token, the template's own rendering of
        # the conversation wherever its past answers follow its generation prompt (all but thinking models').
        self.affixes = answer_affixes(processor, trailing_whitespace=True)

    def target(self, row: dict[str, Any]) -> str:
        answer = row["answer"]
        if not row.get("own") and self.warm_start.answers == "random":
            answer = self.rng.choice(self.choices)
        return target_text(answer, row.get("reasoning") or self.warm_start.reasoning_text, self.data.reasoning)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from core.generation import build_inputs
        from core.media.image import open_image
        from image_vlm.task import prompt_messages

        prompts = [prompt_messages(self.data, open_image(row["image_path"])) for row in rows]
        # Each target right after the generation prompt, between the template's affixes: what GRPO and evaluation
        # continue from (a thinking model's prompt closes its thought channel; its past answers would not show it).
        prefix, suffix = self.affixes
        inputs = dict(build_inputs(self.processor, prompts, answers=[prefix + self.target(row) + suffix for row in rows]))
        prompt_lengths = build_inputs(self.processor, prompts)["attention_mask"].sum(1)
        lengths = inputs["attention_mask"].sum(1)
        labels = inputs["input_ids"].clone()
        width = labels.shape[1]
        for i in range(len(rows)):  # left-padded: the target is the last (length - prompt length) tokens
            labels[i, : width - int(lengths[i] - prompt_lengths[i])] = IGNORE_INDEX
        inputs["labels"] = labels
        return inputs


# ---------------------------------------------------------------------------------------------- the stage's rows


def warm_start_rows(cfg: ImageConfig, train_rows: list[dict]) -> list[dict]:
    """The warm start's rows: the user's JSONL (bad lines reported and left out) or the template over the
    training split; a budget the data cannot fill is a config error."""
    w = cfg.warm_start
    if w.jsonl:
        report = read_warm_start_jsonl(w.jsonl, cfg.data)
        print_report(report)
        rows, source = report.rows, f"warm_start.jsonl ({w.jsonl})"
        if not rows:
            raise ConfigError(f"{source}: no usable line ({len(report.problems)} problem(s), listed above)")
    else:
        rows, source = template_rows(train_rows), f"the training split ({cfg.data.root}/{cfg.data.train_split})"
    if w.max_samples is not None:
        if w.max_samples > len(rows):
            raise ConfigError(f"warm_start.max_samples ({w.max_samples}) is larger than {source}, which has {len(rows)} example(s)")
        rows = rows[: w.max_samples]
    if w.per_device_train_batch_size > len(rows):
        raise ConfigError(
            f"warm_start.per_device_train_batch_size ({w.per_device_train_batch_size}) is larger than {source}, "
            f"which has {len(rows)} example(s)"
        )
    return rows


def main(argv=None) -> int:
    from core.config import ConfigError, load_config
    from image_vlm.config import ImageConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="Check warm_start.jsonl line by line")
    verify.add_argument("--config", required=True)
    verify.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(ImageConfig, args.config, args.overrides)
        if not cfg.warm_start.jsonl:
            raise ConfigError("warm_start.jsonl is empty: the template needs no checking")
        report = read_warm_start_jsonl(cfg.warm_start.jsonl, cfg.data)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report.rows else 1


def print_report(report: WarmStartReport) -> None:
    print(report.summary(), flush=True)
    for problem in report.problems[:50]:
        print(f"  skipped [{problem.kind}] {problem.message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
