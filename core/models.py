"""Model loading and fine-tuning setup shared by both recipes.

One function loads a VLM (hub id, local folder or `tiny:<kind>`), one applies the fine-tuning method
(LoRA, QLoRA or full), and the run folder's `config.yaml` is enough to rebuild either later: evaluation
and inference never re-state model settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from core.config import ConfigError, FinetuneSection, ModelSection
from core.families import FAMILIES, Family, family_of_config
from core.processes import world_size
from core.runs import RunDir, holds_adapter
from core.tiny import resolve_model_name

# Projections between the towers and the head are trained in full fine-tuning only: adapting them with
# LoRA rarely helps and changes the model's interface.
NEVER_ADAPTED = ("lm_head", "embed_tokens")


def vision_and_projector(family: Family | None) -> tuple[str, ...]:
    """Module-name parts of the vision tower and of what joins the towers: the family's, else every family's."""
    if family is not None:
        return (*family.vision_parts, *family.projector_parts)
    return tuple(dict.fromkeys(part for f in FAMILIES for part in (*f.vision_parts, *f.projector_parts)))


def qlora_keep_unquantized(family: Family | None) -> tuple[str, ...]:
    """QLoRA quantizes the language model only. The vision tower and the projector stay in bf16 (they are small,
    and 4-bit visual features cost accuracy), and so does the output head. Written as transformers matches skip
    patterns: a regex from the start of the module name, up to a module boundary."""
    return tuple(rf"(?:.*\.)?{part}" for part in vision_and_projector(family)) + ("lm_head",)


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` is bfloat16 on GPU and float32 on CPU, where bf16 matmuls are slow or missing."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def apply_memory_cap(max_memory_gb: float | None) -> str | None:
    """Limit this process's CUDA allocations so a run fails with a clear OOM instead of starving the host.

    On unified-memory machines (DGX Spark) the GPU and the OS share one pool; without headroom the
    host starts swapping and the whole box stalls.
    """
    if not max_memory_gb or not torch.cuda.is_available():
        return None
    # Each rank caps its own GPU: before the trainer sets the device, current_device() is 0 on every rank.
    device = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    total_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
    if max_memory_gb >= total_gb:
        return f"GPU memory: all {total_gb:.0f} GiB (the max_memory_gb cap of {max_memory_gb:g} GiB is above this GPU)"
    fraction = max_memory_gb / total_gb
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return f"GPU memory capped at {max_memory_gb:.0f} GiB of {total_gb:.0f} GiB ({fraction:.0%})"


def memory_hint(err: BaseException, max_memory_gb: float | None) -> str:
    """A message for out-of-memory errors that says what to change."""
    cap = f" under the max_memory_gb cap of {max_memory_gb} GiB" if max_memory_gb else ""
    return (
        f"out of GPU memory{cap}: lower train.per_device_train_batch_size or the number of generations/frames, "
        f"or use finetune.method=qlora ({err})"
    )


# Put before a chat template: a model's own thinking mode (Qwen3.5, Gemma 4 and Qwen3 switch it with
# `enable_thinking`) is off unless a caller asks for it by name. The product's reasoning is its own <REASONING> block
# (`data.reasoning`); a thinking model would write a second one before it, which no reward or scorer reads. Every
# renderer, TRL's included (its DPO collator passes no template kwargs), reads the processor's template, so the
# default is set there once. A template without the variable is unchanged.
THINKING_OFF = "{%- set enable_thinking = enable_thinking if enable_thinking is defined else false %}"


def thinking_off(template: str | None) -> str | None:
    """`template` with the model's own thinking off by default (`THINKING_OFF`); applied once.

    >>> from jinja2 import Template
    >>> text = thinking_off("{{ 'think' if enable_thinking is not defined or enable_thinking else 'answer' }}")
    >>> Template(text).render(), Template(text).render(enable_thinking=True), thinking_off(text) == text
    ('answer', 'think', True)
    """
    if not isinstance(template, str) or template.startswith(THINKING_OFF):
        return template
    return THINKING_OFF + template


def load_processor(model: ModelSection, **kwargs: Any):
    """The model's processor, its chat template with the model's own thinking mode off (`THINKING_OFF`)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(resolve_model_name(model.name), revision=model.revision, **kwargs)
    for holder in (processor, getattr(processor, "tokenizer", None)):
        if holder is not None and isinstance(getattr(holder, "chat_template", None), str):
            holder.chat_template = thinking_off(holder.chat_template)
    return processor


