"""Tests for core.tiny: the tiny Qwen2.5-VL and InternVL models load, run, generate and train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import tiny
from core.tiny import BUILDER_VERSION, TINY_KINDS, resolve_model_name, tiny_model_path

WILDFIRE_ANSWER = "<REASONING>x</REASONING><SOLUTION>Yes</SOLUTION>"
VIDEO_ANSWER = json.dumps(
    {
        "caption": "A car turns left at the intersection.",
        "event_type": "near_miss",
        "rule_violations": ["failure_to_yield"],
        "intended_action": "turn_left",
        "traffic_density": "high",
        "visibility": "good",
        "scene": "Sub-urban",
    }
)

# Image tokens per picture: Qwen gives one per 28x28 px after resizing into [56x56, 112x112] px;
# InternVL always resizes to one 56x56 tile = 4 tokens.
EXPECTED_IMAGE_TOKENS = {
    "qwen2_5_vl": {64: 4, 350: 16},
    "internvl": {64: 4, 350: 4},
}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Point VLM_TINY_DIR at a temporary folder for the whole session so the home cache stays clean."""
    root = tmp_path_factory.mktemp("tiny-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLM_TINY_DIR", str(root))
        yield root


@pytest.fixture(scope="session")
def tiny_paths(tiny_dir) -> dict[str, Path]:
    """Build (once) and return the folder of every tiny model kind."""
    return {kind: tiny_model_path(kind) for kind in TINY_KINDS}


