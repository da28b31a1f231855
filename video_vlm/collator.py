"""Batches for supervised fine-tuning on clips: decode, template, mask, pad.

Each sample is the prompt exactly as inference builds it (`core.generation.build_inputs` with the generation
prompt) followed by the answer tokenised on its own: the canonical label JSON and the end-of-turn token.
So the model learns the very tokens it has to generate, and the labels are -100 everywhere else:

* the prompt (system, instruction, video tokens) and the padding carry no loss;
* fields whose label is "unknown" (Nexar has no captions) are masked too: every answer token overlapping
  such a value's characters (`SchemaSpec.render_label_spans`, tokenizer offsets) gets -100, so the model is
  never taught to write the placeholder, while keys and the other values stay supervised;
* batches are padded to their longest sample, never to `max_length`; a sample longer than `max_length`
  is skipped, never truncated (cutting video tokens breaks the model's input); training finds such samples
  before launch (`over_long_items`) and skips them the same way, one `skipped.jsonl` record each;
* a clip that fails to decode is skipped and counted; when a whole batch fails, a replacement clip is
  drawn from the dataset, so one bad file never ends an epoch. The collator runs in the DataLoader's
  worker processes, so each skip is appended to the run folder's `skipped.jsonl`, which the training
  process reads (`SkippedClipsCallback`) to log the count and to fail the run past
  `data.max_skipped_fraction`. Any other error names the clip and its metadata line.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from core.generation import build_inputs
from core.media.errors import MediaError, plain_reason
from core.media.paths import in_dataset
from core.runs import RunError
from video_vlm.config import VideoDataSection
from video_vlm.schema import UNKNOWN, SchemaSpec
from video_vlm.task import SampledClip, prompt_messages, row_item, sample_clip

IGNORE_INDEX = -100
_REPLACEMENT_TRIES = 16


class SampleTooLong(ValueError):
    """A sample needs more tokens than `train.max_length`."""


def answer_affixes(processor) -> tuple[str, str]:
    """(what the chat template writes between the generation prompt and an assistant answer, what it writes
    after the answer minus trailing whitespace): ("", "<|im_end|>") for Qwen, (" ", "<end_of_utterance>") for
    SmolVLM2, whose generation prompt ends "Assistant:" and whose answers follow a space.

    Read from the template itself, so every family, in the table or not, gets its own; the tokenizer's EOS
    token is the fallback end when the template does not render an answer verbatim.
    """
    marker = "ANSWER_MARKER"
    conversation = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    answer = [{"role": "assistant", "content": [{"type": "text", "text": marker}]}]
    prompt = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(conversation + answer, tokenize=False)
    at = full.find(marker, len(prompt)) if full.startswith(prompt) else -1
    if at >= 0:
        prefix, suffix = full[len(prompt) : at], full[at + len(marker) :].rstrip()
        if suffix:
            return prefix, suffix
    return "", processor.tokenizer.eos_token or ""


def answer_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` and each token's character span, from the fast tokenizer's offsets when it has them."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]
    except (NotImplementedError, TypeError, KeyError):  # a slow tokenizer: measure decoded prefixes instead
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        spans, previous = [], 0
        for index in range(len(ids)):
            end = len(tokenizer.decode(ids[: index + 1]))
            spans.append((previous, end))
            previous = end
        return list(ids), spans


def answer_labels(
    tokenizer, schema: SchemaSpec, label: dict, affixes: tuple[str, str]
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of the answer: the canonical label JSON between the template's `affixes`
    (`answer_affixes`), unknown values masked.

    A token that overlaps an unknown value at all is masked, so a boundary token such as `"}` that the
    placeholder shares with the punctuation is not taught either.
    """
    prefix, end_token = affixes
    text = schema.render_label(label)
    masked = [
        (len(prefix) + start, len(prefix) + end)
        for name, start, end in schema.render_label_spans(label)
        if label.get(name) == UNKNOWN
    ]
    ids, spans = answer_offsets(tokenizer, prefix + text + end_token)
    labels = []
    for token, (start, end) in zip(ids, spans):
        hidden = any(start < span_end and end > span_start for span_start, span_end in masked)
        labels.append(IGNORE_INDEX if hidden else token)
    return ids, labels