def load_model(model: ModelSection, finetune: FinetuneSection | None = None):
    """Load the base VLM in the configured dtype; 4-bit when the method is QLoRA."""
    from transformers import AutoModelForImageTextToText

    dtype = resolve_dtype(model.dtype)
    if finetune is not None and finetune.method == "full" and finetune.full_precision == "fp32_master_weights":
        dtype = torch.float32  # the Trainer's bf16 autocast computes in bf16; the weights it updates stay fp32
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": model.revision}
    if model.attn_implementation != "auto":
        kwargs["attn_implementation"] = model.attn_implementation
    if finetune is not None and finetune.method == "qlora":
        from core.architectures import model_family

        kwargs["quantization_config"] = qlora_quantization(model_family(model))
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    return AutoModelForImageTextToText.from_pretrained(resolve_model_name(model.name), **kwargs)


# Attention kernels transformers can use without an extra package; flash_attention_2 needs flash-attn and CUDA.
BUILT_IN_ATTENTION = ("sdpa", "eager")


def trainer_mappings(config: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted place, mapping) of every `trainer:` pass-through in a config mapping, a curriculum stage's included.

    >>> [where for where, _ in trainer_mappings({"train": {"trainer": {}}, "stages": [{"train": {"trainer": {}}}]})]
    ['train.trainer', 'stages.0.train.trainer']
    """
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        place = f"{where}.{key}" if where else str(key)
        if key == "trainer" and isinstance(value, dict):
            yield place, value
        else:
            yield from trainer_mappings(value, place)


def gpu_feature_problem(config: dict[str, Any]) -> str | None:
    """Why this machine cannot run a GPU-only feature the config asks for, in one line, before anything loads:
    QLoRA (bitsandbytes 4-bit), flash attention (the flash-attn package) and Liger kernels all need CUDA and their
    package. `config` is the resolved config as a mapping (any recipe); None when nothing GPU-only is asked for.

    >>> gpu_feature_problem({"model": {"attn_implementation": "sdpa"}, "finetune": {"method": "lora"}}) is None
    True
    """
    import importlib.util

    cuda = torch.cuda.is_available()
    attention = (config.get("model") or {}).get("attn_implementation")
    if attention == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            return (
                "model.attn_implementation=flash_attention_2: the flash-attn package is not installed here (no wheel "
                f"for every platform, so the lock leaves it out); use one that is: {', '.join(BUILT_IN_ATTENTION)} or auto"
            )
        if not cuda:
            return "model.attn_implementation=flash_attention_2 needs a CUDA GPU; use sdpa or auto on CPU"
    if (config.get("finetune") or {}).get("method") == "qlora":
        if not cuda:
            return "finetune.method=qlora needs a CUDA GPU (bitsandbytes 4-bit); use finetune.method=lora on CPU"
        if importlib.util.find_spec("bitsandbytes") is None:
            return "finetune.method=qlora needs bitsandbytes: install the gpu extra (`uv sync --extra gpu`)"
    liger = [f"{where}.use_liger_kernel" for where, trainer in trainer_mappings(config) if trainer.get("use_liger_kernel")]
    if liger:
        if not cuda:
            return f"{liger[0]}=true: Liger kernels need a CUDA GPU; leave it off on CPU"
        if importlib.util.find_spec("liger_kernel") is None:
            return f"{liger[0]}=true: the liger-kernel package is not installed: install the gpu extra (`uv sync --extra gpu`)"
    return None


def qlora_quantization(family: Family | None):
    """The 4-bit config of QLoRA: NF4 with double quantization for the language model's linear layers only
    (`family` names the rest; outside the table, every family's vision and projector names are kept)."""
    if not torch.cuda.is_available():
        raise RuntimeError("finetune.method=qlora needs a CUDA GPU (bitsandbytes 4-bit); use finetune.method=lora on CPU")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            "finetune.method=qlora needs bitsandbytes: install the gpu extra (`uv sync --extra gpu`, or "
            "`pip install 'bitsandbytes>=0.46'`; wheels exist for x86_64 and aarch64 Linux), or use finetune.method=lora"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(qlora_keep_unquantized(family)),
    )


def quantized_in_qlora(name: str, family: Family | None = None) -> bool:
    """Whether QLoRA stores the linear layer `name` in 4-bit, by the same matching transformers applies.

    >>> quantized_in_qlora("model.language_model.layers.0.mlp.down_proj"), quantized_in_qlora("model.visual.blocks.0.attn.qkv")
    (True, False)
    >>> quantized_in_qlora("model.multi_modal_projector.linear_1"), quantized_in_qlora("lm_head")
    (False, False)
    """
    from transformers.quantizers.quantizers_utils import should_convert_module

    return should_convert_module(name, list(qlora_keep_unquantized(family)))


