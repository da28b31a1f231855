"""Typed configs: YAML plus `a.b=c` overrides, validated once, with every default written in one place.

Each recipe composes its config from the shared sections below (model, fine-tuning method, logging) and
its own. Every field carries a one-line description; the UI form and the YAML comments are generated
from it, so the description is the documentation.
"""

from __future__ import annotations

import fnmatch
import os
import re
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.processes import usable_cpus


class ConfigError(ValueError):
    """A config that cannot be used. The message names the field and what is allowed."""


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def default_num_workers() -> int:
    """Data-loading processes: one per CPU this process may use, less one for the training loop, 1 to 8.

    Decoding and the processor then run while the GPU computes the step; past 8 the loader outpaces any
    single GPU this product targets, and each worker holds its own copy of the processor.
    """
    return max(1, min(8, usable_cpus() - 1))


class DataLoadingSection(Section):
    """What both recipes' data sections share: the worker processes that prepare batches ahead of the step."""

    num_workers: int = Field(
        default_factory=default_num_workers, ge=0, le=64,
        description="Processes preparing batches ahead of the training step; 0 prepares them in the training process (default: CPUs - 1, at most 8)",
    )
    prefetch_factor: int = Field(2, ge=1, le=16, description="Batches each worker prepares ahead")

    def loader_arguments(self) -> dict[str, Any]:
        """The Trainer's dataloader arguments: persistent workers keep the processor loaded across epochs."""
        if self.num_workers == 0:
            return {"dataloader_num_workers": 0}
        return {
            "dataloader_num_workers": self.num_workers,
            "dataloader_prefetch_factor": self.prefetch_factor,
            "dataloader_persistent_workers": True,
        }


class ModelSection(Section):
    name: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="Hub id, local folder, or tiny:<kind> for a locally built test model")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin the weights")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight dtype; auto means bfloat16 on GPU and float32 on CPU"
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="Attention kernel; auto lets transformers pick (sdpa when available)"
    )
    max_memory_gb: float | None = Field(
        None, gt=0, description="Cap on GPU memory this process may use, leaving headroom on unified-memory machines (DGX Spark)"
    )