def prompt_inputs(processor, data: VideoDataSection, schema: SchemaSpec, clip: SampledClip):
    """(prompt ids, the processor's media tensors, which of those are per-token) of one clip's prompt, exactly as
    inference builds it (`core.generation.build_inputs`, generation prompt included)."""
    prompt = build_inputs(processor, [prompt_messages(data, schema, video=clip)])
    media = {
        key: value
        for key, value in prompt.items()
        if key not in ("input_ids", "attention_mask") and isinstance(value, torch.Tensor)
    }
    sequence_keys = {key for key, value in media.items() if tuple(value.shape) == tuple(prompt["input_ids"].shape)}
    return prompt["input_ids"][0].tolist(), media, sequence_keys


class VideoSFTCollator:
    """Turns dataset rows (`video_vlm.task.item_row`) into a padded, labelled training batch.

    Attributes:
        skipped: Samples skipped so far (undecodable clips and over-long samples).
        skipped_kinds: Those skips per kind (the VideoError kind, or "too_long").
    """

    def __init__(
        self,
        processor,
        data: VideoDataSection,
        schema: SchemaSpec,
        max_length: int | None = None,
        replacements: list[dict] | None = None,
        seed: int = 0,
        skip_log: Path | None = None,
        stage: str | None = None,
    ):
        self.processor = processor
        self.data = data
        self.schema = schema
        self.max_length = max_length
        self.replacements = replacements or []
        self.rng = random.Random(seed)
        self.affixes = answer_affixes(processor)
        self.pad_id = processor.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = processor.tokenizer.eos_token_id
        self.skip_log = skip_log
        self.stage = stage
        self.skipped = 0  # in this process only: with DataLoader workers, `skip_log` holds the run's count
        self.skipped_kinds: Counter[str] = Counter()
        self.last_skip = ""  # the last skipped clip's line: which file was looked for, and why it could not be used

    # ------------------------------------------------------------------------------------------ one sample
    def encode(self, row: dict[str, Any], clip: SampledClip | None = None) -> dict[str, Any]:
        """One sample: prompt ids (video expanded), answer ids, labels and the processor's media tensors.

        Raises:
            MediaError: The clip cannot be decoded.
            SampleTooLong: The sample needs more than `max_length` tokens.
        """
        item = row_item(row)
        if clip is None:
            clip = sample_clip(item.video_path(row["root"]), self.data, item.start_s, item.end_s)
        prompt_ids, media, sequence_keys = prompt_inputs(self.processor, self.data, self.schema, clip)
        answer_ids, answer_targets = answer_labels(self.processor.tokenizer, self.schema, item.label, self.affixes)
        length = len(prompt_ids) + len(answer_ids)
        if self.max_length is not None and length > self.max_length:
            raise SampleTooLong(
                f"{item.video}: {length} tokens > train.max_length {self.max_length} (skipped, never truncated)"
            )
        return {
            "input_ids": prompt_ids + answer_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_targets,
            "media": media,
            "sequence_keys": sequence_keys,
            "prompt_length": len(prompt_ids),
        }

    def skip(self, row: dict[str, Any], error: Exception) -> None:
        kind = "too_long" if isinstance(error, SampleTooLong) else getattr(error, "kind", type(error).__name__)
        self.skipped += 1
        self.skipped_kinds[kind] += 1
        line = row.get("line_no")
        where = f"{row.get('video')}" + (f" (metadata.jsonl line {line})" if line is not None else "")
        message = plain_reason(error) if isinstance(error, OSError) else str(error)
        self.last_skip = f"{where} [{kind}]: {message}"
        print(f"skipped clip {self.last_skip}", file=sys.stderr, flush=True)
        record_skip(self.skip_log, row, kind, message, self.stage)

    def try_encode(self, row: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.encode(row)
        except (MediaError, OSError, SampleTooLong) as error:
            self.skip(row, error)
            return None
        except Exception as error:  # a bug, not a bad clip: stop, but say which sample it was
            raise RuntimeError(
                f"{row.get('video')} (metadata.jsonl line {row.get('line_no')}): {type(error).__name__}: {error}"
            ) from error

    # ------------------------------------------------------------------------------------------ the batch
    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        samples = [sample for sample in map(self.try_encode, rows) if sample is not None]
        tries = 0
        while not samples and self.replacements and tries < _REPLACEMENT_TRIES:
            tries += 1
            sample = self.try_encode(self.rng.choice(self.replacements))
            if sample is not None:
                samples.append(sample)
        if not samples:
            raise NoUsableClip(
                f"no clip of the batch could be used ({dict(self.skipped_kinds)} skipped so far; the last, "
                f"{self.last_skip}); check the dataset with: python -m video_vlm.data verify --root {self.data.root} --deep"
            )
        return self.pad(samples)

    def pad(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sample of the batch and concatenate the media tensors."""
        width = max(len(sample["input_ids"]) for sample in samples)
        input_ids = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
        for index, sample in enumerate(samples):
            length = len(sample["input_ids"])
            input_ids[index, :length] = torch.tensor(sample["input_ids"])
            labels[index, :length] = torch.tensor(sample["labels"])
            attention_mask[index, :length] = 1
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return {**batch, **media_batch(samples, width)}


class NoUsableClip(RunError):
    """A batch none of whose clips (nor any replacement) could be used: the run stops with this one line."""


class VideoDPOCollator(VideoSFTCollator):
    """Turns preference rows (a clip window, `chosen` and `rejected` answer texts) into TRL's DPO batch layout.

    `trl.DPOTrainer._compute_loss` reads `input_ids` as [chosen rows; rejected rows] (B pairs -> 2B rows),
    `attention_mask`, and `completion_mask` (1 on the answer tokens), and hands every other key to the model. So
    each pair's prompt is built once, from the recipe's own frame sampler and template (`prompt_inputs`, as SFT
    and evaluation build it), and its media tensors go in twice, in row order: the chosen rows' clips, then the
    same clips again for the rejected rows. An answer is tokenised on its own between the template's affixes
    (`answer_affixes`), as SFT's labels are, so the scored tokens are the ones generation would write.

    A row holds `video` (an absolute path, or one relative to `data.root`, whatever the working folder), `start_s`, `end_s`, `chosen`, `rejected`.
    A pair whose clip fails to decode is skipped, counted and recorded like SFT's (`record_skip`); a batch with
    none left draws replacements from `replacements`. Pairs are never truncated (a cut answer is not the answer
    that was scored): a pair past `max_length` is skipped likewise. Construction, skipping and replacement are
    SFT's (`VideoSFTCollator`); the encoding and the batch layout are DPO's.
    """

    def answer_ids(self, text: str) -> list[int]:
        prefix, end = self.affixes
        return self.processor.tokenizer(prefix + text + end, add_special_tokens=False)["input_ids"]

    def encode(self, row: dict[str, Any]) -> dict[str, Any]:
        """One pair: the prompt ids and media of its clip, and the chosen and rejected answer ids.

        Raises:
            MediaError: The clip cannot be decoded.
            SampleTooLong: The longer of the two sequences needs more than `max_length` tokens.
        """
        path = in_dataset(self.data.root, row["video"])
        clip = sample_clip(path, self.data, row.get("start_s"), row.get("end_s"))
        prompt_ids, media, sequence_keys = prompt_inputs(self.processor, self.data, self.schema, clip)
        chosen, rejected = self.answer_ids(row["chosen"]), self.answer_ids(row["rejected"])
        length = len(prompt_ids) + max(len(chosen), len(rejected))
        if self.max_length is not None and length > self.max_length:
            raise SampleTooLong(f"{row['video']}: a pair needs {length} tokens > {self.max_length} (skipped, never truncated)")
        return {"prompt_ids": prompt_ids, "chosen_ids": chosen, "rejected_ids": rejected, "media": media,
                "sequence_keys": sequence_keys}

    def pad(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """[chosen rows; rejected rows], right-padded to the longest, and each pair's media twice in that order."""
        rows = [(s, s["chosen_ids"]) for s in samples] + [(s, s["rejected_ids"]) for s in samples]
        width = max(len(s["prompt_ids"]) + len(answer) for s, answer in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, (sample, answer) in enumerate(rows):
            prompt = len(sample["prompt_ids"])
            input_ids[index, : prompt + len(answer)] = torch.tensor(sample["prompt_ids"] + answer)
            attention_mask[index, : prompt + len(answer)] = 1
            completion_mask[index, prompt : prompt + len(answer)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
        return {**batch, **media_batch([sample for sample, _ in rows], width)}


def media_batch(samples: list[dict[str, Any]], width: int) -> dict[str, torch.Tensor]:
    """The media tensors of a batch's rows, in row order: per-token tensors (e.g. token types) right-padded to
    `width` like input_ids, pixel values and grids stacked frame by frame."""
    batch: dict[str, torch.Tensor] = {}
    for key in samples[0]["media"]:
        values = [sample["media"][key] for sample in samples]
        if key in samples[0]["sequence_keys"]:
            padded = torch.zeros((len(samples), width), dtype=values[0].dtype)
            for index, value in enumerate(values):
                padded[index, : value.shape[1]] = value[0]
            batch[key] = padded
        else:
            batch[key] = torch.cat(values, dim=0)
    return batch


def record_skip(skip_log: Path | None, row: dict[str, Any], kind: str, message: str, stage: str | None) -> None:
    """Append one skipped sample to the run's `skipped.jsonl` (`row` holds video, line_no, start_s, end_s)."""
    if skip_log is None:
        return
    record = {
        "video": row.get("video"), "line_no": row.get("line_no"), "start_s": row.get("start_s"),
        "end_s": row.get("end_s"), "kind": kind, "message": message, "stage": stage,
    }
    skip_log.parent.mkdir(parents=True, exist_ok=True)
    with skip_log.open("a") as stream:  # one short write per line: appends from workers do not interleave
        stream.write(json.dumps(record) + "\n")


def read_skips(path: Path | None, stage: str | None = None) -> list[dict[str, Any]]:
    """The skip records of one stage from a run's `skipped.jsonl` (none when there is no file yet)."""
    from core.jsonl import read_jsonl

    if path is None or not path.is_file():
        return []
    return [record for record in read_jsonl(path) if record.get("stage") == stage]


class TooManySkippedClips(RunError):
    """More than `data.max_skipped_fraction` of the training clips could not be used (the run fails with
    this one-line message, no traceback: the dataset is at fault, not the code)."""


class SkippedClipsCallback(TrainerCallback):
    """Adds the run's skip count to every log line, so `metrics.jsonl` shows bad clips as they happen, and
    fails the run once more than `max_fraction` of the `dataset_size` distinct training clips were skipped.

    The count comes from `skipped.jsonl`, which the collators write from whichever process they run in; it is
    read again only when the file has grown. Put it before `RunMetricsCallback`: callbacks share one `logs`
    dict, in order. In a distributed job every rank reads its own machine's file, and all of them stop at the
    same step when any one is past the limit.
    """

    def __init__(self, skip_log: Path, dataset_size: int, max_fraction: float, stage: str | None = None):
        self.skip_log = skip_log
        self.dataset_size = dataset_size
        self.max_fraction = max_fraction
        self.stage = stage
        self._read: tuple[int, list[dict[str, Any]]] = (-1, [])

    def skips(self) -> list[dict[str, Any]]:
        try:
            size = self.skip_log.stat().st_size
        except OSError:
            size = 0
        if size != self._read[0]:
            self._read = (size, read_skips(self.skip_log, self.stage))
        return self._read[1]

    def on_step_end(self, args, state, control, **kwargs):
        from core.checkpoints import gathered_from_all_ranks

        skips = self.skips()
        distinct = {(record["video"], record["start_s"], record["end_s"]) for record in skips}
        seen = gathered_from_all_ranks((len(distinct), dict(Counter(record["kind"] for record in skips))))
        worst, kinds = max(seen, key=lambda counted: counted[0])
        if worst > self.max_fraction * self.dataset_size:
            where = f" (rank {seen.index((worst, kinds))}'s count)" if len(seen) > 1 else ""
            raise TooManySkippedClips(
                f"{worst} of {self.dataset_size} training clips could not be used{where} ({kinds}), more than "
                f"data.max_skipped_fraction={self.max_fraction}; each is listed in {self.skip_log}. "
                "Check the dataset with: python -m video_vlm.data verify --root <data.root> --deep"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs["skipped_clips"] = len(self.skips())

    def on_train_end(self, args, state, control, **kwargs):
        """One summary line of the stage's skips when its training ends (finished or stopped)."""
        skips = self.skips()
        if skips and state.is_world_process_zero:
            kinds = dict(Counter(record["kind"] for record in skips))
            print(f"[{self.stage or 'train'}] skipped {len(skips)} sample(s): {kinds} (listed in {self.skip_log})", flush=True)


# ---------------------------------------------------------------------------------------------- budget


def token_budget(processor, data: VideoDataSection, schema: SchemaSpec, sample_label: dict) -> dict[str, Any]:
    """Tokens one training sample needs: measured with the real processor on blank frames of the configured size.

    Frames are `frame_max_side` pixels square, the largest a clip can give, so the estimate is an upper bound
    for processors whose token count grows with the picture (Qwen2.5-VL); InternVL gives every frame the same.

    Returns:
        frames, tokens_per_frame, video_tokens, prompt_tokens (text and template), answer_tokens (label JSON
        and end token), total.
    """
    side = data.frame_max_side
    frames = np.zeros((data.num_frames, side, side, 3), dtype=np.uint8)
    clip = SampledClip(frames, [index + 0.5 for index in range(data.num_frames)])  # one frame a second
    with_video = build_inputs(processor, [prompt_messages(data, schema, video=clip)])["input_ids"].shape[1]
    text_only = processor.apply_chat_template(prompt_messages(data, schema), tokenize=False, add_generation_prompt=True)
    prompt_tokens = len(processor.tokenizer(text_only, add_special_tokens=False)["input_ids"])
    answer_tokens = len(answer_labels(processor.tokenizer, schema, sample_label, answer_affixes(processor))[0])
    video_tokens = with_video - prompt_tokens
    return {
        "frames": data.num_frames,
        "tokens_per_frame": round(video_tokens / data.num_frames, 1),
        "video_tokens": video_tokens,
        "prompt_tokens": prompt_tokens,
        "answer_tokens": answer_tokens,
        "total": with_video + answer_tokens,
    }


def over_long_items(
    processor, data: VideoDataSection, schema: SchemaSpec, items: list, max_length: int
) -> tuple[dict[str, Any], list[tuple[Any, int]]]:
    """(the token budget of the shortest answer, [(item, tokens its sample needs)] for each item past `max_length`).

    Exact, and cheap for a large dataset: an answer is tokenised only when its UTF-8 bytes could pass the room the
    frames and prompt leave (no tokenizer makes more tokens than bytes, plus one for a leading-space marker).
    """
    shortest = min(items, key=lambda item: len(schema.render_label(item.label)))
    budget = token_budget(processor, data, schema, shortest.label)
    fixed = budget["total"] - budget["answer_tokens"]
    affixes = answer_affixes(processor)
    over = []
    for item in items:
        if fixed + len((affixes[0] + schema.render_label(item.label) + affixes[1]).encode("utf-8")) + 1 <= max_length:
            continue
        needed = fixed + len(answer_labels(processor.tokenizer, schema, item.label, affixes)[0])
        if needed > max_length:
            over.append((item, needed))
    return budget, over


def format_budget(budget: dict[str, Any], max_length: int) -> str:
    """One line for the launch log.

    >>> format_budget({"frames": 4, "tokens_per_frame": 10.0, "video_tokens": 40, "prompt_tokens": 300,
    ...                "answer_tokens": 60, "total": 400}, 512)
    'token budget per sample: 4 frames x 10.0 tokens = 40 video + 300 prompt + 60 answer = 400 of train.max_length 512'
    """
    return (
        f"token budget per sample: {budget['frames']} frames x {budget['tokens_per_frame']} tokens = "
        f"{budget['video_tokens']} video + {budget['prompt_tokens']} prompt + {budget['answer_tokens']} answer = "
        f"{budget['total']} of train.max_length {max_length}"
    )


def budget_problem(budget: dict[str, Any], max_length: int) -> str | None:
    """Why a sample would not fit, with what to change; None when it fits."""
    if budget["total"] <= max_length:
        return None
    return (
        f"one sample needs {budget['total']} tokens ({budget['video_tokens']} for {budget['frames']} frames, "
        f"{budget['prompt_tokens']} prompt, {budget['answer_tokens']} answer) but train.max_length is {max_length}. "
        f"Raise train.max_length to at least {budget['total']}, or lower data.num_frames or data.frame_max_side. "
        "Samples are never truncated: cutting video tokens would break the model's input."
    )
