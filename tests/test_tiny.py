"""Tests for core.tiny: the tiny model of every family in the table loads, runs, generates and trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import tiny
from core.families import family_by_key, family_of_config
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

# Image tokens per picture: Qwen2.5-VL gives one per 28x28 px after resizing into [56x56, 112x112] px, Qwen3-VL one
# per 32x32 px into [64x64, 128x128]; InternVL always resizes to one 56x56 tile = 4 tokens, Gemma 3 to one 56 px
# square = 4 tokens; SmolVLM2 scales the longest edge to 768 px, 2x2 tiles of 384 px and a global one, 4 tokens each.
EXPECTED_IMAGE_TOKENS = {
    "qwen2_5_vl": {64: 4, 350: 16},
    "internvl": {64: 4, 350: 4},
    "qwen3_vl": {64: 4, 350: 16},
    "internvl3_5": {64: 4, 350: 4},
    "smolvlm2": {64: 20, 350: 20},
    "gemma3": {64: 4, 350: 4},
    "gemma4": {64: 64, 350: 64},
    "qwen3_5": {64: 4, 350: 16},
}

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
QWEN_SPECIALS += ["<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN3_SPECIALS = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
INTERNVL_SPECIALS = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
# Per kind: tokens that must stay single ids, then the eos, pad and image-placeholder tokens.
TOKENS = {
    "qwen2_5_vl": (QWEN_SPECIALS, "<|im_end|>", "<|endoftext|>", "<|image_pad|>"),
    "internvl": (QWEN_SPECIALS + INTERNVL_SPECIALS, "<|im_end|>", "<|endoftext|>", "<IMG_CONTEXT>"),
    "qwen3_vl": (QWEN_SPECIALS + QWEN3_SPECIALS, "<|im_end|>", "<|endoftext|>", "<|image_pad|>"),
    "internvl3_5": (QWEN_SPECIALS + QWEN3_SPECIALS + INTERNVL_SPECIALS, "<|im_end|>", "<|endoftext|>", "<IMG_CONTEXT>"),
    "smolvlm2": (
        ["<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<row_1_col_1>", "<row_6_col_6>"]
        + ["<image>"],
        "<end_of_utterance>",
        "<|im_end|>",
        "<image>",
    ),
    "gemma3": (
        ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"]
        + ["<image_soft_token>"],
        "<eos>",
        "<pad>",
        "<image_soft_token>",
    ),
    "qwen3_5": (QWEN_SPECIALS + QWEN3_SPECIALS, "<|im_end|>", "<|endoftext|>", "<|image_pad|>"),
    "gemma4": (
        ["<bos>", "<eos>", "<pad>", "<|turn>", "<turn|>", "<|image>", "<image|>", "<|image|>", "<|video|>", "<|think|>"]
        + ["<|channel>", "<channel|>"],
        "<eos>",
        "<pad>",
        "<|image|>",
    ),
}
# Ids relative to the first added token, as in the real tokenizers (Qwen3's four extra tokens move InternVL's up).
RELATIVE_IDS = {
    "internvl": ("<|endoftext|>", {"<IMG_CONTEXT>": 151667 - 151643}),
    "qwen3_vl": ("<|endoftext|>", {"<|image_pad|>": 151655 - 151643, "<think>": 151667 - 151643}),
    "internvl3_5": ("<|endoftext|>", {"<think>": 151667 - 151643, "<IMG_CONTEXT>": 151671 - 151643}),
    "smolvlm2": ("<global-img>", {"<fake_token_around_image>": 49189 - 49152, "<image>": 49190 - 49152}),
    "qwen3_5": ("<|endoftext|>", {"<|image_pad|>": 248056 - 248044, "<think>": 248068 - 248044}),
}
# What each tiny model trains on below: every family that takes clips trains on one, except Qwen2.5-VL (images).
TRAINING_INPUT = {
    "qwen2_5_vl": "image", "internvl": "video", "qwen3_vl": "video", "internvl3_5": "video",
    "smolvlm2": "video", "gemma3": "image", "gemma4": "video", "qwen3_5": "video",
}  # fmt: skip


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
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_paths[kind])
    config = AutoConfig.from_pretrained(tiny_paths[kind])
    specials, eos, pad, image = TOKENS[kind]
    for token in specials:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tokenizer.convert_ids_to_tokens(ids) == [token]
    if kind in RELATIVE_IDS:
        first, offsets = RELATIVE_IDS[kind]
        start = tokenizer.convert_tokens_to_ids(first)
        assert {token: tokenizer.convert_tokens_to_ids(token) - start for token in offsets} == offsets

    assert tokenizer.eos_token == eos
    assert tokenizer.pad_token == pad
    assert tokenizer.chat_template
    assert family_of_config(config) is family_by_key(kind), "the tiny config finds its own row (InternVL3.5: by its text tower)"
    text_config = config.get_text_config()
    assert text_config.vocab_size >= len(tokenizer)
    assert text_config.eos_token_id == tokenizer.eos_token_id
    assert text_config.pad_token_id == tokenizer.pad_token_id
    assert config.image_token_id == tokenizer.convert_tokens_to_ids(image)
    if kind in ("qwen2_5_vl", "qwen3_vl", "qwen3_5"):
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert config.vision_config.out_hidden_size == text_config.hidden_size
    elif kind in ("internvl", "internvl3_5"):
        assert tokenizer.context_image_token == "<IMG_CONTEXT>"
        assert tokenizer.video_token == "<video>"
        patches_per_side = config.vision_config.image_size[0] // config.vision_config.patch_size[0]
        assert config.image_seq_length == int(patches_per_side**2 * config.downsample_ratio**2)
    elif kind == "smolvlm2":
        patches_per_side = config.vision_config.image_size // config.vision_config.patch_size
        assert AutoProcessor.from_pretrained(tiny_paths[kind]).image_seq_len == patches_per_side**2 // config.scale_factor**2
    elif kind == "gemma3":
        # The chat template renders <bos> itself; the tokenizer would add another, as the real one does.
        assert tokenizer.bos_token == "<bos>" and text_config.bos_token_id == tokenizer.bos_token_id
        assert config.boi_token_id == tokenizer.convert_tokens_to_ids("<start_of_image>")
        assert config.eoi_token_id == tokenizer.convert_tokens_to_ids("<end_of_image>")
        assert AutoProcessor.from_pretrained(tiny_paths[kind]).image_seq_length == config.mm_tokens_per_image


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


@pytest.mark.parametrize("kind", ["internvl", "internvl3_5"])
def test_internvl_video_frames(kind, tiny_paths):
    model, processor = load(tiny_paths[kind])
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
    if TRAINING_INPUT[kind] == "image":
        answer, media = WILDFIRE_ANSWER, [random_image(64, seed) for seed in range(2)]
        content = [{"type": "image"}, {"type": "text", "text": "Is there a wildfire?"}]
        media_kwargs = {"images": [[image] for image in media]}  # one list per example: Gemma 3 and SmolVLM2 need it
    else:
        answer = VIDEO_ANSWER
        media = [np.random.default_rng(seed).integers(0, 256, (2, 56, 56, 3), dtype=np.uint8) for seed in range(2)]
        content = [{"type": "video"}, {"type": "text", "text": "Describe the video."}]
        # As the product passes clips: already sampled, with their frames' times in the row's kwargs.
        clip_kwargs = family_by_key(kind).video_kwargs([clip.shape[:3] for clip in media], [[0.25, 0.75]] * len(media))
        media_kwargs = {"videos": media, "do_sample_frames": False, **clip_kwargs}
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