class FinetuneSection(Section):
    method: Literal["lora", "qlora", "full"] = Field("lora", description="LoRA adapters, 4-bit QLoRA adapters, or full fine-tuning")
    r: int = Field(32, ge=1, le=1024, description="LoRA rank")
    alpha: int = Field(64, ge=1, le=4096, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout")
    vision_attention: bool = Field(False, description="Adapt the vision tower's attention layers")
    vision_mlp: bool = Field(False, description="Adapt the vision tower's MLP layers")
    language_attention: bool = Field(True, description="Adapt the language model's attention layers")
    language_mlp: bool = Field(True, description="Adapt the language model's MLP layers")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward to save memory")
    full_precision: Literal["bf16_stochastic_rounding", "fp32_master_weights"] = Field(
        "bf16_stochastic_rounding",
        description="Full fine-tuning in bf16: bf16 weights + 8-bit AdamW with stochastic rounding (~6 bytes a weight), "
        "or fp32 master weights under bf16 autocast (~16 bytes a weight; 8B does not fit 128 GB)",
    )


# The default for `logging.heartbeat_timeout_s`; the trainer records its own value in status.json, so a
# reader in any container judges a run by the threshold that run was started with.
HEARTBEAT_TIMEOUT_S = 60.0


class LoggingSection(Section):
    report_to: Literal["auto", "wandb", "none"] = Field(
        "auto", description="auto: W&B online with WANDB_API_KEY, offline without; none turns W&B off"
    )
    wandb_project: str = Field("vlm-playbook", description="W&B project name")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps")
    save_steps: int = Field(25, ge=1, description="Save a checkpoint every N optimizer steps")
    save_total_limit: int = Field(2, ge=1, description="Keep at most this many checkpoints")
    heartbeat_timeout_s: float = Field(
        HEARTBEAT_TIMEOUT_S,
        ge=3,
        description="A live run beats every few seconds; one silent this long reads as crashed, from either container",
    )


class PairsSection(Section):
    samples_per_prompt: int = Field(4, ge=2, le=64, description="Answers sampled per training prompt; the best-scored and the worst-scored make its pair")
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature of those answers: higher gives more contrast, and more nonsense")
    max_new_tokens: int = Field(256, ge=8, description="Longest sampled answer in tokens")
    batch_size: int = Field(8, ge=1, description="Prompts per generation batch")
    max_prompts: int | None = Field(None, ge=1, description="Sample answers for at most this many training prompts; empty uses them all")
    file: str | None = Field(
        None, description="Your own pairs JSONL (chosen, rejected and the media fields, one pair a line) instead of sampling"
    )
    source_run: str | None = Field(
        None, description="A finished run whose weights sample the answers and start DPO; empty: the run's own start"
    )


# ------------------------------------------------------------------------------------------ trainer pass-through
# A section's `trainer:` mapping goes to TRL verbatim, so it could override what the product owns: where a run
# saves (an output_dir aimed at another run's checkpoints deletes them), what it keeps, logs and reports, its name,
# the hub (push_to_hub, hub_token) and the distributed launch. So it is an allowlist: the knobs a user may tune,
# written once here per trainer; TRL still validates their values. A pattern ending in `*` covers a family of
# knobs. Arguments that a typed field sets (seed, learning_rate, ...) are set there.
TRAINER_KNOBS = (
    # the optimizer and the schedule
    "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "optim_args", "optim_target_modules",
    "lr_scheduler_kwargs",
    # determinism and data order
    "data_seed", "full_determinism", "dataloader_drop_last", "dataloader_pin_memory",
    # speed and memory
    "torch_compile", "torch_compile_backend", "torch_compile_mode", "tf32", "use_liger_kernel", "liger_kernel_config",
    "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs", "torch_empty_cache_steps",
    "auto_find_batch_size", "average_tokens_across_devices",
    # regularisation
    "label_smoothing_factor", "neftune_noise_alpha",
)
GRPO_KNOBS = TRAINER_KNOBS + (
    "steps_per_generation", "generation_batch_size", "num_iterations", "epsilon", "epsilon_high", "delta",
    "scale_rewards", "importance_sampling_level", "mask_truncated_completions", "top_entropy_quantile",
    "top_p", "top_k", "min_p", "repetition_penalty", "generation_kwargs", "cache_implementation",
    "chat_template_kwargs", "disable_dropout", "shuffle_dataset", "cast_lm_head_to_fp32", "use_transformers_paged",
    "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps",
    "vllm_*",  # the switches among them are train.use_vllm's and train.vllm_server_url's (image_vlm.config)
)
SFT_KNOBS = TRAINER_KNOBS + ("activation_offloading", "shuffle_dataset", "loss_type")
DPO_KNOBS = TRAINER_KNOBS + (
    "label_smoothing", "use_weighting", "f_divergence_type", "f_alpha_divergence_coef", "discopop_tau", "ld_alpha",
    "disable_dropout", "precompute_ref_log_probs", "precompute_ref_batch_size", "activation_offloading",
    "dataset_num_proc", "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps",
)
# Trainer arguments the product derives from another section's field: the refusal says which.
TRAINER_ARGUMENT_FIELDS = {
    "logging_steps": "logging.logging_steps",
    "save_steps": "logging.save_steps",
    "save_total_limit": "logging.save_total_limit",
    "report_to": "logging.report_to",
    "gradient_checkpointing": "finetune.gradient_checkpointing",
    "dataloader_num_workers": "data.num_workers",
    "dataloader_prefetch_factor": "data.prefetch_factor",
    "dataloader_persistent_workers": "data.num_workers",
}


def passthrough_knobs(trainer: dict[str, Any], knobs: tuple[str, ...], section: type[BaseModel]) -> dict[str, Any]:
    """`trainer` when every key is one of `knobs`, else ValueError naming each other key, in one line.

    >>> passthrough_knobs({"weight_decay": 0.1}, TRAINER_KNOBS, DPOSection)
    {'weight_decay': 0.1}
    >>> trainer = {"output_dir": "/x", "hub_token": "hf_x", "seed": 1, "save_steps": 5}
    >>> try:
    ...     passthrough_knobs(trainer, TRAINER_KNOBS, DPOSection)
    ... except ValueError as err:
    ...     print(*str(err).split("; "), sep="\\n")  # doctest: +NORMALIZE_WHITESPACE
    output_dir, hub_token: the product's own settings (where a run saves, logs, reports and publishes)
        are not passed through
    seed: a field of this section, set it there
    save_steps: set logging.save_steps instead
    """
    owned, typed, elsewhere, unknown = [], [], [], []
    for key in trainer:
        if any(fnmatch.fnmatchcase(key, knob) for knob in knobs):
            continue
        if key in section.model_fields:
            typed.append(key)
        elif key in TRAINER_ARGUMENT_FIELDS:
            elsewhere.append(f"{key}: set {TRAINER_ARGUMENT_FIELDS[key]} instead")
        elif looks_secret(key) or any(fnmatch.fnmatchcase(key, pattern) for pattern in PRODUCT_ARGUMENTS):
            owned.append(key)
        else:
            unknown.append(key)
    problems = []
    if owned:
        problems.append(f"{', '.join(owned)}: the product's own settings (where a run saves, logs, reports and "
                        "publishes) are not passed through")
    if typed:
        problems.append(f"{', '.join(typed)}: a field of this section, set it there")
    problems += elsewhere
    if unknown:
        problems.append(f"{', '.join(unknown)}: not a knob this trainer passes through; allowed: {', '.join(knobs)}")
    if problems:
        raise ValueError("; ".join(problems))
    return trainer


# The arguments a run's own folder, logs and launch decide, and credentials (`looks_secret`): named so in the
# refusal (every unlisted key is refused; these are also never allowed).
PRODUCT_ARGUMENTS = (
    "output_dir", "overwrite_output_dir", "logging_*", "log_*", "save_*", "push_to_hub", "hub_*", "report_to",
    "run_name", "project", "trackio_*", "deepspeed", "fsdp*", "ddp_*", "local_rank", "resume_from_checkpoint",
    "use_cpu", "bf16*", "fp16*", "model_init_kwargs", "trust_remote_code", "chat_template_path",
)


# The optimizers and learning-rate schedules a stage may pick, named once: every stage's section (and the memory
# estimate's optimizer state, core/estimate.py) reads them from here.
Optimizer = Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "sgd"]
Schedule = Literal["constant", "constant_with_warmup", "linear", "cosine"]
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)


