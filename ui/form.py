"""The training form, generated from the recipe config's fields (`core.config.field_specs`).

Each field's description becomes the widget's help and its bounds or choices become the widget's range,
so nothing about the config is re-stated here. `form_values` renders the widgets and returns
`{dotted key: value}`; `build_config` merges those onto the preset and validates them with the config.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from typing import Any

import streamlit as st
import yaml

from core.config import ConfigError, field_specs, validate_config
from ui.recipes import METHOD_PRIMARY, Recipe

# Labels where the field name alone says too little.
LABELS = {
    "model.name": "Model",
    "model.max_memory_gb": "Max GPU memory (GB)",
    "method": "Training method",
    "finetune.method": "Fine-tuning method",
    "finetune.r": "LoRA rank (r)",
    "finetune.alpha": "LoRA alpha",
    "finetune.vision_attention": "Vision attention",
    "finetune.vision_mlp": "Vision MLP",
    "finetune.language_attention": "Language attention",
    "finetune.language_mlp": "Language MLP",
    "train.max_steps": "Max steps",
    "train.num_train_epochs": "Epochs",
    "train.per_device_train_batch_size": "Batch size (per device)",
    "train.gradient_accumulation_steps": "Gradient accumulation",
    "train.learning_rate": "Learning rate",
    "train.optim": "Optimizer",
    "train.num_generations": "Generations per prompt",
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
}
# The dataset folder has its own picker above the form.
HANDLED_ELSEWHERE = ("data.root",)
METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA (4-bit)", "full": "full fine-tuning"}
TRAINING_METHOD_NAMES = {
    "grpo": "GRPO (rewards on fresh rollouts)",
    "sft": "SFT (supervised)",
    "dpo": "DPO (preference pairs from the task's scorer)",
}
# The main form's heading over the fields of one training method (METHOD_PRIMARY).
METHOD_SECTIONS = {"dpo": "Preference pairs and DPO"}
# What a field's own description cannot say: how the form treats it.
FORM_NOTES = {"method": "Update estimate (or Start) shows the chosen method's settings in the main form."}
# Choice fields whose values read better as words.
CHOICE_NAMES = {"finetune.method": METHOD_NAMES, "method": TRAINING_METHOD_NAMES}


def field_label(key: str) -> str:
    """
    >>> field_label("train.warmup_steps"), field_label("finetune.r")
    ('Warmup steps', 'LoRA rank (r)')
    """
    if key in LABELS:
        return LABELS[key]
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
    if spec["key"] in FORM_NOTES:
        parts.append(FORM_NOTES[spec["key"]])
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
    """One input for one config field, initialised with `value`."""
    kind, optional = field_kind(spec["annotation"])
    label, help = field_label(spec["key"]), help_text(spec)
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
    text = st.text_area(label, value=dump_yaml(value), help=help + " (YAML)", key=key, height=100)
    return YamlText(spec["key"], text)


class YamlText(str):
    """A YAML text area's content, parsed when the form is submitted (so a typo gives a message)."""

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


def reward_widgets(recipe: Recipe, base: dict[str, Any], prefix: str) -> dict[str, float]:
    """One weight per registered reward (0 turns it off); help is the reward's own docstring."""
    from image_vlm.rewards import REWARDS

    weights = get_path(base, "rewards.weights") or {}
    spec = next(s for s in field_specs(recipe.config_cls) if s["key"] == "rewards.weights")
    chosen = {}
    columns = st.columns(2)
    for index, (name, func) in enumerate(REWARDS.items()):
        doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        with columns[index % 2]:
            chosen[name] = st.number_input(
                f"Weight: {name} reward",
                min_value=0.0,
                value=float(weights.get(name, 0.0)),
                step=0.1,
                format="%g",
                help=f"{doc} {spec['description']}; 0 turns this reward off. Config key: `rewards.weights.{name}`",
                key=f"{prefix}:rewards.weights.{name}",
            )
    return chosen


