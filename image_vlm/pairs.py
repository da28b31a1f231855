"""Preference pairs for the wildfire task: sample answers per training image, rank them with GRPO's own rewards.

    python -m image_vlm.pairs --config image_vlm/configs/tiny_dpo.yaml [--from RUN] [--run-dir D] [key=value ...]

Samples `pairs.samples_per_prompt` answers per training image with the training prompt, scores each with the
weighted rewards of `rewards.weights` (`image_vlm.rewards.weighted_reward`, the functions GRPO and evaluation
use), and writes the best against the worst to `<run>/pairs.jsonl` (see core/preference.py). `--from RUN`
samples with a finished run's weights instead of the base model. A DPO run (`method: dpo`) runs this as its
`pairs` stage, or trains on `pairs.file`, a pairs file of your own: one JSON object a line with `image_path`
(absolute, or relative to `data.root`), `chosen` and `rejected`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.control import RunControl
from core.media.paths import dataset_relative, in_dataset
from core.preference import PairsSummary, checked_training_pairs, sample_pairs
from core.runs import RunDir
from core.stages import pairs_main
from image_vlm.config import ImageConfig
from image_vlm.rewards import weighted_reward

DEFAULT_CONFIG = "image_vlm/configs/tiny_dpo.yaml"


def pair_prompts(rows: list[dict[str, Any]], root: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """One prompt per training image, named by its path relative to the dataset root (what a pairs line refers to,
    as `metadata.jsonl` does: `in_dataset` reads it back from any working folder)."""
    rows = rows[:limit] if limit else rows
    prompts = []
    for row in rows:
        path = dataset_relative(root, row["image_path"])
        prompts.append({"prompt_id": path, "image_path": path, "answer": row["answer"]})
    return prompts


def answer_scores(cfg: ImageConfig, prompt: dict[str, Any], answers: list[str]) -> list[float]:
    """Each answer's total reward for this image: the number GRPO would have trained on."""
    n = len(answers)
    return weighted_reward(cfg.rewards.weights, answers, answer=[prompt["answer"]] * n, reasoning=[cfg.data.reasoning] * n)


def answer_sampler(cfg: ImageConfig, model, processor):
    """A batch of prompts -> `pairs.samples_per_prompt` sampled answers each, with the prompt training uses."""
    from core.generation import generate
    from core.media.image import open_image
    from image_vlm.task import prompt_messages

    k = cfg.pairs.samples_per_prompt

    def sample(batch: list[dict[str, Any]]) -> list[list[str]]:
        images = [open_image(in_dataset(cfg.data.root, p["image_path"])) for p in batch]
        conversations = [prompt_messages(cfg.data, image) for image in images for _ in range(k)]
        texts = generate(
            model, processor, conversations, max_new_tokens=cfg.pairs.max_new_tokens, temperature=cfg.pairs.temperature,
            batch_size=len(conversations),
        )
        return [texts[i * k : (i + 1) * k] for i in range(len(batch))]

    return sample


def run_pairs_stage(cfg: ImageConfig, run: RunDir, control: RunControl, processor, model, rows: list[dict],
                    stages: list[str] | None = None) -> PairsSummary | None:
    """Sample, score and pair the training images with `model` (put in eval mode); None when stopped."""
    model.eval()
    return sample_pairs(
        run, control, pair_prompts(rows, cfg.data.root, cfg.pairs.max_prompts), answer_sampler(cfg, model, processor),
        lambda prompt, answers: answer_scores(cfg, prompt, answers),
        batch_size=cfg.pairs.batch_size, samples_per_prompt=cfg.pairs.samples_per_prompt,
        temperature=cfg.pairs.temperature, model=cfg.model.name, stages=stages,
    )


def image_of(cfg: ImageConfig, line: dict[str, Any]) -> Path | None:
    path = line.get("image_path") or line.get("image")
    if not isinstance(path, str) or not path:
        return None
    return in_dataset(cfg.data.root, path)


def training_pairs(cfg: ImageConfig, run: RunDir) -> list[dict[str, Any]]:
    """The pairs DPO trains on: `pairs.file`, else the run's own `pairs.jsonl`; bad lines reported and left out."""
    from core.media.errors import MediaError
    from core.media.image import open_image

    def check(line: dict[str, Any]) -> str | None:
        path = image_of(cfg, line)
        if path is None:
            return "no image_path (the image the pair answers, absolute or relative to data.root)"
        try:
            open_image(path)
        except (MediaError, OSError) as err:
            return f"image {path} cannot be read ({err})"
        line["image_path"] = line.get("image_path") or line.pop("image")  # as written: `in_dataset` reads it back
        return None

    return checked_training_pairs(cfg.pairs, run, check, cfg.model.name)


def pairs_dataset(cfg: ImageConfig, pairs: list[dict[str, Any]], processor):
    """TRL's vision preference format, already rendered: the generation prompt the pairs were sampled from (the one
    GRPO and evaluation use), the image, and chosen and rejected replies between the template's answer affixes.

    Rendered here rather than left to TRL: TRL cuts the prompt where the template's past-answer form departs from its
    generation prompt, which for a thinking model with thinking off (Gemma 4's empty thought channel) is before the
    end of the prompt the answers were sampled after.
    """
    from datasets import Dataset, Image

    from core.generation import answer_affixes, strip_media
    from image_vlm.task import prompt_messages

    prompt = processor.apply_chat_template(strip_media(prompt_messages(cfg.data, image=True)), tokenize=False,
                                           add_generation_prompt=True)
    prefix, suffix = answer_affixes(processor, trailing_whitespace=True)  # as TRL's own rendering ends an answer
    rows = [
        {"prompt": prompt, "image": str(in_dataset(cfg.data.root, pair["image_path"])),
         "chosen": prefix + pair["chosen"] + suffix, "rejected": prefix + pair["rejected"] + suffix}
        for pair in pairs
    ]
    return Dataset.from_list(rows).cast_column("image", Image())


def pairs_sampler(cfg: ImageConfig, run: RunDir, control: RunControl):
    """For the pairs CLI: the training images checked and the processor loaded before any weights, then
    model -> the pairs stage with it."""
    from core.models import load_processor
    from image_vlm.task import dataset_rows, image_size_arguments, training_dataset

    rows = dataset_rows(training_dataset(cfg.data, cfg.data.train_split, cfg.data.max_train_samples, record=run.append_metric))
    processor = load_processor(cfg.model, **image_size_arguments(cfg.model, cfg.data.max_pixels))
    return lambda model: run_pairs_stage(cfg, run, control, processor, model, rows)


def main(argv=None) -> int:
    return pairs_main(argv, ImageConfig, "image", DEFAULT_CONFIG, __doc__, pairs_sampler)


if __name__ == "__main__":
    sys.exit(main())
