"""The training form, generated from the recipe config's fields (`core.config.field_specs`).

Each field's description becomes the widget's help (and, for the less common fields, its label), and its bounds or
choices become the widget's range, so nothing about the config is re-stated here. `form_values` renders the
widgets of the fields that apply to the values chosen so far and returns `{dotted key: value}` for every field;
`build_config` merges those onto the preset and validates them with the config.

There is no `st.form`: every edit reruns the page, so the fields that apply and the memory estimate always follow
what is on screen, and Enter in a field never submits anything (a form's Enter presses its first submit button).
A widget's value lives in `st.session_state` under `<prefix>:<key>`; code that changes fields (a model swap, a
loaded run config) writes those keys, because a browser keeps showing a widget's own value unless the server
sends a new one. Fields that do not apply are not drawn; their last values are kept under `<prefix>:kept`.
"""

from __future__ import annotations

import copy
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any

import streamlit as st
import yaml

from core.config import ConfigError, field_specs, read_yaml, validate_config
from ui.recipes import METHOD_PRIMARY, Recipe, preset_values, presets

# Labels where the description's first words say too little or too much.
LABELS = {
    "model.name": "Model",
    "model.dtype": "Weight dtype",
    "model.max_memory_gb": "Max GPU memory (GB)",
    "method": "Training method",
    "finetune.method": "Fine-tuning method",
    "finetune.r": "LoRA rank (r)",
    "finetune.alpha": "LoRA alpha",
    "finetune.dropout": "LoRA dropout",
    "finetune.vision_attention": "Vision attention",
    "finetune.vision_mlp": "Vision MLP",
    "finetune.language_attention": "Language attention",
    "finetune.language_mlp": "Language MLP",
    "finetune.gradient_checkpointing": "Gradient checkpointing",
    "finetune.full_precision": "Full fine-tuning precision",
    "data.num_workers": "Data loader workers",
    "data.synthetic": "Generate the synthetic dataset when missing",
    "data.eval_split": "Held-out split (evaluation)",
    "data.labels": "Class folder → expected answer",
    "data.max_pixels": "Image budget (pixels)",
    "data.frame_cache": "Frame cache on disk",
    "data.frame_cache_gb": "Frame cache size (GB)",
    "data.max_skipped_fraction": "Largest share of skipped clips",
    "warm_start.enabled": "Warm start",
    "warm_start.answers": "Warm-start answers",
    "warm_start.max_steps": "Warm-start steps",
    "warm_start.learning_rate": "Warm-start learning rate",
    "warm_start.per_device_train_batch_size": "Warm-start batch size",
    "train.max_steps": "Max steps",
    "train.num_train_epochs": "Epochs",
    "train.per_device_train_batch_size": "Batch size (per device)",
    "train.gradient_accumulation_steps": "Gradient accumulation",
    "train.learning_rate": "Learning rate",
    "train.optim": "Optimizer",
    "train.num_generations": "Generations per prompt",
    "train.max_completion_length": "Longest completion (tokens)",
    "train.beta": "KL penalty (GRPO beta)",
    "train.use_vllm": "Rollouts with vLLM",
    "train.vllm_server_url": "vLLM server URL (empty: colocate)",
    "train.vllm_gpu_memory_utilization": "vLLM share of GPU memory (colocate)",
    "data.num_frames": "Frames per clip",
    "data.frame_max_side": "Frame size (longest side, px)",
    "pairs.samples_per_prompt": "Answers sampled per prompt",
    "pairs.temperature": "Sampling temperature (pairs)",
    "pairs.max_new_tokens": "Longest sampled answer (tokens)",
    "pairs.batch_size": "Prompts per sampling batch",
    "pairs.max_prompts": "Prompts to sample (at most)",
    "pairs.file": "Your pairs file (JSONL)",
    "pairs.source_run": "Sample from run (weights)",
    "dpo.max_steps": "DPO max steps",
    "dpo.num_train_epochs": "DPO epochs",
    "dpo.per_device_train_batch_size": "DPO batch size (pairs per device)",
    "dpo.gradient_accumulation_steps": "DPO gradient accumulation",
    "dpo.learning_rate": "DPO learning rate",
    "dpo.beta": "DPO beta",
    "warm_start.gradient_accumulation_steps": "Warm-start gradient accumulation",
    "warm_start.optim": "Warm-start optimizer",
    "warm_start.lr_scheduler_type": "Warm-start learning-rate schedule",
    "warm_start.warmup_steps": "Warm-start warm-up steps",
    "warm_start.seed": "Warm-start seed",
    "logging.report_to": "Experiment tracking (W&B)",
    "logging.logging_steps": "Log metrics every N steps",
    "logging.save_steps": "Checkpoint every N steps",
    "logging.save_total_limit": "Checkpoints kept",
    "logging.heartbeat_timeout_s": "Heartbeat timeout (s)",
    "stages": "Curriculum stages",
}
# The dataset folder has its own picker (ui/datasets.py).
HANDLED_ELSEWHERE = ("data.root",)
METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA (4-bit)", "full": "full fine-tuning"}
TRAINING_METHOD_NAMES = {
    "grpo": "GRPO (rewards on fresh rollouts)",
    "sft": "SFT (supervised)",
    "dpo": "DPO (preference pairs from the task's scorer)",
}
# Choice fields whose values read better as words.
CHOICE_NAMES = {"finetune.method": METHOD_NAMES, "method": TRAINING_METHOD_NAMES}
# The main form's heading over the fields of one training method (METHOD_PRIMARY).
METHOD_SECTIONS = {"dpo": "Preference pairs and DPO"}
# Headings of the config's sections under "All other settings"; `train` is the recipe's trainer (TRAINER_NAMES).
SECTION_TITLES = {
    "model": "Model", "finetune": "Fine-tuning", "data": "Data", "rewards": "Rewards", "warm_start": "Warm start",
    "stages": "Curriculum", "pairs": "Preference pairs", "dpo": "DPO", "eval": "Evaluation",
    "logging": "Logging and checkpoints",
}
TRAINER_NAMES = {True: "GRPO", False: "SFT"}  # by Recipe.grpo