class OptimizerSection(Section):
    """What every training stage's section holds (GRPO, SFT, DPO, the warm start): its length, batch, optimizer,
    schedule and seed, under the trainer's own argument names. A stage's section overrides a field only where its
    default or its meaning differs; its YAML keys stay flat (`train.learning_rate`, `dpo.learning_rate`)."""

    # The `trainer:` pass-through's allowlist for this stage's TRL config.
    knobs: ClassVar[tuple[str, ...]] = TRAINER_KNOBS

    max_steps: int = Field(100, ge=-1, description="Optimizer steps; -1 trains for num_train_epochs instead")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs, used when max_steps is -1")
    per_device_train_batch_size: int = Field(4, ge=1, description="Examples per device per step")
    gradient_accumulation_steps: int = Field(2, ge=1, description="Steps accumulated before each optimizer update")
    learning_rate: float = Field(1e-5, gt=0, lt=1, description="Peak learning rate")
    lr_scheduler_type: Schedule = Field("cosine", description="Learning-rate schedule (fresh at every stage)")
    warmup_steps: int = Field(5, ge=0, description="Warm-up steps")
    optim: Optimizer = Field("adamw_torch", description="Optimizer")
    seed: int = Field(42, description="Training seed")
    trainer: dict[str, Any] = Field(
        default_factory=dict,
        description="Other trainer arguments: optimizer, schedule and speed knobs "
        "(not where or how the run saves, logs or publishes), validated by TRL",
    )

    @field_validator("trainer")
    @classmethod
    def trainer_knobs_only(cls, trainer: dict[str, Any]) -> dict[str, Any]:
        return passthrough_knobs(trainer, cls.knobs, cls)

    def trainer_arguments(self) -> dict[str, Any]:
        """The trainer arguments this section's shared fields set (each field is named as TRL's argument is).

        >>> DPOSection(learning_rate=1e-4).trainer_arguments()  # doctest: +NORMALIZE_WHITESPACE
        {'max_steps': 100, 'num_train_epochs': 1.0, 'per_device_train_batch_size': 4, 'gradient_accumulation_steps': 2,
         'learning_rate': 0.0001, 'lr_scheduler_type': 'cosine', 'warmup_steps': 5, 'optim': 'adamw_torch', 'seed': 42}
        """
        return {name: getattr(self, name) for name in OptimizerSection.model_fields
                if name != "trainer" and name in type(self).model_fields}