def load(path: Path):
    """Load a tiny model in eval mode and its processor with the Auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def random_image(size: int, seed: int = 0) -> Image.Image:
    """Return a random RGB PIL image of size x size pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def image_messages(image: Image.Image) -> list[dict]:
    """Return a one-turn user conversation with an image and the wildfire question."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "Is there a wildfire in this satellite image?"},
            ],
        }
    ]


def image_token_id(model) -> int:
    """Return the id of the placeholder token that image features replace."""
    return model.config.image_token_id


def test_resolve_model_name_passes_other_names_through(tiny_dir):
    before = sorted(tiny_dir.iterdir())
    assert resolve_model_name("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert resolve_model_name("/models/my-checkpoint") == "/models/my-checkpoint"
    assert resolve_model_name("tinyllama/x") == "tinyllama/x"
    assert sorted(tiny_dir.iterdir()) == before  # nothing was built for them


def test_resolve_model_name_rejects_unknown_kind():
    with pytest.raises(ValueError, match="tiny:qwen2_5_vl.*tiny:internvl"):
        resolve_model_name("tiny:llava")


def test_resolve_model_name_returns_cached_folder(tiny_paths, tiny_dir):
    for kind in TINY_KINDS:
        resolved = Path(resolve_model_name(f"tiny:{kind}"))
        assert resolved == tiny_paths[kind]
        assert resolved.parent == tiny_dir
        assert f"v{BUILDER_VERSION}" in resolved.name
        assert (resolved / "model.safetensors").is_file()
    # No staging folders are left behind.
    assert sorted(p.name for p in tiny_dir.iterdir() if p.is_dir()) == sorted(p.name for p in tiny_paths.values())


def test_tiny_model_path_keeps_the_winner_of_a_lost_race(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_TINY_DIR", str(tmp_path))
    target = tmp_path / f"internvl-v{BUILDER_VERSION}"

    def build_while_another_process_finishes_first(kind, out_dir, seed=0):
        Path(out_dir, "config.json").write_text("{}")
        target.mkdir()
        (target / "config.json").write_text('{"winner": true}')
        return Path(out_dir)

    monkeypatch.setattr(tiny, "build_tiny_model", build_while_another_process_finishes_first)
    assert tiny_model_path("internvl") == target
    assert json.loads((target / "config.json").read_text()) == {"winner": True}
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [target.name]


def test_cli_builds_into_out_dir(tmp_path, tiny_paths):
    tiny.main(["--kind", "internvl", "--out", str(tmp_path / "cli")])
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert (tmp_path / "cli" / name).is_file()


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_tokenizer_round_trips_task_text(kind, tiny_paths):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_paths[kind])
    for text in (WILDFIRE_ANSWER, VIDEO_ANSWER, "Yes", "No", "héllo 🔥\n\tdone"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    # The task words were in the training corpus, so they compress well.
    assert len(tokenizer.encode(VIDEO_ANSWER, add_special_tokens=False)) < len(VIDEO_ANSWER) // 2
    assert 1000 <= len(tokenizer) <= 2100


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_special_tokens_are_single_ids_that_match_the_config(kind, tiny_paths):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_paths[kind])
    config = AutoConfig.from_pretrained(tiny_paths[kind])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    specials += ["<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
    if kind == "internvl":
        specials += ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    for token in specials:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tokenizer.convert_ids_to_tokens(ids) == [token]

    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template
    text_config = config.get_text_config()
    assert text_config.vocab_size >= len(tokenizer)
    assert text_config.eos_token_id == tokenizer.eos_token_id
    assert text_config.pad_token_id == tokenizer.pad_token_id
    if kind == "qwen2_5_vl":
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert config.vision_config.out_hidden_size == text_config.hidden_size
    else:
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        assert tokenizer.context_image_token == "<IMG_CONTEXT>"
        assert tokenizer.video_token == "<video>"
        patches_per_side = config.vision_config.image_size[0] // config.vision_config.patch_size[0]
        assert config.image_seq_length == int(patches_per_side**2 * config.downsample_ratio**2)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_image_chat_forward_and_generate(kind, tiny_paths):
    model, processor = load(tiny_paths[kind])
    for size, expected_tokens in EXPECTED_IMAGE_TOKENS[kind].items():
        inputs = processor.apply_chat_template(
            image_messages(random_image(size)),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        assert int((inputs["input_ids"] == image_token_id(model)).sum()) == expected_tokens
        with torch.no_grad():
            logits = model(**inputs).logits
        assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.get_text_config().vocab_size)
        assert torch.isfinite(logits).all()

    prompt_length = inputs["input_ids"].shape[1]
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert prompt_length < generated.shape[1] <= prompt_length + 5


def test_internvl_video_frames(tiny_paths):
    model, processor = load(tiny_paths["internvl"])
    frames = np.random.default_rng(1).integers(0, 256, (4, 90, 160, 3), dtype=np.uint8)
    tokens_per_frame = processor.image_seq_length
    for video in (frames, [Image.fromarray(frame) for frame in frames]):
        messages = [
            {
                "role": "user",
                "content": [{"type": "video", "video": video}, {"type": "text", "text": "Describe the video."}],
            }
        ]
        from_template = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        from_videos_arg = processor(text=[prompt], videos=[video], return_tensors="pt")
        for inputs in (from_template, from_videos_arg):
            assert inputs["pixel_values"].shape == (4, 3, 56, 56)
            assert int((inputs["input_ids"] == image_token_id(model)).sum()) == 4 * tokens_per_frame
            with torch.no_grad():
                logits = model(**inputs).logits
            assert logits.shape[:2] == inputs["input_ids"].shape
    assert "Frame4: <img>" in processor.decode(from_videos_arg["input_ids"][0])


def training_batch(kind: str, processor) -> dict:
    """Return a two-example batch (prompt + assistant answer) with labels on every non-pad token."""
    if kind == "qwen2_5_vl":
        answer, media = WILDFIRE_ANSWER, [random_image(64, seed) for seed in range(2)]
        content = [{"type": "image"}, {"type": "text", "text": "Is there a wildfire?"}]
        media_kwargs = {"images": media}
    else:
        answer = VIDEO_ANSWER
        media = [np.random.default_rng(seed).integers(0, 256, (2, 56, 56, 3), dtype=np.uint8) for seed in range(2)]
        content = [{"type": "video"}, {"type": "text", "text": "Describe the video."}]
        media_kwargs = {"videos": media}
    conversation = [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    texts = [processor.apply_chat_template(conversation)] * 2
    batch = processor(text=texts, padding=True, return_tensors="pt", **media_kwargs)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_sgd_steps_reduce_loss(kind, tiny_paths):
    model, processor = load(tiny_paths[kind])
    model.train()
    batch = training_batch(kind, processor)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(np.isfinite(losses))
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.3, losses