# Besides the recipe's main fields (Recipe.primary): what the memory estimate beside Start turns on, and the warm
# start, whose steps come before the main stage's.
MEMORY_FIELDS = ("model.dtype", "model.max_memory_gb", "finetune.gradient_checkpointing", "finetune.full_precision",
                 "data.max_pixels")
WARM_START_FIELDS = ("warm_start.enabled", "warm_start.max_steps", "warm_start.answers", "warm_start.learning_rate")

# What applies to which choice (see `applies`).
ADAPTER_ONLY = ("finetune.r", "finetune.alpha", "finetune.dropout", "finetune.vision_attention", "finetune.vision_mlp",
                "finetune.language_attention", "finetune.language_mlp")
VLLM_ONLY = ("train.vllm_server_url", "train.vllm_gpu_memory_utilization")
PAIRS_SAMPLING = ("pairs.samples_per_prompt", "pairs.temperature", "pairs.batch_size", "pairs.max_prompts")

# The settings a model swap takes from that model's own preset: what sizes its memory (weight dtype, batch, visual
# tokens, sequence lengths) rather than the task (steps, learning rate, data) or the method the user picked.
MODEL_DEFAULT_KEYS = (
    "model.dtype", "model.max_memory_gb", "model.attn_implementation", "finetune.gradient_checkpointing",
    "train.per_device_train_batch_size", "train.gradient_accumulation_steps", "train.num_generations",
    "train.max_completion_length", "train.max_length", "data.max_pixels", "data.num_frames", "data.frame_max_side",
    "eval.batch_size",
)


def description_label(description: str) -> str | None:
    """A field's description's first clause, when it reads as a name (capitalised and short).

    >>> description_label("Hub revision (branch, tag or commit) to pin the weights")
    'Hub revision'
    >>> description_label("random: coin-flip answers teach the format only") is None
    True
    """
    clause = re.split(r"; |: | \(|, | -> ", description, maxsplit=1)[0].strip()
    return clause if 3 <= len(clause) <= 48 and clause[:1].isupper() else None