def classify_module(name: str, family: Family | None = None) -> tuple[str, str] | None:
    """(`vision`|`language`, `attention`|`mlp`|`other`) for a linear layer's name, by the family's module names
    (every family's when None), or None if it is never adapted (the head, embeddings, the projector).

    >>> classify_module("model.visual.blocks.0.attn.qkv")
    ('vision', 'attention')
    >>> classify_module("model.language_model.layers.3.mlp.down_proj")
    ('language', 'mlp')
    >>> classify_module("model.vision_tower.encoder.layer.0.attention.q_proj")
    ('vision', 'attention')
    >>> classify_module("lm_head") is None
    True
    """
    parts = name.split(".")
    families = [family] if family else FAMILIES
    projector = {part for f in families for part in f.projector_parts}
    vision = {part for f in families for part in f.vision_parts}
    if any(p in NEVER_ADAPTED or p in projector for p in parts):
        return None
    tower = "vision" if any(p in vision for p in parts) else "language"
    attention = {part for f in families for part in f.attention_parts}
    mlp = {part for f in families for part in f.mlp_parts}
    if any(p in attention for p in parts):
        return tower, "attention"
    if any(p in mlp for p in parts):
        return tower, "mlp"
    return tower, "other"


def lora_target_modules(model: torch.nn.Module, finetune: FinetuneSection) -> list[str]:
    """Names of the linear layers selected by the four toggles (vision/language x attention/MLP).

    For a model outside the family table the toggles cannot be trusted to its module names, so every linear
    layer of the language model is adapted (`generic_lora_note` says so in the log and the UI).
    """
    family = family_of_config(getattr(model, "config", None))
    wanted = {
        ("vision", "attention"): finetune.vision_attention,
        ("vision", "mlp"): finetune.vision_mlp,
        ("language", "attention"): finetune.language_attention,
        ("language", "mlp"): finetune.language_mlp,
    }
    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit,)
    except ImportError:
        pass
    names = []
    for name, module in model.named_modules():
        kind = classify_module(name, family)
        if not isinstance(module, linear_types) or kind is None:
            continue
        if (family is None and kind[0] == "language") or (family is not None and wanted.get(kind)):
            names.append(name)
    if not names:
        raise ValueError(
            "no layers selected for LoRA: turn on at least one of finetune.vision_attention, "
            "finetune.vision_mlp, finetune.language_attention, finetune.language_mlp"
        )
    return names


def apply_finetune(model, finetune: FinetuneSection):
    """Wrap the model for the chosen method: a PEFT LoRA model, or the model itself for full fine-tuning."""
    if finetune.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if finetune.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=finetune.gradient_checkpointing)
    config = LoraConfig(
        r=finetune.r,
        lora_alpha=finetune.alpha,
        lora_dropout=finetune.dropout,
        target_modules=lora_target_modules(model, finetune),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def checkpointing_arguments(args_cls, enabled: bool) -> dict[str, Any]:
    """Trainer kwargs for activation checkpointing under either spelling (renamed in transformers 5.2x).

    Non-reentrant checkpointing keeps gradients flowing into LoRA layers without enable_input_require_grads.
    """
    fields = getattr(args_cls, "__dataclass_fields__", {})
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False}}


def full_update_arguments(model: ModelSection, finetune: FinetuneSection, optim: str) -> dict[str, Any]:
    """Trainer kwargs that keep full fine-tuning's updates when the weights are bf16.

    An update of lr=1e-5 on a bf16 weight of 0.02 (spacing 1.2e-4) rounds to nothing: plain AdamW on bf16
    weights loses most of training. 8-bit AdamW with stochastic rounding (torchao) rounds up or down with the
    odds that keep every update in expectation, at ~6 bytes a weight; fp32 master weights would take ~16.
    """
    if finetune.method != "full" or finetune.full_precision != "bf16_stochastic_rounding" or resolve_dtype(model.dtype) != torch.bfloat16:
        return {}
    if optim == "sgd":
        raise ConfigError(
            "finetune.full_precision=bf16_stochastic_rounding trains with 8-bit AdamW; set train.optim to an AdamW "
            "(adamw_torch) or finetune.full_precision=fp32_master_weights"
        )
    return {"optim": "adamw_torch_8bit", "optim_args": "bf16_stochastic_round=True"}


