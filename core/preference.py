"""Preference pairs for DPO: sampled from a model and ranked by the recipe's own scorer, or read from a user's file.

The pairs stage of a run (and `python -m image_vlm.pairs` / `video_vlm.pairs`) samples `pairs.samples_per_prompt`
answers per training prompt, scores each with the function the recipe's evaluation and rewards use, and keeps the
best against the worst. What it samples goes to `candidates.jsonl` as it goes, one line per prompt, so a stop loses
at most a batch and a relaunch continues after the last prompt written; the finished stage writes `pairs.jsonl`
(atomically) and `pairs_summary.json`. Prompts whose answers all score the same teach nothing and are counted,
never paired.

A `pairs.jsonl` line names its prompt by reference (an image path, or a clip window and its metadata line),
never by pixels: `{"prompt_id", <the recipe's media fields>, "chosen", "rejected", "chosen_score",
"rejected_score", "margin", "model", "schema"}`. A user's own file needs only the media fields, `chosen` and
`rejected`; each line is checked, and a bad line is reported with its number and never trained on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import ConfigError, PairsSection
from core.control import RunControl
from core.files import write_json_atomic
from core.jsonl import json_object_lines, read_jsonl
from core.processes import is_main_process
from core.runs import RunDir

PAIRS = "pairs"
DPO = "dpo"
# The DPO metrics TRL logs that the run view plots; the trainer logs them with these names.
DPO_CURVES = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def best_and_worst(scores: Sequence[float]) -> tuple[int, int] | None:
    """Indexes of the highest- and lowest-scored answers (the first of equals), or None when all scores are equal.

    >>> best_and_worst([0.5, 1.0, 0.0, 1.0])
    (1, 2)
    >>> best_and_worst([1.0, 1.0]) is None
    True
    """
    if not scores or max(scores) == min(scores):
        return None
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return best, worst


def pair_from_candidates(candidate: dict[str, Any]) -> dict[str, Any] | None:
    """The pair a `candidates.jsonl` line makes, or None when its answers show no contrast.

    >>> line = {"prompt_id": "a", "image_path": "x.png", "answers": ["A", "B", "C"], "scores": [0.0, 1.0, 0.5],
    ...         "model": "m", "schema": None}
    >>> pair = pair_from_candidates(line)
    >>> pair["chosen"], pair["rejected"], pair["margin"]
    ('B', 'A', 1.0)
    """
    picked = best_and_worst(candidate["scores"])
    if picked is None:
        return None
    best, worst = picked
    reference = {k: v for k, v in candidate.items() if k not in ("answers", "scores")}
    chosen_score, rejected_score = candidate["scores"][best], candidate["scores"][worst]
    return {
        **reference,
        "chosen": candidate["answers"][best],
        "rejected": candidate["answers"][worst],
        "chosen_score": chosen_score,
        "rejected_score": rejected_score,
        "margin": round(chosen_score - rejected_score, 6),
    }


@dataclass
class PairsSummary:
    prompts: int
    pairs: int
    no_contrast: int
    mean_margin: float | None
    samples_per_prompt: int
    temperature: float
    model: str

    def line(self) -> str:
        """The stage's summary for the log and the page; when prompts gave no pair, why, and which knobs raise the yield.

        >>> PairsSummary(29, 5, 24, 0.4, 4, 1.0, "m").line()  # doctest: +NORMALIZE_WHITESPACE
        'pairs: 5 kept of 29 prompts; 24 with no contrast (all 4 answers scored the same); mean margin 0.400.
        A prompt gives a pair only when its answers score differently: for more pairs, sample more answers per prompt
        (pairs.samples_per_prompt, now 4) or more varied ones (pairs.temperature, now 1.0), or train the model
        further first (a longer SFT stage or warm start) so that its answers differ in quality'
        """
        margin = "n/a" if self.mean_margin is None else f"{self.mean_margin:.3f}"
        text = (
            f"pairs: {self.pairs} kept of {self.prompts} prompts; {self.no_contrast} with no contrast (all "
            f"{self.samples_per_prompt} answers scored the same); mean margin {margin}"
        )
        if self.no_contrast:
            text += (
                ". A prompt gives a pair only when its answers score differently: for more pairs, sample more answers "
                f"per prompt (pairs.samples_per_prompt, now {self.samples_per_prompt}) or more varied ones "
                f"(pairs.temperature, now {self.temperature}), or train the model further first (a longer SFT stage "
                "or warm start) so that its answers differ in quality"
            )
        return text


def no_contrast_message(prompts: int, samples_per_prompt: int, temperature: float) -> str:
    return (
        f"no preference pair: the answers of all {prompts} prompts scored the same, so there is nothing to prefer. "
        f"Sample more answers per prompt (pairs.samples_per_prompt, now {samples_per_prompt}) or at a higher "
        f"temperature (pairs.temperature, now {temperature}), or start from a model that already answers in the "
        "task's format (a warm start)"
    )


def finish_pairs(run: RunDir, samples_per_prompt: int, temperature: float, model: str) -> PairsSummary:
    """Turn the run's `candidates.jsonl` into `pairs.jsonl` and `pairs_summary.json`.

    Raises:
        ConfigError: no prompt showed any contrast.
    """
    candidates = list(read_jsonl(run.candidates_path))
    pairs = [pair for pair in map(pair_from_candidates, candidates) if pair is not None]
    margins = [pair["margin"] for pair in pairs]
    summary = PairsSummary(
        prompts=len(candidates), pairs=len(pairs), no_contrast=len(candidates) - len(pairs),
        mean_margin=round(sum(margins) / len(margins), 4) if margins else None,
        samples_per_prompt=samples_per_prompt, temperature=temperature, model=model,
    )
    if not pairs:
        raise ConfigError(no_contrast_message(len(candidates), samples_per_prompt, temperature))
    if is_main_process():
        write_pairs(run, pairs)
        write_json_atomic(run.pairs_summary_path, vars(summary))
    return summary


def write_pairs(run: RunDir, pairs: Sequence[dict[str, Any]]) -> None:
    """The run's `pairs.jsonl`, written whole (atomically): sampled pairs, or the usable lines of a user's file, so
    the run folder shows what DPO trained on."""
    if not is_main_process():
        return
    staging = run.pairs_path.with_name(f".{run.pairs_path.name}.tmp")
    staging.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    staging.replace(run.pairs_path)


def sample_pairs(
    run: RunDir,
    control: RunControl,
    prompts: Sequence[dict[str, Any]],
    sample: Callable[[list[dict[str, Any]]], list[list[str]]],
    score: Callable[[dict[str, Any], list[str]], list[float]],
    *,
    batch_size: int,
    samples_per_prompt: int,
    temperature: float,
    model: str,
    schema: str | None = None,
    stage: str = PAIRS,
    stages: list[str] | None = None,
) -> PairsSummary | None:
    """The pairs stage: sample, score and pair every prompt not yet in `candidates.jsonl`, then write `pairs.jsonl`.

    Args:
        prompts: One dict per training prompt, with a unique `prompt_id` and the media reference fields that a
            pairs line carries (JSON-serialisable).
        sample: A batch of prompts -> `samples_per_prompt` answers for each.
        score: (prompt, its answers) -> one score per answer, from the recipe's own scorer.
        model: The model the answers come from, recorded on every line (DPO refuses pairs of another model).
        schema: The video schema's name, likewise; None for images.

    Returns:
        The summary, or None when a stop was requested (`candidates.jsonl` keeps what was sampled).
    """
    from tqdm import tqdm

    path = run.candidates_path
    done = {row["prompt_id"] for row in read_jsonl(path)} if path.exists() else set()
    todo = [prompt for prompt in prompts if prompt["prompt_id"] not in done]
    if done:
        print(f"[{stage}] {len(done)} of {len(prompts)} prompts sampled earlier; continuing", flush=True)
    if is_main_process():
        run.write_status("running", stage=stage, stages=stages or [stage], step=len(prompts) - len(todo), total=len(prompts))
    with tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=stage, unit="prompt") as bar:
        for start in range(0, len(todo), batch_size):
            if control.poll():
                return None
            batch = list(todo[start : start + batch_size])
            seed_for_batch(batch)
            answers = sample(batch)
            for prompt, texts in zip(batch, answers, strict=True):
                scores = [float(s) for s in score(prompt, texts)]
                if len(scores) != len(texts) or not all(math.isfinite(s) for s in scores):
                    raise ValueError(f"the scorer returned {scores!r} for {len(texts)} answers of {prompt['prompt_id']}")
                if is_main_process():
                    run.append_jsonl(path, {**prompt, "answers": texts, "scores": scores, "model": model, "schema": schema})
            bar.update(len(batch))
            if is_main_process():
                run.update_progress(len(prompts) - len(todo) + start + len(batch), len(prompts))
    summary = finish_pairs(run, samples_per_prompt, temperature, model)
    if is_main_process():
        # Step 0: the pairs stage trains no step, so on the run-wide axis DPO's first step follows the last step
        # before it (a step count here would push DPO's curves right by that many steps).
        run.append_metric({"stage": stage, "step": 0, **{f"pairs/{k}": v for k, v in vars(summary).items()
                                                         if isinstance(v, (int, float))}})
    print(f"[{stage}] {summary.line()}", flush=True)
    return summary


def seed_for_batch(batch: Sequence[dict[str, Any]]) -> int:
    """Seed the sampler's random draws from the batch's prompt ids, and return that seed.

    A stop lands between batches, so a relaunch samples the same batches; seeding each one from its prompts alone
    makes a stopped and resumed pairs stage write the very answers an uninterrupted one would (a global generator
    would be wherever the first launch left it). That keeps a run reproducible, and its DPO stage with it.

    >>> seed_for_batch([{"prompt_id": "a"}, {"prompt_id": "b"}]) == seed_for_batch([{"prompt_id": "a"}, {"prompt_id": "b"}])
    True
    """
    import random
    import zlib

    import torch

    seed = zlib.crc32("\n".join(str(prompt["prompt_id"]) for prompt in batch).encode())
    random.seed(seed)
    torch.manual_seed(seed)
    return seed


@dataclass
class PairsFile:
    """The usable pairs of one file, and a line per unusable one (`path:line: problem`)."""

    path: Path
    pairs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_pairs(
    path: str | Path,
    check_media: Callable[[dict[str, Any]], str | None],
    model: str,
    schema: str | None = None,
) -> PairsFile:
    """Read a pairs file (the run's own or a user's), checking every line.

    A line is used when it is a JSON object whose `chosen` and `rejected` are different non-empty strings and
    `check_media(line)` finds its image or clip (it returns the problem otherwise). A line made with another
    model or another schema than the run's (its `model` / `schema` fields, when present) refuses the whole file,
    naming both: it was ranked by other answers than the ones this run trains.

    Raises:
        ConfigError: the file is missing, comes from another model or schema, or has no usable line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pairs file {path} does not exist")
    result = PairsFile(path)
    for line_no, obj, problem in json_object_lines(path):
        where = f"{path}:{line_no}"
        if problem:
            result.problems.append(f"{where}: {problem[1]}")
            continue
        made_by = obj.get("model")
        if made_by is not None and made_by != model:
            raise ConfigError(f"{where}: these pairs were made with {recorded_name(made_by, 'model')}, but this run "
                              f"trains {model}; make pairs with this run's model (python -m <recipe>.pairs) or train "
                              "that model")
        made_for = obj.get("schema")
        if schema is not None and made_for is not None and made_for != schema:
            raise ConfigError(f"{where}: these pairs were made for {recorded_name(made_for, 'schema')}, but this "
                              f"run's schema is {schema}; make pairs with this run's schema")
        bad = [key for key in ("chosen", "rejected") if not isinstance(obj.get(key), str) or not obj[key].strip()]
        if bad:
            result.problems.append(f"{where}: {' and '.join(bad)} must be a non-empty string")
            continue
        if obj["chosen"] == obj["rejected"]:
            result.problems.append(f"{where}: chosen and rejected are the same text; a pair needs two answers")
            continue
        media = check_media(obj)
        if media:
            result.problems.append(f"{where}: {media}")
            continue
        result.pairs.append(obj)
    if not result.pairs:
        shown = "; ".join(result.problems[:3]) or "the file is empty"
        raise ConfigError(f"pairs file {path} has no usable line ({len(result.problems)} bad): {shown}")
    return result