def field_label(key: str, description: str = "") -> str:
    """
    >>> field_label("train.warmup_steps", "Warm-up steps"), field_label("finetune.r"), field_label("data.seed")
    ('Warm-up steps', 'LoRA rank (r)', 'Seed')
    """
    if key in LABELS:
        return LABELS[key]
    named = description_label(description)
    if named:
        return named
    leaf = key.rsplit(".", 1)[-1].replace("_", " ")
    return leaf[:1].upper() + leaf[1:]


def field_kind(annotation: Any) -> tuple[str, bool]:
    """What widget a field gets: (`bool`|`int`|`float`|`str`|`choice`|`yaml`, optional).

    >>> field_kind(int), field_kind(int | None), field_kind(typing.Optional[float]), field_kind(dict[str, float])
    (('int', False), ('int', True), ('float', True), ('yaml', False))
    >>> field_kind(typing.Literal["a", "b"])
    ('choice', False)
    """
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            annotation, origin = args[0], typing.get_origin(args[0])
        else:
            return "yaml", optional
    if origin is typing.Literal:
        return "choice", optional
    if annotation is bool:
        return "bool", optional
    if annotation is int:
        return "int", optional
    if annotation is float:
        return "float", optional
    if annotation is str:
        return "str", optional
    return "yaml", optional


def allowed_text(spec: dict[str, Any]) -> str:
    """The allowed range in words, for the help text.

    >>> allowed_text({"choices": None, "bounds": {"gt": 0, "lt": 1}})
    '> 0 and < 1'
    >>> allowed_text({"choices": ("lora", "full"), "bounds": {}})
    'lora | full'
    """
    if spec.get("choices"):
        return " | ".join(str(c) for c in spec["choices"])
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{symbols[name]} {value}" for name, value in spec.get("bounds", {}).items())


def help_text(spec: dict[str, Any]) -> str:
    parts = [spec["description"].rstrip(".") + "." if spec["description"] else ""]
    allowed = allowed_text(spec)
    if allowed:
        parts.append(f"Allowed: {allowed}.")
    parts.append(f"Config key: `{spec['key']}`")
    return " ".join(p for p in parts if p)


def number_range(spec: dict[str, Any], kind: str) -> tuple[Any, Any]:
    """min/max for a number_input from pydantic bounds (strict bounds on ints move by one).

    >>> number_range({"bounds": {"ge": 1, "le": 1024}}, "int"), number_range({"bounds": {"gt": 0}}, "int")
    ((1, 1024), (1, None))
    >>> number_range({"bounds": {"gt": 0, "lt": 1}}, "float")
    (0.0, 1.0)
    """
    bounds = spec.get("bounds", {})
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if kind == "int":
        if "gt" in bounds and "ge" not in bounds:
            low = bounds["gt"] + 1
        if "lt" in bounds and "le" not in bounds:
            high = bounds["lt"] - 1
        return (None if low is None else int(low), None if high is None else int(high))
    return (None if low is None else float(low), None if high is None else float(high))


def float_step(value: float | None) -> float:
    """A step one decade below the value, so 1e-5 steps by 1e-6 and 2.0 by 0.1.

    >>> float_step(1e-5), float_step(2.0), float_step(0)
    (1e-06, 0.1, 0.01)
    """
    if not value:
        return 0.01
    return float(f"{10 ** (math.floor(math.log10(abs(value))) - 1):.0e}")


