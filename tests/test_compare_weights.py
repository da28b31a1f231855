"""Compare never lies: a fully fine-tuned run's base column comes from the base weights, and a page rerun in the
middle of an answer cannot release the model while it still generates with its adapter switched off."""

from __future__ import annotations

import functools
import threading

import torch

from conftest import last, tiny_run
from core.generation import generate
from core.models import load_model


def test_full_fine_tuning_compares_against_the_real_base(tmp_path):
    from ui.compare_models import image_messages, load_compare_model, stream_answer

    run, cfg, image = tiny_run(tmp_path, "full")
    loaded = load_compare_model("image", run.id, str(run.path), str(run.model_dir), run.model_dir.stat().st_mtime)
    assert loaded.base is not loaded.model
    assert not torch.equal(loaded.base.lm_head.weight, loaded.model.lm_head.weight), "two different sets of weights"
    messages = image_messages(cfg, image)
    base_text = last(stream_answer(loaded, messages, use_adapter=False))
    tuned_text = last(stream_answer(loaded, messages, use_adapter=True))
    processor = loaded.processor
    direct_base = generate(load_model(cfg.model).eval(), processor, [messages], max_new_tokens=cfg.eval.max_new_tokens)[0]
    assert base_text.strip() == direct_base.strip(), "the base column is the base model's own answer"
    assert base_text != tuned_text


def test_a_rerun_mid_answer_keeps_the_model_until_generation_stops(tmp_path):
    from ui.compare_models import image_messages, load_compare_model, stream_answer

    run, cfg, image = tiny_run(tmp_path, "lora")
    loaded = load_compare_model("image", run.id, str(run.path), str(run.adapter_dir), run.adapter_dir.stat().st_mtime)
    assert loaded.base is loaded.model, "an adapter run answers base and tuned from one copy"
    # A long answer, so the generation is still running when the page reruns.
    loaded.model.generate = functools.partial(loaded.model.generate, min_new_tokens=400)
    loaded.config.eval.max_new_tokens = 400
    messages = image_messages(cfg, image)
    threads_before = threading.active_count()
    answer = stream_answer(loaded, messages, use_adapter=False)
    next(answer)
    answer.close()  # what a Streamlit rerun does to a running generator
    assert threading.active_count() == threads_before, "the generation thread was left running"
    assert loaded.lock.acquire(blocking=False), "the lock is free only once the model is idle"
    loaded.lock.release()
    # The adapter is back on: a tuned answer now is the tuned answer, not the base's.
    loaded.config.eval.max_new_tokens = 24
    del loaded.model.generate
    tuned_now = last(stream_answer(loaded, messages, use_adapter=True))
    base_now = last(stream_answer(loaded, messages, use_adapter=False))
    assert tuned_now != base_now