def trainer_config(args_cls, cfg, run, output_dir: Path, section: str, passthrough: dict[str, Any], **arguments):
    """TRL's GRPOConfig or SFTConfig: a stage's own `arguments`, what every stage shares (activation
    checkpointing, bf16 on CUDA, logging, saving, W&B, the run's name), then the section's `trainer:` mapping
    verbatim, which TRL validates. A rejected value is a ConfigError naming the section."""
    from core.metrics import configure_wandb

    shared = dict(
        output_dir=str(output_dir),
        **checkpointing_arguments(args_cls, cfg.finetune.gradient_checkpointing),
        bf16=torch.cuda.is_available(),
        logging_steps=cfg.logging.logging_steps,
        save_strategy="steps",
        save_steps=cfg.logging.save_steps,
        save_total_limit=cfg.logging.save_total_limit,
        report_to=configure_wandb(cfg.logging.report_to, cfg.logging.wandb_project, run),
        run_name=run.id,
        remove_unused_columns=False,
        **cfg.data.loader_arguments(),
    )
    if world_size() > 1 and not torch.cuda.is_available():
        # TrainingArguments rebuilds accelerate's state, and without use_cpu a CPU launch would not join the
        # process group: every rank would then train alone and save as rank 0.
        shared["use_cpu"] = True
    precision = full_update_arguments(cfg.model, cfg.finetune, arguments.get("optim", "adamw_torch"))
    try:
        return args_cls(**{**shared, **arguments, **precision, **passthrough})
    except TypeError as err:
        raise ConfigError(f"{section}.trainer: {err} (see trl.{args_cls.__name__} for the accepted arguments)") from None
    except ValueError as err:
        raise ConfigError(f"{section}: {err}") from None


def trainable_summary(model) -> str:
    """Trainable parameters, and under QLoRA how many linear layers are 4-bit and whether any is in the vision part."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    summary = f"trainable parameters: {trainable:,} of {total:,} ({trainable / max(total, 1):.2%})"
    # By class name: bitsandbytes is an optional extra, and a model without 4-bit layers never needs it imported.
    four_bit = [name for name, module in model.named_modules() if type(module).__name__ == "Linear4bit"]
    if four_bit:
        kept = vision_and_projector(family_of_config(getattr(model, "config", None)))
        vision = [name for name in four_bit if any(part in name.split(".") for part in kept)]
        summary += f"; {len(four_bit)} linear layers in 4-bit, {len(vision)} of them in the vision tower or projector"
    return summary


def save_trained(trainer, out: Path) -> Path:
    """Save a trained stage's adapter or model, with the processor, from every rank.

    The Trainer's own save gathers sharded (FSDP) weights in a collective that every rank joins and writes on
    the main process only; a rank-0-only `save_pretrained` on a sharded model crashes or hangs. The folder is
    written under a temporary sibling and renamed, so a half-written one never reads as a finished stage.
    """
    import shutil

    staging = out.with_name(f".{out.name}.saving")
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)  # the run folder's config.yaml says it all
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    trainer.accelerator.wait_for_everyone()  # the next stage, evaluation or the UI loads what was just saved
    return out


def load_stage_start(model: ModelSection, finetune: FinetuneSection, previous: Path | None):
    """The model a training stage starts from: fresh LoRA (or base weights), or the previous stage's result, trainable."""
    if previous is None:
        return apply_finetune(load_model(model, finetune), finetune)
    if not holds_adapter(previous):  # full fine-tuning: the previous stage saved whole weights
        return load_model(model.model_copy(update={"name": str(previous), "revision": None}), finetune)
    from peft import PeftModel, prepare_model_for_kbit_training

    base = load_model(model, finetune)
    if finetune.method == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=finetune.gradient_checkpointing)
    return PeftModel.from_pretrained(base, str(previous), is_trainable=True)


def freeze_vision_tower(model) -> int:
    """Stop training every parameter of the vision tower and its merger; returns how many tensors were frozen.

    >>> import torch.nn as nn
    >>> m = nn.Module(); m.visual = nn.Linear(2, 2); m.lm_head = nn.Linear(2, 2)
    >>> freeze_vision_tower(m), [p.requires_grad for p in m.parameters()]
    (2, [False, False, True, True])
    """
    frozen = 0
    kept = vision_and_projector(family_of_config(getattr(model, "config", None)))
    for name, param in model.named_parameters():
        parts = name.split(".")
        if param.requires_grad and any(p in kept for p in parts):
            param.requires_grad = False
            frozen += 1
    return frozen


