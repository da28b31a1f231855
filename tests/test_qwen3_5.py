"""What is particular to the Qwen3.5 row (`core.families.qwen3_5`): its tiny model keeps the hybrid layer pattern
(Gated DeltaNet layers beside full attention), its chat template writes the empty think block when thinking is off
(how the product renders every prompt), the LoRA attention toggle reaches the linear-attention projections, and
the shipped 9B architecture is Qwen3.5's. That the tiny model learns the tiny image task is tests/test_family_learns.py."""

from __future__ import annotations

from core.config import ModelSection
from core.families import family_by_key, family_of_config, family_of_processor
from core.tiny import resolve_model_name

KIND = "qwen3_5"
# The five projections of a Gated DeltaNet block, under transformers 5's names.
LINEAR_ATTENTION = {"in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"}
QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Fire?"}]}]


def tiny_model():
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(resolve_model_name(f"tiny:{KIND}"))


def test_the_tiny_model_keeps_the_hybrid_layers():
    model = tiny_model()
    family = family_by_key(KIND)
    text = model.config.text_config
    assert type(model).__name__ == family.model_class == "Qwen3_5ForConditionalGeneration"
    assert family_of_config(model.config) is family
    assert text.layer_types == ["linear_attention", "full_attention"]
    first, second = model.model.language_model.layers
    assert type(first.linear_attn).__name__ == "Qwen3_5GatedDeltaNet" and not hasattr(first, "self_attn")
    assert type(second.self_attn).__name__ == "Qwen3_5Attention" and not hasattr(second, "linear_attn")
    # The 9B's ratio of linear-attention value heads to key heads (32:16) is kept.
    assert text.linear_num_value_heads == 2 * text.linear_num_key_heads


def test_a_qwen3_5_processor_is_qwen3_vls_and_gets_qwen3_5s_clip_kwargs():
    """Qwen3.5 checkpoints load as Qwen3VLProcessor, so the product finds the Qwen3-VL row from a processor: that
    row's clip kwargs must be Qwen3.5's own, for a processor whose model is the real Qwen3.5."""
    from transformers import AutoConfig

    from core.models import load_processor

    section = ModelSection(name=f"tiny:{KIND}")
    processor = load_processor(section)
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert family_of_config(AutoConfig.from_pretrained(resolve_model_name(section.name))) is family_by_key(KIND)
    found = family_of_processor(processor)
    assert found is not None and found.video_kwargs is family_by_key(KIND).video_kwargs


def test_thinking_off_writes_the_empty_think_block():
    """The real template thinks by default ("<think>\\n" opens the answer) and writes an empty, closed think block
    when `enable_thinking=False`; the product's processor renders that block with no kwarg at all."""
    from core.models import load_processor

    processor = load_processor(ModelSection(name=f"tiny:{KIND}"))
    raw = family_by_key(KIND).tiny_tokenizer()
    assert raw.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n<think>\n"
    )
    off = "<|vision_start|><|image_pad|><|vision_end|>Fire?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert raw.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True, enable_thinking=False).endswith(off)
    assert processor.apply_chat_template(QUESTION, add_generation_prompt=True).endswith(off)
    # A training example's answer sits after the same empty block, so training and generation see one prompt.
    answer = [*QUESTION, {"role": "assistant", "content": [{"type": "text", "text": "<SOLUTION>Yes</SOLUTION>"}]}]
    assert processor.apply_chat_template(answer).endswith(off + "<SOLUTION>Yes</SOLUTION><|im_end|>\n")


def test_the_language_attention_toggle_reaches_the_linear_attention():
    import torch

    from core.config import FinetuneSection
    from core.models import lora_target_modules

    model = tiny_model()
    toggles = ("language_attention", "language_mlp", "vision_attention", "vision_mlp")

    def chosen(toggle: str) -> set[str]:
        return set(lora_target_modules(model, FinetuneSection(**{name: name == toggle for name in toggles})))

    attention = chosen("language_attention")
    assert {name.rsplit(".", 1)[1] for name in attention if ".linear_attn." in name} == LINEAR_ATTENTION
    assert {name.rsplit(".", 1)[1] for name in attention if ".self_attn." in name} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    # Every linear layer of the language model is attention or MLP: nothing of a Gated DeltaNet block is left out.
    language = {
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".language_model." in name
    }
    assert attention | chosen("language_mlp") == language
    assert not any(".linear_attn." in name for name in chosen("language_mlp") | chosen("vision_attention"))


def test_the_shipped_9b_is_qwen3_5s_architecture():
    from core.families.qwen3_5 import qwen3_5_9b_config

    config = qwen3_5_9b_config()
    text = config.text_config
    assert family_of_config(config) is family_by_key(KIND)
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size, text.vocab_size) == (32, 4096, 12288, 248320)
    assert text.layer_types == ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 8
    assert (config.vision_config.depth, config.vision_config.hidden_size, config.vision_config.out_hidden_size) == (27, 1152, 4096)
    assert (config.image_token_id, config.video_token_id) == (248056, 248057)
