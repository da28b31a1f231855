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
from core.families import FAMILIES, family_by_key
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
    "qwen3_vl": {
        "text_config": {
            "num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [3, 3, 2], "mrope_interleaved": True},
        },
        "vision_config": {"depth": 1, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 64, "deepstack_visual_indexes": [0]},
    },
    "internvl3_5": {
        "text_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16},
        "vision_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    },
    "smolvlm2": {
        "text_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16},
        "vision_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    },
    "gemma3": {
        "text_config": {
            "num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "query_pre_attn_scalar": 16, "layer_types": ["full_attention"],
        },
        "vision_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    },
    "qwen3_5": {
        "text_config": {
            "num_hidden_layers": 2, "layer_types": ["linear_attention", "full_attention"], "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
            "linear_key_head_dim": 16, "linear_value_head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "mrope_section": [2, 1, 1], "mrope_interleaved": True, "partial_rotary_factor": 0.25},
        },
        "vision_config": {"depth": 1, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 64},
    },
    "gemma4": {
        "text_config": {
            "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "global_head_dim": 32, "num_global_key_value_heads": 1, "layer_types": ["sliding_attention", "full_attention"],
        },
        "vision_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16},
    },
}  # fmt: skip
# The image placeholder, the picture each test feeds (its side in px) and the image tokens the full-size processor
# must give it, as each family's published processing does: InternVL a 448 px tile as 256; Qwen2.5-VL a 350 px
# picture at the recipe's 350x350 budget as 12 x 12 merged 28 px patches, Qwen3-VL as 10 x 10 merged 32 px patches
# (350 rounds down to 320 within the budget); SmolVLM2 as one 384 px tile of 81 (the budget's side is under two
# tiles); Gemma 3 as 256.
IMAGE_TOKENS = {
    "internvl": ("<IMG_CONTEXT>", 448, 256), "internvl3_5": ("<IMG_CONTEXT>", 448, 256),
    "qwen2_5_vl": ("<|image_pad|>", 350, 144), "qwen3_vl": ("<|image_pad|>", 350, 100),
    "smolvlm2": ("<image>", 350, 81), "gemma3": ("<image_soft_token>", 350, 256), "gemma4": ("<|image|>", 350, 64),
    "qwen3_5": ("<|image_pad|>", 350, 100),
}  # fmt: skip
KINDS = [family.key for family in FAMILIES if family.presets]


def test_every_family_with_a_full_size_architecture_is_checked():
    assert sorted(SHRUNK) == sorted(IMAGE_TOKENS) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_the_folder_loads_and_its_model_reads_its_processors_image_tokens(kind, tmp_path):
    folder = write_random_checkpoint(kind, tmp_path / kind, device="cpu", config_updates=SHRUNK[kind])
    section = ModelSection(name=str(folder), dtype="float32")
    # As the recipes load them: the image recipe sets its pixel budget, InternVL's 448 px is in the folder.
    sizing = image_size_arguments(section, ImageDataSection().max_pixels)
    model, processor = load_model(section).eval(), load_processor(section, **sizing)
    placeholder, size, expected_tokens = IMAGE_TOKENS[kind]
    assert processor.tokenizer.convert_ids_to_tokens(model.config.image_token_id) == placeholder
    published_vocab = family_by_key(kind).presets[0].config().text_config.vocab_size
    assert model.config.text_config.vocab_size == published_vocab > 40000, "the published vocabulary, not the tiny one"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Fire?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[[image]], return_tensors="pt", add_special_tokens=False)
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == expected_tokens
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.text_config.vocab_size


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="expected one of qwen2_5_vl, internvl"):
        full_size_processor_files("llava", "/nonexistent")
