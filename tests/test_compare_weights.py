"""Compare never lies: a fully fine-tuned run's base column comes from the base weights, and a page rerun in the
middle of an answer cannot release the model while it still generates with its adapter switched off."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.config import read_yaml, to_yaml, validate_config
from core.generation import generate
from core.models import load_model, load_processor
from core.runs import RunDir
from image_vlm.config import ImageConfig
from image_vlm.task import image_size_arguments

ROOT = Path(__file__).resolve().parents[1]


def tiny_run(tmp_path: Path, method: str) -> tuple[RunDir, ImageConfig, Path]:
    data = read_yaml(ROOT / "image_vlm" / "configs" / "tiny.yaml")
    data["finetune"]["method"] = method
    data.setdefault("eval", {})["max_new_tokens"] = 24
    cfg = validate_config(ImageConfig, data)
    run = RunDir(tmp_path / f"image-{method}")
    run.path.mkdir()
    run.config_path.write_text(to_yaml(cfg))
    processor = load_processor(cfg.model, **image_size_arguments(cfg.data.max_pixels))
    model = load_model(cfg.model)
    torch.manual_seed(0)
    if method == "full":  # "trained": the output head moved far from the base's
        with torch.no_grad():
            model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 5)
        artifact = run.model_dir
        model.save_pretrained(artifact)
    else:
        from core.models import apply_finetune

        tuned = apply_finetune(model, cfg.finetune)
        with torch.no_grad():
            for name, param in tuned.named_parameters():
                if "lora_B" in name:
                    param.add_(torch.randn_like(param) * 5)
        artifact = run.adapter_dir
        tuned.save_pretrained(artifact)
    processor.save_pretrained(artifact)
    image = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    return run, cfg, image


def last(texts) -> str:
    text = ""
    for text in texts:
        pass
    return text


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
