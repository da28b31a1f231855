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

import random
import sys
from collections import Counter
from typing import Any

import torch

from core.generation import answer_affixes, build_inputs
from core.media.errors import MediaError, plain_reason
from core.media.paths import in_dataset
from core.runs import RunDir, RunError
from video_vlm.config import VideoDataSection
from video_vlm.schema import UNKNOWN, SchemaSpec
from video_vlm.skipped_clips import skip_record
from video_vlm.task import SampledClip, prompt_messages, row_item, sample_clip

IGNORE_INDEX = -100
_REPLACEMENT_TRIES = 16


class SampleTooLong(ValueError):
    """A sample needs more tokens than `train.max_length`."""


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
        run: RunDir | None = None,
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
        self.run = run  # where skips are recorded (`skipped.jsonl`); None records nothing
        self.stage = stage
        self.skipped = 0  # in this process only: with DataLoader workers, the run's `skipped.jsonl` holds its count
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
        if self.run is not None:
            self.run.record_skip(skip_record(row, kind, message, self.stage))

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
    A pair whose clip fails to decode is skipped, counted and recorded like SFT's (`RunDir.record_skip`); a batch with
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