def widget(spec: dict[str, Any], value: Any, key: str) -> Any:
    """One input for one config field, initialised with `value` (a config value, or a YAML box's own text)."""
    kind, optional = field_kind(spec["annotation"])
    label, help = field_label(spec["key"], spec["description"]), help_text(spec)
    if kind == "bool":
        return st.checkbox(label, value=bool(value), help=help, key=key)
    if kind == "choice":
        choices = list(spec["choices"])
        if optional and None not in choices:
            choices = [None, *choices]
        index = choices.index(value) if value in choices else 0
        names = CHOICE_NAMES.get(spec["key"], {})
        return st.selectbox(
            label, choices, index=index, help=help, key=key, format_func=lambda c: "(none)" if c is None else names.get(c, str(c))
        )
    if kind in ("int", "float"):
        low, high = number_range(spec, kind)
        cast = int if kind == "int" else float
        if value is not None:
            value = cast(value)
            # A preset outside the bounds is left to the config's own validation message.
            low = low if low is None or value >= low else None
            high = high if high is None or value <= high else None
        options: dict[str, Any] = {"min_value": low, "max_value": high, "help": help, "key": key}
        if kind == "int":
            options["step"] = 1
        else:
            options["step"] = float_step(value if value is not None else low)
            options["format"] = "%g"
        if optional:
            options["placeholder"] = "not set"
        return st.number_input(label, value=value, **options)
    if kind == "str":
        text = st.text_input(label, value="" if value is None else str(value), help=help, key=key)
        return (text.strip() or None) if optional else text
    # Mappings and lists: edited as YAML.
    text = value if isinstance(value, YamlText) else dump_yaml(value)
    text = st.text_area(label, value=str(text), help=help + " (YAML)", key=key, height=100)
    return YamlText(spec["key"], text)


def widget_state(spec: dict[str, Any], value: Any) -> Any:
    """What a field's widget holds in `st.session_state` to show the config value `value`.

    >>> widget_state({"annotation": dict[str, float]}, {"a": 1.0}), widget_state({"annotation": int | None}, None)
    ('a: 1.0', None)
    """
    kind, optional = field_kind(spec["annotation"])
    if kind == "bool":
        return bool(value)
    if kind in ("int", "float"):
        return None if value is None else (int if kind == "int" else float)(value)
    if kind == "str":
        return "" if value is None else str(value)
    if kind == "yaml":
        return str(value) if isinstance(value, YamlText) else dump_yaml(value)
    return value


class YamlText(str):
    """A YAML text area's content, parsed when the config is built (so a typo gives a message)."""

    def __new__(cls, key: str, text: str):
        obj = super().__new__(cls, text)
        obj.key = key
        return obj

    def parse(self) -> Any:
        try:
            return yaml.safe_load(str(self)) if str(self).strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"'{self.key}' is not valid YAML ({err})") from None


def dump_yaml(value: Any) -> str:
    if value in (None, {}, []):
        return "{}" if isinstance(value, dict) else ("[]" if isinstance(value, list) else "")
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).strip()