def release_memory() -> None:
    """Free a finished stage's model before the next one loads (two 8B copies do not fit)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_tuned(model: ModelSection, artifact: Path, finetune: FinetuneSection | None = None):
    """Load the base model with a run's adapter attached as `tuned`, ready to toggle for comparison, in eval
    mode and on the GPU when there is one.

    Returns a PeftModel: inside `with model.disable_adapter():` it answers as the base model, so base and
    tuned answers come from one copy of the weights. A full fine-tuned `model/` folder loads as is.
    """
    if not holds_adapter(artifact):
        from transformers import AutoModelForImageTextToText

        tuned = AutoModelForImageTextToText.from_pretrained(artifact, dtype=resolve_dtype(model.dtype))
    else:
        from peft import PeftModel

        base = load_model(model, finetune if finetune and finetune.method == "qlora" else None)
        tuned = PeftModel.from_pretrained(base, str(artifact), adapter_name="tuned")
    # 4-bit models are placed by device_map at load; everything else starts on CPU and moves here.
    if torch.cuda.is_available() and not getattr(tuned, "is_loaded_in_4bit", False):
        tuned = tuned.to("cuda")
    return tuned.eval()


def load_base_and_tuned(model: ModelSection, artifact: Path, finetune: FinetuneSection | None = None):
    """(tuned, base) for scoring both: with an adapter they are one object (the adapter switched off for base
    answers); a fully fine-tuned run needs a second copy of the base weights, on the same device."""
    tuned = load_tuned(model, artifact, finetune)
    if holds_adapter(artifact):
        return tuned, tuned
    return tuned, load_model(model).to(next(tuned.parameters()).device).eval()


def merge_adapter(model: ModelSection, adapter_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Merge a LoRA adapter into the base weights, save a standalone model (safetensors), and prove it.

    Checks that the merged weights differ from the base's where the adapter applies, and that the saved
    folder reloads with `from_pretrained`. The adapter folder is left as it is.
    """
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = load_model(model)
    base_weights = {k: v.detach().clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged_weights = merged.state_dict()
    changed = [k for k, v in merged_weights.items() if k in base_weights and not torch.equal(v, base_weights[k])]
    if not changed:
        raise RuntimeError(f"{adapter_dir}: merging changed no weight; the adapter is empty or was never trained")
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_processor(model).save_pretrained(out_dir)
    reloaded = AutoModelForImageTextToText.from_pretrained(out_dir, dtype=resolve_dtype(model.dtype))
    probe = changed[0]
    if not torch.allclose(reloaded.state_dict()[probe].float(), merged_weights[probe].float()):
        raise RuntimeError(f"{out_dir}: reloaded weights differ from the merged ones ({probe})")
    return {"out_dir": str(out_dir), "changed_tensors": len(changed), "checked_tensor": probe}


def load_run_model(run: RunDir, cfg, baseline: str | None = None, **processor_kwargs):
    """(tuned model, model for base answers, processor, artifact) of a run, for evaluation.

    The artifact is the run's newest weights: the final adapter/ or model/, else its latest checkpoint (with a
    note). With an adapter both models are the same object (the adapter is switched off for base answers); a
    fully fine-tuned run needs a second copy of the base weights. `baseline` names a finished stage of the run
    (`warm_start`, an SFT stage) whose weights answer in the base's place: what a later stage (DPO) started from,
    so the comparison shows what that stage added.
    """
    artifact = run.newest_weights()
    if artifact is None:
        raise ConfigError(f"{run.path}: no adapter/ or checkpoint yet; train first (state: {run.read_status()['state']})")
    if artifact != run.final_artifact():
        print(f"note: {run.id} has not finished; evaluating {artifact.relative_to(run.path)}", flush=True)
    if baseline:
        start = run.stage_artifact(baseline)
        if start is None:
            finished = run.finished_stages() or ["none"]
            raise ConfigError(f"{run.path}: no finished stage {baseline!r} to compare against (finished stages: "
                              f"{', '.join(finished)})")
        model = load_tuned(cfg.model, artifact, cfg.finetune)
        base = load_tuned(cfg.model, start, cfg.finetune)
    else:
        model, base = load_base_and_tuned(cfg.model, artifact, cfg.finetune)
    return model, base, load_processor(cfg.model, **processor_kwargs), artifact
