"""The random-weight model folders the GPU suite and the benches load at full size, checked on CPU with the
same code and a shrunk architecture: the folder loads through the product's loaders, and the model expects the
ids and the number of image tokens its processor produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.architectures import full_size_processor_files, write_random_checkpoint
from core.config import ModelSection
from core.models import load_model, load_processor
from image_vlm.config import ImageDataSection
from image_vlm.task import image_size_arguments

# Full-size vocabulary and image processing; one narrow layer per tower so that it builds in seconds on CPU.
SHRUNK = {
    "internvl": {
        "text_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2},
        "vision_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    },
    "qwen2_5_vl": {
        "text_config": {
            "num_hidden_layers": 1, "max_window_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        },
        "vision_config": {"depth": 1, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 64, "fullatt_block_indexes": [0]},
    },
}  # fmt: skip


@pytest.mark.parametrize("kind", ["internvl", "qwen2_5_vl"])
def test_the_folder_loads_and_its_model_reads_its_processors_image_tokens(kind, tmp_path):
    folder = write_random_checkpoint(kind, tmp_path / kind, device="cpu", config_updates=SHRUNK[kind])
    section = ModelSection(name=str(folder), dtype="float32")
    # As the recipes load them: the image recipe sets its pixel budget, InternVL's 448 px is in the folder.
    sizing = image_size_arguments(section, ImageDataSection().max_pixels)
    model, processor = load_model(section).eval(), load_processor(section, **sizing)
    image_token = processor.tokenizer.convert_ids_to_tokens(model.config.image_token_id)
    assert image_token in ("<IMG_CONTEXT>", "<|image_pad|>")
    assert model.config.text_config.vocab_size >= 151674, "the published vocabulary, not the tiny one"
    size = 448 if kind == "internvl" else 350
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Fire?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    if kind == "internvl":
        assert image_tokens == 256, "InternVL3-8B reads a 448 px frame as 256 tokens"
    else:
        assert image_tokens == 144, "Qwen2.5-VL reads a 350 px tile as 12 x 12 merged 28 px patches"
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.text_config.vocab_size


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="expected one of qwen2_5_vl, internvl"):
        full_size_processor_files("llava", "/nonexistent")