class DPOSection(OptimizerSection):
    knobs: ClassVar[tuple[str, ...]] = DPO_KNOBS

    per_device_train_batch_size: int = Field(4, ge=1, description="Pairs per device per step (each is a chosen and a rejected sequence)")
    beta: float = Field(0.1, gt=0, description="How far from the reference model the policy may move (DPO's beta)")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field("sigmoid", description="DPO loss (sigmoid is the paper's)")
    sft_weight: float = Field(
        0.0, ge=0, description="Weight of a likelihood term on the chosen answers (RPO); keeps a small model's format from drifting"
    )
    trainer: dict[str, Any] = Field(
        default_factory=dict,
        description="Other DPOConfig arguments: optimizer, schedule and speed knobs "
        "(not where or how the run saves, logs or publishes), validated by TRL",
    )


# ---------------------------------------------------------------------------------------------- loading


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """Turn `a.b=c` strings into a nested dict; values are parsed as YAML scalars.

    >>> parse_overrides(["train.learning_rate=1e-5", "finetune.method=qlora", "data.labels.fire=Yes"])
    {'train': {'learning_rate': 1e-05}, 'finetune': {'method': 'qlora'}, 'data': {'labels': {'fire': 'Yes'}}}
    >>> parse_overrides(["oops"])
    Traceback (most recent call last):
    ...
    core.config.ConfigError: override 'oops' is not of the form key=value (for example train.max_steps=10)
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value (for example train.max_steps=10)")
        value = parse_scalar(raw)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets a key below {part!r}, which is not a section")
        node[parts[-1]] = value
    return result


def parse_scalar(raw: str) -> Any:
    """Parse one override value as YAML, minus YAML 1.1's surprises.

    Yes/No/on/off stay strings (pydantic still reads them as booleans where a field is a bool), and
    1e-5 becomes a float rather than a string.

    >>> [parse_scalar(v) for v in ["Yes", "1e-5", "3", "true", "[a, b]", ""]]
    ['Yes', 1e-05, 3, True, ['a', 'b'], '']
    """
    text = raw.strip()
    if not text:
        return ""
    if text.lower() in ("yes", "no", "on", "off", "y", "n"):
        return text
    value = yaml.safe_load(text)
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value):
        return float(value)
    return value


def deep_merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """Merge `updates` into a copy of `base`, recursing into nested dicts.

    >>> deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4})
    {'a': {'b': 1, 'c': 3}, 'd': 4}
    """
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file and the line, never quoting the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text, so not a YAML config") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {yaml_error_text(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    return data


# A quoted part of PyYAML's problem that is YAML's own vocabulary ('<stream end>', ':', '\\t'), not the file's text.
_YAML_TOKEN = re.compile(r"<[\w ]+>|[^\w\s]|\\\w")


def yaml_error_text(err: yaml.YAMLError) -> str:
    """Where a YAML file is broken and what kind of problem it is, without the file's text.

    PyYAML's own message quotes the offending lines (its mark's snippet), and its problem can quote an alias or
    a tag: any of them may be a secret when the file was never a YAML file (a token file, say).

    >>> try:
    ...     yaml.safe_load("name: x\\nkey: hf_secret: 1")
    ... except yaml.YAMLError as err:
    ...     print(yaml_error_text(err))
    not valid YAML at line 2, column 15 (mapping values are not allowed here)
    >>> try:
    ...     yaml.safe_load("a: *hf_secret")
    ... except yaml.YAMLError as err:
    ...     print(yaml_error_text(err))
    not valid YAML at line 1, column 4 (found undefined alias …)
    """
    if isinstance(err, yaml.reader.ReaderError):
        return f"not valid YAML at character {err.position + 1} ({err.reason})"
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or "unreadable"
    problem = re.sub(r"'([^']*)'", lambda m: m.group(0) if _YAML_TOKEN.fullmatch(m.group(1)) else "…", problem)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where} ({problem})"


ConfigT = typing.TypeVar("ConfigT", bound=BaseModel)


def absolute_data_paths(config: dict[str, Any]) -> dict[str, Any]:
    """A config mapping whose data folders (`data.root`, `data.frame_cache_dir`, and a stage's own) are absolute,
    taken against the working folder: what a run folder records, so that evaluation, the pages and compare read
    the data the run trained on from any folder. A preset's relative `data.root` is relative to where it is run.

    >>> import os
    >>> absolute_data_paths({"data": {"root": "data/x"}, "stages": [{"data": {"root": "/d"}}]}) == {
    ...     "data": {"root": os.path.join(os.getcwd(), "data/x")}, "stages": [{"data": {"root": "/d"}}]}
    True
    """
    def absolute(section: Any) -> Any:
        if not isinstance(section, dict):
            return section
        return {key: os.path.abspath(value) if key in ("root", "frame_cache_dir") and isinstance(value, str) and value
                else value for key, value in section.items()}

    resolved = {**config, "data": absolute(config.get("data"))} if "data" in config else dict(config)
    if isinstance(config.get("stages"), list):
        resolved["stages"] = [{**stage, "data": absolute(stage.get("data"))} if isinstance(stage, dict) and "data" in stage
                              else stage for stage in config["stages"]]
    return resolved


def eval_settings(overrides: typing.Iterable[str]) -> dict[str, Any]:
    """`eval.KEY=VALUE` overrides for one evaluation; any other section is refused (the weights are the run's).

    >>> eval_settings(["eval.max_new_tokens=512"])
    {'eval': {'max_new_tokens': 512}}
    """
    given = parse_overrides(overrides)
    others = sorted(set(given) - {"eval"})
    if others:
        raise ConfigError(
            f"only eval.* settings can change at evaluation (the model and data are the run's), not {', '.join(others)}"
        )
    return given


def load_config(cls: type[ConfigT], path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> ConfigT:
    """Build a validated config from an optional YAML file plus `key=value` overrides."""
    data = read_yaml(path) if path else {}
    source = str(path) if path else "config"
    given = parse_overrides(overrides)
    if not given:
        return validate_config(cls, data, source=source)
    try:
        return validate_config(cls, deep_merge(data, given), source="command line")
    except ConfigError:
        # Name the file when the file alone is wrong; otherwise the mistake is in the key=value overrides.
        validate_config(cls, data, source=source)
        raise


def validate_config(cls: type[ConfigT], data: dict[str, Any], source: str = "config") -> ConfigT:
    """Validate a dict, turning pydantic's errors into one message per field with the allowed values."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(describe_error(cls, e) for e in err.errors())) from None


def describe_error(cls: type[BaseModel], error: dict[str, Any]) -> str:
    """One readable line for a pydantic error: the dotted field, what went wrong and what is allowed."""
    loc = [str(p) for p in error["loc"]]
    dotted = ".".join(loc)
    if not loc:  # a check across fields: its message already names them
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        parent = lookup_model(cls, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"unknown key '{dotted}' (allowed here: {allowed})"
    field = lookup_field(cls, loc)
    allowed = allowed_values(field) if field else None
    got = error.get("input")
    message = f"'{dotted}' {error['msg'].lower()}"
    if got is not None and not isinstance(got, dict):
        message += f" (got {got!r})"
    if allowed:
        message += f"; allowed: {allowed}"
    return message


def lookup_model(cls: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The nested section model at `path`, or None when the path leaves the typed tree."""
    model: Any = cls
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = model.model_fields[part].annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def lookup_field(cls: type[BaseModel], path: list[str]):
    parent = lookup_model(cls, path[:-1])
    return parent.model_fields.get(path[-1]) if parent and path else None


def allowed_values(field) -> str | None:
    """Human text for a field's constraint: the choices of a Literal or the numeric bounds."""
    choices = literal_choices(field.annotation)
    if choices:
        return " | ".join(str(c) for c in choices)
    bounds = []
    for meta in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, name, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    return " and ".join(bounds) or None


def literal_choices(annotation) -> tuple | None:
    """The choices of `Literal[...]` (also inside `Optional`), else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


# ---------------------------------------------------------------------------------------------- output


def to_yaml(cfg: BaseModel) -> str:
    """Dump a config as YAML with each field's description as a comment above it, secrets left out
    (`redact_secrets`): this is what a run's `config.yaml` and `launch.yaml` hold."""
    lines: list[str] = []
    write_section(type(cfg), redact_secrets(cfg.model_dump(mode="json")), lines, indent=0)
    return "\n".join(lines) + "\n"


# Words that make a key's value a credential. Whole words (split at `_`, `-`, `.` and case changes), so
# max_new_tokens or a class folder called "monkey" are not secrets; "hftoken"-like run-together names end in one.
SECRET_WORDS = ("token", "key", "apikey", "password", "passwd", "secret", "credential", "credentials")
SECRET_SUFFIXES = ("token", "apikey", "password", "passwd", "secret")
REDACTED = "<redacted>"


def looks_secret(key: str) -> bool:
    """Whether a config key names a credential, whose value must never be written to disk.

    >>> [looks_secret(k) for k in ("hub_token", "wandb_api_key", "HF_TOKEN", "apiKey", "db-password", "hftoken")]
    [True, True, True, True, True, True]
    >>> [looks_secret(k) for k in ("max_new_tokens", "monkey", "keyframes", "tokenizer", "weight_decay")]
    [False, False, False, False, False]
    """
    words = re.split(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])", key)
    return any(word.lower() in SECRET_WORDS or word.lower().endswith(SECRET_SUFFIXES) for word in words if word)


def redact_secrets(values: Any) -> Any:
    """A copy of a config mapping (nested mappings and lists too) with the value of each secret-looking key
    replaced by `REDACTED`: credentials come from the environment (HF_TOKEN, WANDB_API_KEY), never from a file
    that other users of the box, the run's copies or its export may read.

    >>> redact_secrets({"train": {"trainer": {"wandb_api_key": "abc", "weight_decay": 0.1}}, "stages": [{"token": 1}]})
    {'train': {'trainer': {'wandb_api_key': '<redacted>', 'weight_decay': 0.1}}, 'stages': [{'token': '<redacted>'}]}
    """
    if isinstance(values, dict):
        return {key: REDACTED if isinstance(key, str) and looks_secret(key) and value not in (None, "")
                else redact_secrets(value) for key, value in values.items()}
    if isinstance(values, list):
        return [redact_secrets(value) for value in values]
    return values


def write_section(cls: type[BaseModel], values: dict[str, Any], lines: list[str], indent: int) -> None:
    pad = " " * indent
    for name, field in cls.model_fields.items():
        if field.description:
            lines.append(f"{pad}# {field.description}")
        sub = lookup_model(cls, [name])
        value = values.get(name)
        if sub is not None and isinstance(value, dict):
            lines.append(f"{pad}{name}:")
            write_section(sub, value, lines, indent + 2)
        else:
            dumped = yaml.safe_dump({name: value}, default_flow_style=False, sort_keys=False, width=1000).rstrip("\n")
            lines.extend(pad + line for line in dumped.splitlines())


def field_specs(cls: type[BaseModel], prefix: str = "") -> list[dict[str, Any]]:
    """Flatten a config class into form rows: dotted key, type, default, description, choices and bounds.

    The UI builds its training form from these rows, so help texts and ranges are never re-stated.
    """
    rows = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        sub = lookup_model(cls, [name])
        if sub is not None:
            rows.extend(field_specs(sub, key + "."))
            continue
        bounds = {}
        for meta in field.metadata:
            for bound in ("ge", "gt", "le", "lt"):
                if getattr(meta, bound, None) is not None:
                    bounds[bound] = getattr(meta, bound)
        rows.append(
            {
                "key": key,
                "annotation": field.annotation,
                "default": field.get_default(call_default_factory=True),
                "description": field.description or "",
                "choices": literal_choices(field.annotation),
                "bounds": bounds,
            }
        )
    return rows