def get_path(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_path(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, replacing (not merging) the value."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------- what applies


def applies(key: str, value_of: Callable[[str], Any], grpo: bool) -> bool:
    """Whether a field matters for the values chosen so far (`value_of(key)` reads one); `grpo` says the recipe's
    `train` section is GRPO's (the image recipe) rather than SFT's (the video recipe, whose curriculum stages
    still train with it before DPO).

    >>> chosen = {"method": "dpo", "finetune.method": "full", "train.max_steps": 300, "dpo.max_steps": -1,
    ...           "warm_start.enabled": True, "stages": [], "pairs.file": None}.get
    >>> keys = ("finetune.r", "train.num_generations", "dpo.beta", "dpo.num_train_epochs", "warm_start.max_steps",
    ...         "finetune.full_precision", "pairs.temperature")
    >>> [applies(key, chosen, grpo=True) for key in keys]
    [False, False, True, True, True, True, True]
    >>> applies("train.num_train_epochs", {"method": "grpo", "train.max_steps": 40}.get, grpo=True)
    False
    """
    section = key.split(".", 1)[0]
    method = value_of("method")
    if key in ADAPTER_ONLY:
        return value_of("finetune.method") in ("lora", "qlora")
    if key == "finetune.full_precision":
        return value_of("finetune.method") == "full"
    if section in ("pairs", "dpo"):
        if method != "dpo":
            return False
        if key in PAIRS_SAMPLING and value_of("pairs.file"):
            return False  # the user's own pairs: nothing is sampled
    if section == "train" and method == "dpo" and (grpo or not value_of("stages")):
        return False
    if section == "warm_start" and key != "warm_start.enabled":
        return bool(value_of("warm_start.enabled"))
    if key.endswith(".num_train_epochs"):
        return value_of(key.replace("num_train_epochs", "max_steps")) == -1
    if key in VLLM_ONLY:
        return bool(value_of("train.use_vllm"))
    return True


def config_value(spec: dict[str, Any], held: Any) -> Any:
    """The config value a widget's session-state value stands for (a YAML box's text parsed; unparseable stays text)."""
    kind, optional = field_kind(spec["annotation"])
    if kind == "str" and optional:
        return (held or "").strip() or None
    if kind == "yaml" and isinstance(held, str):
        try:
            return yaml.safe_load(held) if held.strip() else None
        except yaml.YAMLError:
            return held
    return held


# ---------------------------------------------------------------------------------------------- the form


def kept_values(prefix: str) -> dict[str, Any]:
    """The form's last value of every field (drawn or not), so a field hidden and shown again keeps it."""
    if f"{prefix}:kept" not in st.session_state:
        st.session_state[f"{prefix}:kept"] = {}
    return st.session_state[f"{prefix}:kept"]


def set_fields(recipe: Recipe, prefix: str, values: dict[str, Any]) -> None:
    """Show `{dotted key: config value}` in the form's widgets (call before they are drawn in this run)."""
    specs = {s["key"]: s for s in field_specs(recipe.config_cls)}
    kept = kept_values(prefix)
    for key, value in values.items():
        if key == "rewards.weights":
            for name, weight in reward_names_and_weights(value):
                st.session_state[f"{prefix}:rewards.weights.{name}"] = weight
        elif key in specs and key not in HANDLED_ELSEWHERE:
            st.session_state[f"{prefix}:{key}"] = widget_state(specs[key], value)
        kept[key] = value


def load_into_form(recipe: Recipe, prefix: str, config: dict[str, Any]) -> None:
    """Every field of the form takes its value from `config` (a run's resolved config, as sections)."""
    keys = [s["key"] for s in field_specs(recipe.config_cls)]
    set_fields(recipe, prefix, {key: get_path(config, key) for key in keys if key not in HANDLED_ELSEWHERE})


def reward_names_and_weights(weights: dict[str, float] | None) -> list[tuple[str, float]]:
    from image_vlm.rewards import REWARDS

    weights = weights or {}
    return [(name, float(weights.get(name, 0.0))) for name in REWARDS]


def reward_widgets(recipe: Recipe, weights: dict[str, float], prefix: str) -> dict[str, float]:
    """One weight per registered reward (0 turns it off); help is the reward's own docstring."""
    from image_vlm.rewards import REWARDS

    spec = next(s for s in field_specs(recipe.config_cls) if s["key"] == "rewards.weights")
    chosen = {}
    columns = st.columns(4)
    for index, (name, weight) in enumerate(reward_names_and_weights(weights)):
        func = REWARDS[name]
        doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        with columns[index % 4]:
            chosen[name] = st.number_input(
                f"Weight: {name} reward",
                min_value=0.0,
                value=weight,
                step=0.1,
                format="%g",
                help=f"{doc} {spec['description']}; 0 turns this reward off. Config key: `rewards.weights.{name}`",
                key=f"{prefix}:rewards.weights.{name}",
            )
    return chosen


def form_values(recipe: Recipe, base: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Draw the fields that apply (the main ones, then the rest in "All other settings", by section); returns the
    value of every field, drawn or kept."""
    specs = {s["key"]: s for s in field_specs(recipe.config_cls)}
    kept = kept_values(prefix)
    values: dict[str, Any] = {}

    def start_value(key: str) -> Any:
        return kept[key] if key in kept else get_path(base, key)

    def value_of(key: str) -> Any:
        """A field's value now: drawn earlier in this run, else what its widget holds, else kept or the preset's."""
        if key in values:
            return config_value(specs[key], values[key]) if key in specs else values[key]
        held = f"{prefix}:{key}"
        if held in st.session_state and key in specs:
            return config_value(specs[key], st.session_state[held])
        return config_value(specs[key], start_value(key)) if key in specs else start_value(key)

    def shown(key: str) -> bool:
        return key in specs and key not in HANDLED_ELSEWHERE and applies(key, value_of, recipe.grpo)

    def grid(keys: list[str], columns: int = 4) -> list[str]:
        keys = [k for k in dict.fromkeys(keys) if shown(k) and k not in values]
        if keys:
            cols = st.columns(columns)
            for index, key in enumerate(keys):
                with cols[index % columns]:
                    values[key] = widget(specs[key], start_value(key), f"{prefix}:{key}")
        return keys

    primary = [k for k in recipe.primary if k in specs]
    st.markdown("**Model and method**")
    model_column, method_column = st.columns([3, 2])
    with model_column:
        if "model.name" in specs:
            model = str(start_value("model.name") or "")
            values["model.name"] = model_picker(recipe, model, prefix, help_text(specs["model.name"]))
    with method_column:
        for key in ("method", "finetune.method"):
            if shown(key):
                values[key] = widget(specs[key], start_value(key), f"{prefix}:{key}")
    # What sizes the memory: dtype, cap, checkpointing, and the visual tokens (image pixels, clip frames).
    visual = [k for k in primary if k.startswith("data.") and k not in HANDLED_ELSEWHERE]
    grid([*MEMORY_FIELDS, *visual])
    if any(shown(k) for k in ADAPTER_ONLY):
        st.markdown(f"**{METHOD_NAMES.get(value_of('finetune.method'), 'Adapter')} adapters**")
        grid([k for k in ADAPTER_ONLY if specs[k]["annotation"] is not bool])
        st.caption("Layers to adapt")
        grid([k for k in ADAPTER_ONLY if specs[k]["annotation"] is bool])

    if "warm_start.enabled" in specs:
        st.markdown("**Warm start** (its steps come before the main stage's)")
        grid(list(WARM_START_FIELDS))
    method = value_of("method")
    trainer = [k for k in primary if k.startswith("train.")]
    if any(shown(k) for k in trainer):
        before_dpo = " (the curriculum stages before DPO)" if method == "dpo" else ""
        st.markdown(f"**{TRAINER_NAMES[recipe.grpo]} training**{before_dpo}")
        grid(trainer)
    extra = [k for k in METHOD_PRIMARY.get(method, ()) if k in specs]
    if any(shown(k) for k in extra):
        st.markdown(f"**{METHOD_SECTIONS.get(method, f'{method} settings')}**")
        grid(extra)
    if "rewards.weights" in primary:
        ranks = ", and pairs are ranked by it" if method == "dpo" else ""
        st.markdown(f"**Rewards** (the trainer's reward is the weighted sum{ranks})")
        values["rewards.weights"] = reward_widgets(recipe, start_value("rewards.weights"), prefix)

    rest = [k for k in specs if shown(k) and k not in values and k not in primary]
    sections = list(dict.fromkeys(k.split(".", 1)[0] for k in rest))
    # A fixed label: an expander whose label changed is a new one, and would close under the user's hand.
    with st.expander("All other settings, by section"):
        if sections:
            for section, tab in zip(sections, st.tabs([section_title(s, recipe) for s in sections])):
                with tab:
                    grid([k for k in rest if k.split(".", 1)[0] == section], columns=3)
    kept.update(values)
    return dict(kept)  # the fields never drawn nor set keep the preset's values (build_config starts from them)


def section_title(section: str, recipe: Recipe) -> str:
    """
    >>> from ui.recipes import IMAGE, VIDEO
    >>> section_title("train", IMAGE), section_title("train", VIDEO), section_title("warm_start", IMAGE)
    ('GRPO training', 'SFT training', 'Warm start')
    """
    if section == "train":
        return f"{TRAINER_NAMES[recipe.grpo]} training"
    return SECTION_TITLES.get(section, section.replace("_", " ").capitalize())


# ---------------------------------------------------------------------------------------------- the model


def model_choices(modality: str) -> dict[str, str]:
    """{model name: label} of the models offered for a recipe, family by family (its shipped presets with their
    size, then its tiny test model); only families that take the recipe's input."""
    from core.families import FAMILIES

    choices = {}
    for family in FAMILIES:
        if modality not in family.modalities:
            continue
        for preset in family.presets:
            choices[preset.model_id] = f"{family.title} · {preset.model_id} ({preset.published_params:g} B)"
        choices[f"tiny:{family.key}"] = f"{family.title} · tiny:{family.key} (tiny random weights, CPU tests)"
    return choices


def model_picker(recipe: Recipe, value: str, prefix: str, help: str) -> str:
    """The Model field: the shipped models by family, or any model id or folder typed in. Picking one applies its
    preset's memory settings (`apply_model_defaults`); a model that cannot be loaded is said under the field."""
    key = f"{prefix}:model.name"
    choices = model_choices(recipe.name)
    current = st.session_state.get(key, value) or value
    options = list(choices) if not current or current in choices else [current, *choices]
    chosen = st.selectbox(
        LABELS["model.name"],
        options,
        index=options.index(current) if current in options else 0,
        format_func=lambda name: choices.get(name, name),
        accept_new_options=True,
        help=help + ". Pick a shipped model (by family) or type a hub id or a local folder.",
        key=key,
        on_change=apply_model_defaults,
        args=(recipe, prefix),
    )
    chosen = (chosen or "").strip()
    note = st.session_state.get(f"{prefix}:model-note")
    problem, notes = model_check(chosen, recipe.name)
    if problem:
        st.error(problem, icon=":material/error:")
    elif notes:
        st.caption("  \n".join(line.strip() for line in notes))
    if note and note[0] == chosen:
        st.caption(note[1])
    return chosen


def apply_model_defaults(recipe: Recipe, prefix: str) -> None:
    """On a model swap: the memory settings (MODEL_DEFAULT_KEYS) of the preset made for that model, so a 7B model
    does not inherit the tiny preset's fp32, batch of 64 and 4 visual tokens."""
    name = (st.session_state.get(f"{prefix}:model.name") or "").strip()
    source, defaults = model_defaults(recipe, name)
    specs = {s["key"] for s in field_specs(recipe.config_cls)}
    changes = {key: get_path(defaults, key) for key in MODEL_DEFAULT_KEYS if key in specs}
    set_fields(recipe, prefix, changes)
    named = ("model.dtype", "train.per_device_train_batch_size", "data.max_pixels", "data.num_frames")
    shown = ", ".join(f"{field_label(k)} {'not set' if v is None else v}" for k, v in changes.items() if k in named)
    st.session_state[f"{prefix}:model-note"] = (name, f"Memory settings from {source}: {shown}.")


def model_defaults(recipe: Recipe, name: str) -> tuple[str, dict[str, Any]]:
    """(where from, config sections) of the defaults for `name`: the recipe's preset of that model, else one of
    its family (the tiny preset for a tiny model), else the recipe config's own defaults."""
    from core.families import preset_of
    from core.tiny import TINY_PREFIX

    files = [path for path in presets(recipe).values() if path is not None]
    named = {path: (read_yaml(path).get("model") or {}).get("name") for path in files}
    chosen = next((path for path, model in named.items() if model == name), None)
    if chosen is None and name.startswith(TINY_PREFIX):
        chosen = next((path for path in files if path.stem.startswith("tiny")), None)
    elif chosen is None and preset_of(name):
        family = preset_of(name)[0]
        same_family = [path for path, model in named.items() if model and (preset_of(model) or (None,))[0] is family]
        chosen = same_family[0] if same_family else None
    if chosen is not None:
        return f"the {chosen.stem} preset", preset_values(recipe, chosen)
    return "the recipe's defaults", recipe.config_cls().model_dump(mode="json")


@st.cache_data(show_spinner=False, ttl=600)
def family_notes(name: str, modality: str) -> list[str]:
    """What the family table says about a model for a recipe (a shipped or tiny model from the table alone, any
    other from its config: cached, a folder, or config.json alone); a model it cannot take is one line saying why."""
    from core.architectures import family_lines
    from core.config import ModelSection

    try:
        return family_lines(ModelSection(name=name), modality)
    except ConfigError as err:
        return [str(err)]


@st.cache_data(show_spinner="Checking the model…", ttl=60)
def model_check(name: str, modality: str) -> tuple[str | None, list[str]]:
    """(why the model cannot be trained here, or None; what the family table says about it). Availability is
    core.hub's check: a tiny model, an existing folder, the Hugging Face cache, or the Hub within seconds (never
    the network when HF_HUB_OFFLINE is set)."""
    from core.hub import check_model_available

    if not name:
        return "model.name: pick a model, or type a hub id or a local folder", []
    try:
        check_model_available(name)
    except ConfigError as err:
        if name in model_choices(modality) and "HF_HUB_OFFLINE" in str(err):
            # A shipped model's architecture ships with the project: the estimate works, training needs the weights.
            return f"{err}. The memory estimate beside Start still works: the architecture ships with the project.", []
        return str(err), []
    notes = family_notes(name, modality)
    if notes and notes[0].startswith("model.name:"):  # the family table's refusal (no such input, no class)
        return notes[0], []
    return None, notes


# ---------------------------------------------------------------------------------------------- the config


def build_config(recipe: Recipe, base: dict[str, Any], values: dict[str, Any]):
    """The validated config: the preset with the form's values on top.

    Raises:
        ConfigError: naming the field and what is allowed.
    """
    defaults = {s["key"]: s["default"] for s in field_specs(recipe.config_cls)}
    data = copy.deepcopy(base)
    for key, value in values.items():
        if isinstance(value, YamlText):
            value = value.parse()
            if value is None:  # an emptied box means "the default"
                value = defaults.get(key)
        if key == "rewards.weights":
            value = {name: weight for name, weight in (value or {}).items() if weight}
            if not value:
                raise ConfigError("rewards: every reward weight is 0; give at least one reward a weight above 0")
        set_path(data, key, value)
    return validate_config(recipe.config_cls, data, source="form")


def stage_steps(cfg, grpo: bool) -> list[tuple[str, int | None, str]]:
    """The stages a config trains, in order: (name, optimizer steps or None when counted in epochs or not in
    steps, the length in words). The recipes' train.py run them in this order.

    >>> from image_vlm.config import ImageConfig
    >>> stage_steps(ImageConfig(warm_start={"enabled": True, "max_steps": 150}, train={"max_steps": 40}), grpo=True)
    [('warm start', 150, '150 steps'), ('GRPO', 40, '40 steps')]
    """

    def length(max_steps: int, epochs: float) -> tuple[int | None, str]:
        return (max_steps, f"{max_steps} steps") if max_steps >= 0 else (None, f"{epochs:g} epoch(s)")

    plan = []
    warm = getattr(cfg, "warm_start", None)
    if warm is not None and warm.enabled:
        plan.append(("warm start", warm.max_steps, f"{warm.max_steps} steps"))
    for stage in getattr(cfg, "stages", None) or []:
        train = cfg.stage_sections(stage)[1]
        plan.append((f"SFT stage {stage.name}", *length(train.max_steps, train.num_train_epochs)))
    if cfg.method == "dpo":
        if not cfg.pairs.file:
            plan.append(("pairs", None, f"sampling {cfg.pairs.samples_per_prompt} answers per training prompt"))
        plan.append(("DPO", *length(cfg.dpo.max_steps, cfg.dpo.num_train_epochs)))
    elif not getattr(cfg, "stages", None):
        plan.append((TRAINER_NAMES[grpo], *length(cfg.train.max_steps, cfg.train.num_train_epochs)))
    return plan


def steps_summary(plan: list[tuple[str, int | None, str]]) -> tuple[str, str]:
    """(headline, breakdown) of a stage plan, for beside Start.

    >>> steps_summary([('warm start', 150, '150 steps'), ('GRPO', 40, '40 steps')])
    ('190 optimizer steps in all', 'warm start 150 steps + GRPO 40 steps')
    >>> steps_summary([('SFT', None, '3 epoch(s)')])[0]
    'SFT 3 epoch(s)'
    """
    counted = sum(steps for _, steps, _ in plan if steps is not None)
    by_epochs = [f"{name} {words}" for name, steps, words in plan if steps is None and name != "pairs"]
    breakdown = " + ".join(f"{name} {words}" if name != "pairs" else f"({words})" for name, _, words in plan)
    if not by_epochs:
        return f"{counted} optimizer steps in all", breakdown
    if not counted:
        return " + ".join(by_epochs), breakdown
    return f"{counted} optimizer steps + " + " + ".join(by_epochs), breakdown

