"""A model outside the family table trains end to end: a tiny random-weight LLaVA (an architecture transformers' Auto
classes load, with a chat template that takes typed content parts) runs the image GRPO recipe to a finished LoRA run,
and its log and the UI say what is generic about it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import IMAGE_SMOKE
from core.runs import RunDir

# ChatML turns; a turn is a plain string or a list of typed parts, and an image part becomes the processor's <image>.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llava(folder: Path) -> Path:
    """A two-layer LLaVA (CLIP vision tower, Llama text tower) with the tiny models' local BPE tokenizer and a
    LlavaProcessor, saved to `folder`: 28-pixel images, 4 image tokens each, no hub."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from core.families.tiny_parts import CLIP_MEAN, CLIP_STD, build_tokenizer, generation_config, padded_vocab_size

    added = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<image>", True)]
    tokenizer = build_tokenizer(added, CHAT_TEMPLATE, model_max_length=4096)
    token_id = tokenizer.convert_tokens_to_ids
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=28, patch_size=14),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=padded_vocab_size(tokenizer), bos_token_id=token_id("<|im_start|>"),
                                eos_token_id=token_id("<|im_end|>"), pad_token_id=token_id("<|endoftext|>")),
        image_token_id=token_id("<image>"),
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = generation_config(tokenizer, stop=("<|im_end|>",), pad="<|endoftext|>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                         image_mean=CLIP_MEAN, image_std=CLIP_STD)
    # 2x2 patches plus CLIP's class token, which the "default" strategy drops: 4 <image> tokens a picture.
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14, image_token="<image>",
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_model_outside_the_table_trains_and_says_what_is_generic(tmp_path, wildfire_synthetic, capsys):
    import torch
    from transformers import AutoModelForImageTextToText

    from core.families import family_of_config
    from image_vlm import evaluate, train
    from ui.form import family_notes

    folder = build_tiny_llava(tmp_path / "llava")
    base = AutoModelForImageTextToText.from_pretrained(folder)
    assert family_of_config(base.config) is None, "LLaVA joined the family table: pick another architecture here"

    run = RunDir(tmp_path / "run")
    # LoRA with only the vision toggles on: outside the table the toggles give way to every language linear layer.
    # Two warm-start (SFT) steps first: the collator finds the answer in this template's turns, and the adapter moves.
    code = train.main([
        "--config", "image_vlm/configs/tiny.yaml", "--run-dir", str(run.path), *IMAGE_SMOKE, f"model.name={folder}",
        f"data.root={wildfire_synthetic}", "warm_start.enabled=true", "warm_start.max_steps=2", "train.max_steps=2", "logging.save_steps=1000", "eval.limit=4", "eval.batch_size=4",
        "finetune.vision_attention=true", "finetune.language_attention=false", "finetune.language_mlp=false",
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 2, status
    stages = {m.get("stage") for m in run.read_metrics() if "loss" in m}
    assert stages == {"warm_start", "grpo"}, stages

    # The log: which parts are generic, no estimate, LoRA on every linear layer of the language model.
    assert "'llava' is not in the family table" in out and "generic handling" in out, out
    assert "LoRA: the four toggles fall back to every linear layer of the language model" in out, out
    assert "prompts: the processor's own chat template" in out, out
    assert "estimate cannot be made for it" in out and "estimate: not available for this config" in out, out
    assert not run.estimate_path.exists()
    # The UI's caption under the model picker says the same.
    assert family_notes(str(folder), "image") == [line for line in out.splitlines() if line.startswith(("model family:", "  - "))]

    # The adapter covers exactly the language model's linear layers, and training moved it.
    language = {name for name, module in base.named_modules()
                if isinstance(module, torch.nn.Linear) and ".language_model." in name}
    assert len(language) == 2 * 7
    adapter = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == language, adapter["target_modules"]
    from safetensors.torch import load_file

    lora_b = [tensor for name, tensor in load_file(run.adapter_dir / "adapter_model.safetensors").items() if "lora_B" in name]
    assert len(lora_b) == len(language) and any(tensor.abs().sum() > 0 for tensor in lora_b)

    # The run's own evaluation loads it back (base and tuned) and answers.
    assert evaluate.main(["--run", str(run.path), "--limit", "4"]) == 0
    report = json.loads((run.eval_dir / "test.json").read_text())
    assert set(report["models"]) == {"base", "tuned"}
