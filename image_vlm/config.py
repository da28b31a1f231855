"""The image recipe's config: every default is written here once; YAML files and `key=value` override it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from core.config import (
    GRPO_KNOBS,
    SFT_KNOBS,
    DataLoadingSection,
    DPOSection,
    FinetuneSection,
    LoggingSection,
    ModelSection,
    OptimizerSection,
    PairsSection,
    Schedule,
    Section,
    passthrough_knobs,
)

SYSTEM_PROMPT = (
    "You are an expert in satellite imagery. Think about the image step by step inside "
    "<REASONING></REASONING>, then answer Yes or No inside <SOLUTION></SOLUTION>."
)
# The system message when `data.reasoning` is false and no system_prompt is given.
ANSWER_ONLY_PROMPT = "You are an expert in satellite imagery. Answer Yes or No inside <SOLUTION></SOLUTION>, nothing else."
QUESTION = "Identify if this region has been affected by a wildfire."


class ImageDataSection(DataLoadingSection):
    root: str = Field("data/wildfire", description="Image folder with {train,valid,test}/<class>/ sub-folders")
    synthetic: bool = Field(False, description="Generate the synthetic red-blob dataset into root if it is missing (tiny runs)")
    train_split: str = Field("train", description="Split used for training")
    eval_split: str = Field("test", description="Held-out split used by evaluation unless --split says otherwise")
    labels: dict[str, str] = Field(
        default_factory=lambda: {"wildfire": "Yes", "nowildfire": "No"},
        description="Class folder name -> expected answer inside <SOLUTION>",
    )
    max_train_samples: int | None = Field(None, ge=2, description="Use at most this many training images, balanced across classes")
    reasoning: bool = Field(True, description="Ask for <REASONING> before the <SOLUTION>; false asks for the tagged answer alone")
    system_prompt: str = Field(
        SYSTEM_PROMPT, description="System message: asks for reasoning then a tagged answer (the answer alone when reasoning is false)"
    )
    question: str = Field(QUESTION, description="User question shown with each image")
    max_pixels: int = Field(350 * 350, ge=28 * 28, description="Image budget in pixels; larger images are downscaled by the processor")
    seed: int = Field(0, description="Seed for class-balanced sampling")

    @model_validator(mode="after")
    def prompt_follows_reasoning(self) -> ImageDataSection:
        # The default prompt asks for reasoning; answer-only runs get the matching default unless one was given.
        if not self.reasoning and "system_prompt" not in self.model_fields_set:
            object.__setattr__(self, "system_prompt", ANSWER_ONLY_PROMPT)
        return self


class RewardSection(Section):
    weights: dict[str, float] = Field(
        default_factory=lambda: {"format": 1.0, "correctness": 2.0},
        description="Reward name -> weight; the trainer's total reward is the weighted sum",
    )

    @field_validator("weights")
    @classmethod
    def known_rewards(cls, weights: dict[str, float]) -> dict[str, float]:
        from image_vlm.rewards import REWARDS

        unknown = sorted(set(weights) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward {', '.join(unknown)}; allowed: {', '.join(REWARDS)}")
        if not weights:
            raise ValueError(f"at least one reward is needed; allowed: {', '.join(REWARDS)}")
        return weights


# GRPOConfig arguments that GRPOSection's vLLM fields decide, so they are not accepted in `train.trainer`.
VLLM_SWITCHES = ("use_vllm", "vllm_mode", "vllm_server_base_url", "vllm_server_host", "vllm_server_port")


class GRPOSection(OptimizerSection):
    knobs: ClassVar[tuple[str, ...]] = GRPO_KNOBS

    max_steps: int = Field(300, ge=-1, description="Optimizer steps; -1 trains for num_train_epochs instead")
    per_device_train_batch_size: int = Field(4, ge=1, description="Completions per device per step (prompts x generations)")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt; GRPO compares them within the group")
    max_completion_length: int = Field(256, ge=8, description="Longest completion in tokens")
    lr_scheduler_type: Schedule = Field("constant_with_warmup", description="Learning-rate schedule (fresh at every stage)")
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature for rollouts")
    beta: float = Field(0.0, ge=0, description="KL penalty against the reference model (0 skips the reference pass)")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("dapo", description="GRPO loss normalisation")
    use_vllm: bool = Field(
        False, description="Generate rollouts with vLLM instead of transformers' generate(); needs the vllm package and a CUDA GPU"
    )
    vllm_server_url: str | None = Field(
        None,
        description="URL of a running `trl vllm-serve` (e.g. http://localhost:8000): vLLM runs there (server mode); "
        "empty runs it inside the training process (colocate mode)",
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, lt=1, description="Colocate mode: share of the GPU's memory vLLM takes for its weights and KV cache"
    )
    trainer: dict[str, Any] = Field(
        default_factory=dict,
        description="Other GRPOConfig arguments: optimizer, schedule and speed knobs "
        "(not where or how the run saves, logs or publishes), validated by TRL",
    )

    @field_validator("vllm_server_url")
    @classmethod
    def server_url_is_http(cls, url: str | None) -> str | None:
        if not url:  # the UI form's empty box
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://localhost:8000)")
        return url.rstrip("/")

    @field_validator("trainer")
    @classmethod
    def trainer_knobs_only(cls, trainer: dict[str, Any]) -> dict[str, Any]:
        # Replaces OptimizerSection's check, to name the vLLM switches first: the launch checks vLLM and CUDA from
        # train.use_vllm, and a switch hidden in the pass-through would skip that check and fail minutes later.
        named = sorted(set(trainer) & set(VLLM_SWITCHES))
        if named:
            raise ValueError(
                f"{', '.join(named)}: use train.use_vllm and train.vllm_server_url instead "
                "(other vllm_* arguments pass through as usual)"
            )
        return passthrough_knobs(trainer, cls.knobs, cls)


class WarmStartSection(OptimizerSection):
    knobs: ClassVar[tuple[str, ...]] = SFT_KNOBS

    enabled: bool = Field(False, description="Run a short SFT stage before GRPO, so the model already writes the answer format")
    answers: Literal["random", "labels"] = Field(
        "random", description="random: coin-flip answers teach the format only (GRPO learns the task); labels: the true answers too"
    )
    reasoning_text: str = Field("I see.", description="Fixed text inside <REASONING> in the template targets")
    jsonl: str | None = Field(
        None, description="JSONL of your own targets, one {\"image\", \"answer\" or \"label\", \"reasoning\"} per line; empty uses the template"
    )
    max_samples: int | None = Field(None, ge=1, description="Warm-start on at most this many examples; empty uses them all")
    # Counted in steps, never epochs (the form adds the warm start's steps to the next stage's): a ClassVar here
    # drops OptimizerSection's num_train_epochs field from this section.
    max_steps: int = Field(50, ge=1, description="Optimizer steps of the warm start")
    num_train_epochs: ClassVar[float]
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated before each optimizer update")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Learning rate")
    lr_scheduler_type: Schedule = Field("constant", description="Learning-rate schedule (fresh at every stage)")
    warmup_steps: int = Field(0, ge=0, description="Warm-up steps")
    freeze_vision: bool = Field(True, description="Keep the vision tower fixed: random answers would teach it to ignore the image")
    seed: int = Field(0, description="Seed for the random answers and the data order")
    trainer: dict[str, Any] = Field(
        default_factory=dict,
        description="Other SFTConfig arguments: optimizer, schedule and speed knobs "
        "(not where or how the run saves, logs or publishes), validated by TRL",
    )


class EvalSection(Section):
    batch_size: int = Field(8, ge=1, description="Images per generation batch")
    max_new_tokens: int = Field(256, ge=8, description="Longest answer in tokens")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many images (class-balanced)")


class ImageConfig(Section):
    method: Literal["grpo", "dpo"] = Field(
        "grpo", description="grpo: rewards on fresh rollouts at every step; dpo: pairs ranked by the same rewards, sampled once"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    data: ImageDataSection = Field(default_factory=ImageDataSection)
    rewards: RewardSection = Field(default_factory=RewardSection)
    warm_start: WarmStartSection = Field(default_factory=WarmStartSection)
    train: GRPOSection = Field(default_factory=GRPOSection)
    pairs: PairsSection = Field(default_factory=PairsSection)
    dpo: DPOSection = Field(default_factory=DPOSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @property
    def final_data(self) -> ImageDataSection:
        """The data settings the final weights were trained with: the run's (the warm start and GRPO share them)."""
        return self.data

    @model_validator(mode="after")
    def batch_fits_generations(self) -> ImageConfig:
        if self.method != "grpo":
            return self
        group = self.train.per_device_train_batch_size * self.train.gradient_accumulation_steps
        if group % self.train.num_generations:
            raise ValueError(
                f"train.per_device_train_batch_size x train.gradient_accumulation_steps ({group}) must be a multiple "
                f"of train.num_generations ({self.train.num_generations})"
            )
        return self

    @model_validator(mode="after")
    def warm_start_fits_the_data(self) -> ImageConfig:
        limit, wanted = self.data.max_train_samples, self.warm_start.max_samples
        if self.warm_start.enabled and not self.warm_start.jsonl and limit and wanted and wanted > limit:
            raise ValueError(
                f"warm_start.max_samples ({wanted}) is larger than the training data (data.max_train_samples is {limit})"
            )
        return self
