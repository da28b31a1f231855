"""Generation for evaluation and the compare view.

Base and tuned answers come from ONE copy of the weights: the run's adapter is attached to the base
model, and base answers are generated inside `model.disable_adapter()`. The reference playbook served
two vLLM servers for this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any, NamedTuple

import numpy as np
import torch

from core.families import family_of_processor

Messages = list[dict[str, Any]]


def media_from_messages(messages: Messages) -> tuple[list, list, list]:
    """Images, videos and each video's frame times (`timestamps_s`, seconds), in the order they appear in the
    conversation, for the processor call."""
    images, videos, times = [], [], []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") == "image" and part.get("image") is not None:
                images.append(part["image"])
            elif part.get("type") == "video" and part.get("video") is not None:
                videos.append(part["video"])
                times.append(part.get("timestamps_s"))
    return images, videos, times


def strip_media(messages: Messages) -> Messages:
    """The same conversation with media payloads removed: chat templates only need the placeholders."""
    stripped = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [{"type": p["type"]} if p.get("type") in ("image", "video") else p for p in content]
        stripped.append({**message, "content": content})
    return stripped


def answer_affixes(processor, trailing_whitespace: bool = False) -> tuple[str, str]:
    """(what the chat template writes between the generation prompt and an assistant answer, what it writes
    after the answer minus trailing whitespace): ("", "<|im_end|>") for Qwen, (" ", "<end_of_utterance>") for
    SmolVLM2, whose generation prompt ends "Assistant:" and whose answers follow a space. With
    `trailing_whitespace`, the end as the template writes it ("<|im_end|>\n").

    Training puts an answer right after the generation prompt, between these, so it is taught exactly what
    generation would write. Read from the template itself, so every family, in the table or not, gets its own. A
    template whose past answers differ from its generation prompt (Gemma 4's, with thinking off, opens an empty
    thought channel only in the prompt) still gives its end text; the tokenizer's EOS token is the fallback end when
    the template does not render an answer verbatim.
    """
    marker = "ANSWER_MARKER"
    conversation = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    answer = [{"role": "assistant", "content": [{"type": "text", "text": marker}]}]
    prompt = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(conversation + answer, tokenize=False)
    follows = full.startswith(prompt)
    at = full.find(marker, len(prompt) if follows else 0)
    suffix = full[at + len(marker) :] if at >= 0 else ""
    if suffix.rstrip():
        return (full[len(prompt) : at] if follows else ""), suffix if trailing_whitespace else suffix.rstrip()
    return "", processor.tokenizer.eos_token or ""


def build_inputs(processor, conversations: Sequence[Messages], add_generation_prompt: bool = True,
                 answers: Sequence[str] | None = None, **processor_kwargs):
    """Tokenise a batch of conversations (left-padded for generation) with their images and videos.

    The rendered template already holds the special tokens (Gemma 3's renders its `<bos>`), so the tokenizer adds
    none. Clips were sampled by the product: the family's row (`core.families`) turns their shapes and frame times
    into the processor's kwargs, so it neither samples again nor guesses when the frames were taken.

    With `answers`, each conversation's text is its generation prompt followed by its answer (already between the
    template's `answer_affixes`): what training feeds, token for token what generation continues from.

    Raises:
        ValueError: A clip without its frame times, for a family that needs them.
    """
    texts, images, videos, times = [], [], [], []
    for index, messages in enumerate(conversations):
        texts.append(
            processor.apply_chat_template(strip_media(messages), tokenize=False,
                                          add_generation_prompt=add_generation_prompt or answers is not None)
            + (answers[index] if answers is not None else "")
        )
        conv_images, conv_videos, conv_times = media_from_messages(messages)
        if conv_images:  # grouped per conversation: SmolVLM2's and Gemma 3's processors count them per text
            images.append(conv_images)
        videos.extend(conv_videos)
        times.extend(conv_times)
    processor.tokenizer.padding_side = "left"
    kwargs = dict(text=texts, padding=True, return_tensors="pt", add_special_tokens=False)
    if images:
        kwargs["images"] = images
    if videos:
        kwargs["videos"] = videos
        kwargs["do_sample_frames"] = False
        family = family_of_processor(processor)
        if family is not None:
            if any(clip_times is None for clip_times in times):
                raise ValueError(f"a clip reached {family.title}'s processor without its frame times (timestamps_s)")
            kwargs.update(family.video_kwargs([tuple(np.shape(video)[:3]) for video in videos], times))
    return processor(**{**kwargs, **processor_kwargs})


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def adapter_context(model, use_adapter: bool):
    """Disable the adapter for base answers; a model without one answers the same either way."""
    if use_adapter or not hasattr(model, "disable_adapter"):
        return nullcontext()
    return model.disable_adapter()


class Answer(NamedTuple):
    """One generated answer, and whether generation stopped at `max_new_tokens` instead of at an end token."""

    text: str
    truncated: bool


def end_token_ids(model, processor) -> set[int]:
    """The token ids that end an answer: the generation config's, else the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = getattr(getattr(processor, "tokenizer", processor), "eos_token_id", None)
    if ids is None:
        return set()
    return {int(i) for i in ids} if isinstance(ids, (list, tuple)) else {int(ids)}


def hit_limit(new_tokens: torch.Tensor, end_ids: set[int], max_new_tokens: int) -> list[bool]:
    """Per row of generated tokens, whether it ran to `max_new_tokens` without writing an end token: an answer cut
    off, not finished. A batch shorter than the limit stopped because every row ended.

    >>> rows = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 8], [5, 6, 7, 2]])  # 2 ends an answer, 0 pads a finished row
    >>> hit_limit(rows, {2}, max_new_tokens=4), hit_limit(rows[:, :3], {2}, max_new_tokens=4)
    ([False, True, False], [False, False, False])
    """
    if new_tokens.shape[1] < max_new_tokens:
        return [False] * new_tokens.shape[0]
    if not end_ids:
        return [True] * new_tokens.shape[0]
    ended = torch.isin(new_tokens, torch.tensor(sorted(end_ids), device=new_tokens.device)).any(dim=1)
    return [not bool(e) for e in ended]


@torch.inference_mode()
def generate_answers(
    model,
    processor,
    conversations: Sequence[Messages],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    use_adapter: bool = True,
    batch_size: int = 8,
    progress=None,
    **processor_kwargs,
) -> list[Answer]:
    """Answers for each conversation, greedy unless `temperature` > 0, in batches of `batch_size`, each marked
    `truncated` when it hit `max_new_tokens` (evaluation reports those apart from answers that are wrong).

    `progress`, when given, is called with the number of conversations finished after each batch.
    """
    answers: list[Answer] = []
    end_ids = end_token_ids(model, processor)
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start : start + batch_size]
        inputs = build_inputs(processor, batch, **processor_kwargs).to(model_device(model))
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with adapter_context(model, use_adapter):
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, pad_token_id=processor.tokenizer.pad_token_id, **sampling
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
        answers.extend(Answer(t, cut) for t, cut in zip(texts, hit_limit(new_tokens, end_ids, max_new_tokens)))
        if progress:
            progress(len(answers))
    return answers


def generate(model, processor, conversations: Sequence[Messages], **kwargs) -> list[str]:
    """The texts of `generate_answers` (same arguments), for callers that need no truncation flag."""
    return [answer.text for answer in generate_answers(model, processor, conversations, **kwargs)]


def stream_generate(
    model,
    processor,
    messages: Messages,
    *,
    max_new_tokens: int = 256,
    use_adapter: bool = True,
    **processor_kwargs,
) -> Iterator[str]:
    """Yield the answer's text as it grows, for the compare view. Greedy decoding.

    Closing the iterator early (a page rerun) stops the generation and waits for its thread, so a caller that
    holds a lock around it keeps it until the model is idle, with its adapter switched back on.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    inputs = build_inputs(processor, [messages], **processor_kwargs).to(model_device(model))
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    error: list[BaseException] = []
    stop = threading.Event()

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    def run():
        try:
            with torch.inference_mode(), adapter_context(model, use_adapter):
                model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopWhenAsked()]),
                    pad_token_id=processor.tokenizer.pad_token_id,
                )
        except BaseException as err:  # surfaced to the caller below
            error.append(err)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True, name="compare-generate")
    thread.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text
    finally:
        stop.set()
        thread.join()
    if error:
        raise error[0]

