"""The compare view's model: one cached copy of a run's base weights with its adapter attached.

Base answers come from the same weights with the adapter switched off (`core.generation`). The cache holds
one model at a time, under a `compare` lease on the one GPU lock in `runs/`: a training or evaluation
launch from either container asks for the GPU, and this process drops the model and the lease (after any
answer in progress); it reloads lazily on the next Generate.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from core.config import validate_config
from core.gpu_lease import acquire_gpu_lock, release_gpu_lock
from core.runs import RunDir
from ui.recipes import IMAGE, RECIPES, Recipe

_REASONING = re.compile(r"<REASONING>(.*?)(?:</REASONING>|$)", re.DOTALL)


@dataclass
class CompareModel:
    model: Any  # the tuned weights (base + adapter, or a fully fine-tuned model)
    base: Any  # the base weights: the same object with an adapter (switched off to answer), else a second copy
    processor: Any
    config: Any
    lock: threading.Lock  # one generation at a time: the adapter switch is global to the model


def run_config(recipe: Recipe, run: RunDir):
    """A run's resolved config, validated (ConfigError names the field; OSError when the file is gone)."""
    return validate_config(recipe.config_cls, run.read_config(), source=str(run.config_path))


_loaded: CompareModel | None = None  # the cached model, so a release from another thread can wait for its answer


def take_compare_lease(run_id: str) -> None:
    """Hold the GPU for the compare view (GpuBusy names the training or evaluation job that has it; a run that has
    just ended is waited for while its process exits, `acquire_gpu_lock`)."""
    acquire_gpu_lock(run_id, kind="compare", on_release_request=release_compare_model)


@st.cache_resource(max_entries=1, show_spinner=False)
def load_compare_model(recipe_name: str, run_id: str, run_path: str, artifact: str, stamp: float) -> CompareModel:
    """Load once per (run, artifact); `stamp` (the artifact's mtime) reloads a checkpoint that changed.

    The caller holds the compare lease (`take_compare_lease`).
    """
    global _loaded
    from core.models import load_base_and_tuned, load_processor

    recipe = RECIPES[recipe_name]
    cfg = run_config(recipe, RunDir(run_path))
    # A fully fine-tuned run has no adapter to switch off: its base column needs the base weights, as in evaluation.
    model, base = load_base_and_tuned(cfg.model, Path(artifact), cfg.finetune)
    if recipe is IMAGE:
        from image_vlm.task import image_size_arguments

        # The same image budget as training and evaluation.
        processor = load_processor(cfg.model, **image_size_arguments(cfg.model, cfg.data.max_pixels))
    else:
        processor = load_processor(cfg.model)
    _loaded = CompareModel(model, base, processor, cfg, threading.Lock())
    return _loaded


def release_compare_model(answer_wait_s: float = 20.0) -> None:
    """Drop the cached model and the compare lease; the next Generate loads it again.

    Called before this UI launches a job, and from the lease's watcher thread when another container asks
    for the GPU; an answer being generated finishes first (up to `answer_wait_s`).
    """
    global _loaded
    loaded, _loaded = _loaded, None
    if loaded is not None and loaded.lock.acquire(timeout=answer_wait_s):
        loaded.lock.release()
    del loaded
    load_compare_model.clear()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    release_gpu_lock(kind="compare")


def image_messages(cfg, image_path: Path, prompt: str | None = None):
    """The recipe's messages for one image; `prompt`, when given, asks in place of `data.question`."""
    from core.media.image import open_image
    from image_vlm.task import prompt_messages

    data = cfg.data.model_copy(update={"question": prompt}) if prompt else cfg.data
    return prompt_messages(data, image=open_image(image_path))


def video_messages(cfg, video_path: Path, start_s: float | None = None, end_s: float | None = None,
                   prompt: str | None = None):
    """The recipe's messages for one clip; `prompt`, when given, asks in place of the schema's instruction (the
    system message and the clip stay)."""
    from video_vlm.schema import load_schema
    from video_vlm.task import prompt_messages, sample_clip

    data = cfg.final_data
    clip = sample_clip(video_path, data, start_s, end_s)  # the recipe's one frame sampler
    messages = prompt_messages(data, load_schema(data.schema_file), video=clip)
    if prompt:
        user = messages[-1]
        user["content"] = [{"type": "text", "text": prompt} if part["type"] == "text" else part
                           for part in user["content"]]
    return messages


def default_prompt(recipe: Recipe, cfg) -> str:
    """What the model is asked when the compare view's prompt box is empty: the recipe's own question."""
    if recipe is IMAGE:
        return cfg.data.question
    from video_vlm.schema import load_schema

    return load_schema(cfg.final_data.schema_file).prompt()


def stream_answer(loaded: CompareModel, messages, use_adapter: bool) -> Iterator[str]:
    """The growing answer text; base when `use_adapter` is False. The lock is held until the generation has
    stopped, even when the page reruns mid-answer, so base and tuned answers never mix."""
    from core.generation import stream_generate

    with loaded.lock:
        yield from stream_generate(
            loaded.model if use_adapter else loaded.base,
            loaded.processor,
            messages,
            max_new_tokens=loaded.config.eval.max_new_tokens,
            use_adapter=use_adapter,
        )


def split_image_answer(text: str) -> dict[str, Any]:
    """The parts of an image answer worth showing: the solution (or None) and the reasoning.

    >>> split_image_answer("<REASONING>Red blob.</REASONING><SOLUTION>Yes</SOLUTION>")
    {'solution': 'Yes', 'reasoning': 'Red blob.'}
    >>> split_image_answer("garbage")
    {'solution': None, 'reasoning': None}
    """
    from image_vlm.rewards import parse_solution

    match = _REASONING.search(text)
    reasoning = match.group(1).strip() if match else None
    return {"solution": parse_solution(text), "reasoning": reasoning or None}
