"""A model's own thinking mode is off wherever the product renders a prompt: the product's reasoning is its own
<REASONING> block (`data.reasoning`), and a thinking model (Qwen3.5, Gemma 4) left at its default would write a second
one first, which no reward or scorer reads. The default is set on the loaded processor's template, so TRL's renderers,
which pass no template kwargs, get it too; a caller that names `enable_thinking` still decides."""

from __future__ import annotations

import pytest

from core.config import ModelSection
from core.models import load_processor

# The shape of a thinking model's generation prompt: thinking on unless `enable_thinking` is false, as Qwen3's and
# Qwen3.5's templates have it (an empty think block closes the thinking before the answer).
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n"
    "{% for part in message.content %}{% if part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
PROMPT = [{"role": "user", "content": [{"type": "text", "text": "Is there a fire?"}]}]


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory):
    """The tiny Qwen2.5-VL's processor saved with a thinking model's template."""
    folder = tmp_path_factory.mktemp("thinking")
    processor = load_processor(ModelSection(name="tiny:qwen2_5_vl"))
    processor.chat_template = TEMPLATE
    processor.tokenizer.chat_template = TEMPLATE
    processor.save_pretrained(folder)
    return ModelSection(name=str(folder))


def test_the_generation_prompt_closes_the_models_thinking(thinking_model):
    processor = load_processor(thinking_model)
    prompt = processor.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), prompt
    # Asked for by name, thinking is still there.
    asked = processor.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert asked.endswith("<|im_start|>assistant\n<think>\n"), asked


def test_trl_renders_the_same_prompt(thinking_model):
    """TRL renders a prompt with `apply_chat_template(example, processor)` and no kwargs (its DPO collator does)."""
    from trl.data_utils import apply_chat_template

    processor = load_processor(thinking_model)
    rendered = apply_chat_template({"prompt": PROMPT}, processor)
    assert rendered["prompt"].endswith("<think>\n\n</think>\n\n"), rendered["prompt"]
    assert processor.tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True).endswith(
        "</think>\n\n")
