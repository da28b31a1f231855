"""The wildfire task as the trainer and the evaluator both see it: the prompt and the dataset rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.architectures import model_family
from core.config import ModelSection
from core.files import generate_synthetic_once
from image_vlm.config import ImageDataSection


def prompt_messages(data: ImageDataSection, image: Any = None) -> list[dict[str, Any]]:
    """System + user turn. Without `image`, plain strings: TRL inserts the dataset's image into the user's text and
    makes every turn a list of typed parts. With `image`, those lists here: some templates (SmolVLM2's) drop a
    plain-string turn."""
    if image is None:
        return [{"role": "system", "content": data.system_prompt}, {"role": "user", "content": data.question}]
    user = [{"type": "image", "image": image}, {"type": "text", "text": data.question}]
    return [{"role": "system", "content": [{"type": "text", "text": data.system_prompt}]}, {"role": "user", "content": user}]


def image_size_arguments(model: ModelSection, max_pixels: int) -> dict[str, Any]:
    """Processor kwargs that cap each image at `max_pixels`, in the model family's own terms; none for a model
    outside the family table, whose processor then keeps its own settings.

    >>> image_size_arguments(ModelSection(name="Qwen/Qwen2.5-VL-7B-Instruct"), 350 * 350)
    {'size': {'shortest_edge': 3136, 'longest_edge': 122500}}
    """
    family = model_family(model)
    return family.image_kwargs(max_pixels) if family else {}


def ensure_dataset(data: ImageDataSection) -> Path:
    """The dataset root, generating the synthetic stand-in first when the config asks for it and it is missing.

    Generated only into a missing or empty folder: a folder that holds anything else without its train split
    (a real dataset missing one) is refused with a ConfigError naming the folder and what it holds.
    """
    root = Path(data.root)
    split = root / data.train_split
    if not data.synthetic or split.is_dir():
        return root
    from image_vlm.synthetic import make_synthetic_dataset

    generate_synthetic_once(root, split, "red-blob images", lambda: make_synthetic_dataset(root, seed=data.seed))
    return root


def task_rows(data: ImageDataSection, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Class-balanced rows of one split: image path, class label and the expected answer."""
    from image_vlm.data import balanced_sample, label_to_answer, load_manifest

    root = ensure_dataset(data)
    manifest = load_manifest(root)
    items = manifest.split(split)
    if not items:
        raise ValueError(f"{root}: split '{split}' has no usable images (run python -m image_vlm.data verify --root {root})")
    rows = []
    for path, label in balanced_sample(items, limit, data.seed):
        # The manifest's split() already joins paths onto the dataset root.
        rows.append({"image_path": str(path), "label": label, "answer": label_to_answer(label, data.labels)})
    return rows


def training_dataset(data: ImageDataSection, split: str, limit: int | None = None, record=None):
    """A `datasets.Dataset` in TRL's VLM format: `prompt` messages, an `image` column, reward columns
    (`answer`, and `reasoning`, which tells the format reward which format was asked for).

    Every image is decoded once more here: one that broke since `verify` is skipped and counted (in the log,
    and through `record`, e.g. `RunDir.append_metric`, in metrics.jsonl) rather than crashing the trainer.
    """
    from datasets import Dataset, Image

    from core.processes import is_main_process
    from image_vlm.data import drop_unreadable

    readable, skipped = drop_unreadable(task_rows(data, split, limit), Path(data.root), log=lambda line: print(line, flush=True))
    if skipped and record is not None and is_main_process():  # one line, from rank 0
        record({"step": 0, "split": split, "unreadable_images_skipped": skipped})
    rows = [{"prompt": prompt_messages(data), "image": row["image_path"], "reasoning": data.reasoning, **row} for row in readable]
    return Dataset.from_list(rows).cast_column("image", Image())


def dataset_rows(dataset) -> list[dict[str, Any]]:
    """The task rows (`image_path`, `label`, `answer`) behind a training dataset: what it kept, so a stage built
    from them (the warm start) skips the images the dataset skipped as unreadable."""
    return dataset.select_columns(["image_path", "label", "answer"]).to_list()
