"""The video recipe's config: every default is written here once; YAML files and `key=value` override it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator

from core.config import (
    SFT_KNOBS,
    DataLoadingSection,
    DPOSection,
    FinetuneSection,
    LoggingSection,
    ModelSection,
    OptimizerSection,
    PairsSection,
    Section,
    describe_error,
)

SYSTEM_PROMPT = "You are a driving-safety analyst. You watch dashcam clips and report what happened as JSON."


class VideoDataSection(DataLoadingSection):
    root: str = Field("data/dashcam", description="Folder with videos/ and metadata.jsonl (see python -m video_vlm.data verify)")
    synthetic: bool = Field(False, description="Generate synthetic moving-square clips into root if it is missing (tiny runs)")
    schema_file: str | None = Field(None, description="YAML schema defining another task; empty uses the dashcam schema")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of clips held out for evaluation (deterministic by path)")
    num_frames: int = Field(12, ge=1, le=64, description="Frames sampled uniformly from each clip window (same in training and inference)")
    frame_max_side: int = Field(448, ge=28, le=1792, description="Per-frame resolution: longest side in pixels before the processor")
    max_train_samples: int | None = Field(None, ge=1, description="Use at most this many training clips")
    system_prompt: str = Field(SYSTEM_PROMPT, description="System message; the schema adds the field list and allowed values")
    seed: int = Field(0, description="Seed for sampling")
    frame_cache: bool = Field(
        True, description="Keep each clip window's sampled, resized frames on disk: later epochs, evaluation and the compare gallery read them"
    )
    frame_cache_dir: str | None = Field(None, description="Frame cache folder; empty means <root>/.frame_cache")
    frame_cache_gb: float = Field(20.0, gt=0, description="Largest size of the frame cache; the least recently used windows go first")
    max_skipped_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Fail the run when more than this share of the training clips cannot be used (each is skipped and counted)"
    )


class SFTSection(OptimizerSection):
    knobs: ClassVar[tuple[str, ...]] = SFT_KNOBS

    max_steps: int = Field(-1, ge=-1, description="Optimizer steps; -1 trains for num_train_epochs instead")
    num_train_epochs: float = Field(3.0, gt=0, description="Epochs, used when max_steps is -1")
    per_device_train_batch_size: int = Field(1, ge=1, description="Clips per device per step")
    gradient_accumulation_steps: int = Field(8, ge=1, description="Steps accumulated before each optimizer update")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Peak learning rate")
    warmup_steps: int = Field(10, ge=0, description="Warm-up steps")
    max_length: int = Field(8192, ge=64, description="Longest sample in tokens; a longer one is refused, never truncated")
    trainer: dict[str, Any] = Field(
        default_factory=dict,
        description="Other SFTConfig arguments: optimizer, schedule and speed knobs "
        "(not where or how the run saves, logs or publishes), validated by TRL",
    )


class StageSection(Section):
    # A folder name inside the run (checkpoints/<name>, stages/<name>): a path here would save, and rotate
    # checkpoints, outside the run folder.
    name: str = Field(
        ..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Stage name, used for its checkpoint folder (letters, digits, _ . -)",
    )
    data: dict[str, Any] = Field(default_factory=dict, description="Overrides of the data section for this stage")
    train: dict[str, Any] = Field(default_factory=dict, description="Overrides of the train section for this stage")


class VideoEvalSection(Section):
    batch_size: int = Field(2, ge=1, description="Clips per generation batch")
    max_new_tokens: int = Field(384, ge=8, description="Longest answer in tokens")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many clips")


class VideoConfig(Section):
    method: Literal["sft", "dpo"] = Field(
        "sft", description="sft: train on the labels; dpo: the SFT stages (if any), then pairs of the model's own answers ranked by the schema's scores, then DPO on them"
    )
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="OpenGVLab/InternVL3-8B-hf"))
    # r=128/alpha=256 follows InternVL's own LoRA recipe and the reference notebook.
    finetune: FinetuneSection = Field(default_factory=lambda: FinetuneSection(r=128, alpha=256))
    data: VideoDataSection = Field(default_factory=VideoDataSection)
    train: SFTSection = Field(default_factory=SFTSection)
    stages: list[StageSection] = Field(
        default_factory=list, description="Curriculum: stages run in order, each starting from the previous stage's adapter"
    )
    pairs: PairsSection = Field(default_factory=PairsSection)
    dpo: DPOSection = Field(default_factory=DPOSection)
    eval: VideoEvalSection = Field(default_factory=VideoEvalSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @model_validator(mode="after")
    def stages_are_valid(self) -> VideoConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        reserved = sorted({"pairs", "dpo"} & set(names)) if self.method == "dpo" else []
        if reserved:
            raise ValueError(f"stage name {reserved[0]!r} is taken by method dpo's own stage; rename that SFT stage")
        for stage in self.stages:
            self.stage_sections(stage)  # raises naming the stage and the field
        return self

    @property
    def final_data(self) -> VideoDataSection:
        """The data settings the final weights were trained with (frames, size): the last curriculum stage's, else
        the run's. Evaluation, inference and compare sample with them."""
        return self.stage_sections(self.stages[-1])[0] if self.stages else self.data

    def stage_sections(self, stage: StageSection | None) -> tuple[VideoDataSection, SFTSection]:
        """The data and train sections a stage runs with: the base sections plus the stage's overrides."""
        if stage is None:
            return self.data, self.train
        try:
            data = VideoDataSection.model_validate({**self.data.model_dump(), **stage.data})
            train = SFTSection.model_validate({**self.train.model_dump(), **stage.train})
        except ValidationError as err:
            # One line per field, as the run-wide sections get; pydantic's own text would quote every input,
            # a stage's `trainer:` mapping (and whatever secret someone put there) included.
            section = VideoDataSection if err.title == VideoDataSection.__name__ else SFTSection
            prefix = "data" if section is VideoDataSection else "train"
            problems = "; ".join(describe_error(section, error) for error in err.errors())
            raise ValueError(f"stage '{stage.name}' ({prefix} overrides): {problems}") from None
        return data, train