def checked_training_pairs(
    section: PairsSection,
    run: RunDir,
    check_media: Callable[[dict[str, Any]], str | None],
    model: str,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """The pairs DPO trains on: `pairs.file`, else the run's own `pairs.jsonl`, read by `read_pairs` with the
    recipe's `check_media`; each bad line is reported and left out."""
    source = Path(section.file) if section.file else run.pairs_path
    pairs = read_pairs(source, check_media, model=model, schema=schema)
    report_pairs_problems(pairs, lambda line: print(line, flush=True))
    print(f"[{DPO}] training on {len(pairs.pairs)} pairs from {source}", flush=True)
    return pairs.pairs


def recorded_name(value: Any, what: str) -> str:
    """How a refusal names the model or schema a pairs line records: a name as written, anything else by its kind.

    A message names a line by its number and says what is wrong, never quoting it; the model and schema names
    are the exception, being what the pairs stage writes there and what the user must match.

    >>> recorded_name("Qwen/Qwen2.5-VL-7B-Instruct", "model"), recorded_name({"token": "hf_x"}, "model")
    ('model Qwen/Qwen2.5-VL-7B-Instruct', 'a model field that is a dict, not a name')
    """
    if isinstance(value, str) and re.fullmatch(r"[\w.:/~+-]{1,200}", value):
        return f"{what} {value}"
    return f"a {what} field that is a {type(value).__name__}, not a name"


def report_pairs_problems(pairs: PairsFile, log: Callable[[str], None] = print, shown: int = 10) -> None:
    """One line per bad line (the first `shown`), then how many more: nothing is skipped silently."""
    if not pairs.problems:
        return
    log(f"{len(pairs.problems)} line(s) of {pairs.path} left out:")
    for problem in pairs.problems[:shown]:
        log(f"  {problem}")
    if len(pairs.problems) > shown:
        log(f"  and {len(pairs.problems) - shown} more")


def read_run_pairs(run: RunDir, last: int | None = None) -> list[dict[str, Any]]:
    """The run's `pairs.jsonl` (the last `last` lines), for the run view; empty before the pairs stage ends."""
    rows = list(read_jsonl(run.pairs_path)) if run.pairs_path.exists() else []
    return rows[-last:] if last else rows


def read_pairs_summary(run: RunDir) -> dict[str, Any] | None:
    try:
        return json.loads(run.pairs_summary_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def source_run_option(argv: list[str] | None) -> list[str] | None:
    """The pairs CLIs' `--from RUN`, as the override `pairs.source_run=RUN`; None (a command line) stays None
    unless it holds `--from`, so a command-line process keeps its signal handlers.

    >>> source_run_option(["--config", "c.yaml", "--from", "runs/a"])
    ['--config', 'c.yaml', 'pairs.source_run=runs/a']
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if "--from" not in args:
        return argv
    at = args.index("--from")
    if at + 1 >= len(args):
        raise SystemExit("--from needs a run folder: --from runs/<run-id>")
    args[at : at + 2] = [f"pairs.source_run={args[at + 1]}"]
    return args