def form_values(recipe: Recipe, base: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Render the whole form (main fields, then every other field in an expander); returns dotted values."""
    specs = {s["key"]: s for s in field_specs(recipe.config_cls)}
    values: dict[str, Any] = {}

    def grid(keys: list[str], columns: int = 2) -> None:
        cols = st.columns(columns)
        for index, key in enumerate(keys):
            with cols[index % columns]:
                values[key] = widget(specs[key], get_path(base, key), f"{prefix}:{key}")

    main = [k for k in recipe.primary if k in specs]
    st.markdown("**Model and method**")
    if "model.name" in main:
        values["model.name"] = model_picker(recipe, get_path(base, "model.name"), f"{prefix}:model.name", help_text(specs["model.name"]))
    grid([k for k in main if (k == "method" or k.startswith(("model.", "finetune."))) and specs[k]["annotation"] is not bool
          and k != "model.name"])
    st.caption("LoRA layers to adapt")
    grid([k for k in main if k.startswith("finetune.") and specs[k]["annotation"] is bool])
    st.markdown("**Training**")
    grid([k for k in main if k.startswith(("train.", "data.")) and k not in HANDLED_ELSEWHERE])
    # Inside the form a changed method takes effect on the next submit ("Update estimate"), like every field.
    method = values.get("method", get_path(base, "method"))
    extra = [k for k in METHOD_PRIMARY.get(method, ()) if k in specs and k not in main]
    if extra:
        st.markdown(f"**{METHOD_SECTIONS.get(method, f'{method} settings')}**")
        grid(extra)
        main += extra
    if "rewards.weights" in main:
        st.markdown("**Rewards** (the trainer's reward is the weighted sum)")
        values["rewards.weights"] = reward_widgets(recipe, base, prefix)

    rest = [k for k in specs if k not in main and k not in HANDLED_ELSEWHERE]
    with st.expander("All other settings"):
        for section in dict.fromkeys(k.split(".", 1)[0] for k in rest):
            st.markdown(f"**{section}**")
            grid([k for k in rest if k.split(".", 1)[0] == section])
    return values


def model_choices(modality: str) -> dict[str, str]:
    """{model name: label} of the models offered for a recipe: each family's shipped presets, grouped by family,
    with their size, then the tiny test models; only families that take the recipe's input."""
    from core.families import FAMILIES

    shipped, tiny = {}, {}
    for family in FAMILIES:
        if modality not in family.modalities:
            continue
        takes = " + ".join(family.modalities)
        for preset in family.presets:
            shipped[preset.model_id] = f"{family.title} · {preset.model_id} ({preset.published_params:g} B; {takes})"
        tiny[f"tiny:{family.key}"] = f"{family.title} · tiny:{family.key} (tiny random weights, CPU tests; {takes})"
    return {**shipped, **tiny}


def model_picker(recipe: Recipe, value: str | None, key: str, help: str) -> str:
    """The Model field: the shipped presets by family, or any model id or folder typed in."""
    choices = model_choices(recipe.name)
    options = list(choices) if not value or value in choices else [value, *choices]
    chosen = st.selectbox(
        LABELS["model.name"],
        options,
        index=options.index(value) if value in options else 0,
        format_func=lambda name: choices.get(name, name),
        accept_new_options=True,
        help=help + ". Pick a shipped model or type a hub id or a local folder.",
        key=key,
    )
    family_caption(chosen or "", recipe.name)
    return chosen or ""


@st.cache_data(show_spinner=False, ttl=600)
def family_notes(name: str, modality: str) -> list[str]:
    """What the family table says about a model for a recipe (a shipped or tiny model from the table alone, any
    other from its config: cached, a folder, or config.json alone); a model it cannot take is one line saying why."""
    from core.architectures import family_lines
    from core.config import ConfigError, ModelSection

    try:
        return family_lines(ModelSection(name=name), modality)
    except ConfigError as err:
        return [str(err)]


def family_caption(name: str, modality: str) -> None:
    """Under the picker: the family, or for a model outside the table what is generic about it."""
    if name:
        st.caption("  \n".join(note.strip() for note in family_notes(name, modality)))


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
            value = {name: weight for name, weight in value.items() if weight}
            if not value:
                raise ConfigError("rewards: every reward weight is 0; give at least one reward a weight above 0")
        set_path(data, key, value)
    return validate_config(recipe.config_cls, data, source="form")

