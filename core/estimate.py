"""Know before you launch: visual tokens, sequence length, parameters and peak GPU memory of a training config.

Nothing heavy is loaded and nothing is downloaded but, at most, a config.json: parameters are counted on an
empty (meta-device) model of the real architecture (`core.architectures`), and token counts follow the
processors' own arithmetic. Each recipe describes one training step as a `Workload` (its `estimate.py`);
this module turns it into memory, part by part:

* weights: bf16; QLoRA stores the language model's linear layers (`core.models.quantized_in_qlora`) in NF4 with double
  quantization (4.127 bits a weight) and, as `prepare_model_for_kbit_training` does, the rest in fp32;
* adapters and optimizer state: LoRA weights are fp32 (PEFT upcasts them), AdamW keeps two moments per
  trainable weight (fp32 for LoRA, the weights' dtype for full fine-tuning), 8-bit AdamW one byte each;
* gradients, one per trainable weight, alive through the accumulation steps;
* activations: a per-token, per-layer count of the tensors autograd keeps (sdpa attention, so no seq^2
  term), with gradient checkpointing only each layer's input plus one layer being recomputed;
* logits: the tokens whose logits are materialised, times the vocabulary, with the fp32 loss copies;
* GRPO generation: the cache of the whole generation batch (it is not alive during the backward), layer by layer:
  full attention keeps every token, a sliding window at most its window, linear attention a fixed-size state;
* a reference model when the KL term needs one (beta > 0 with full fine-tuning);
* runtime: CUDA context and allocator slack.

`steady_memory_gib` (weights, adapters and optimizer state) is what `torch.cuda.memory_allocated()` reads
between steps; `peak_memory_gib` is what must fit. The figures are calibrated against measured runs in
`bench/RESULTS.md`, and every training run logs the estimate next to the peak it measured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.config import OPTIMIZERS, FinetuneSection, ModelSection
from core.families import FAMILIES, VISION_PARTS, Family, family_of_config

GIB = 2**30
NF4_BYTES_PER_WEIGHT = 4.127 / 8  # 4-bit codes + 8-bit absmax per 64 weights + fp32 per 256 absmax blocks
RUNTIME_FIXED_GIB = 0.75  # CUDA context, cuBLAS workspaces
ALLOCATOR_SLACK = 0.08  # the caching allocator's fragmentation on top of live tensors
# Bytes of optimizer state per trainable weight, as a multiple of the weight's own bytes, for each optimizer a stage
# may pick (core.config.OPTIMIZERS): AdamW keeps two moments; None marks 8-bit AdamW (ADAM_8BIT_BYTES); plain SGD none.
OPTIMIZER_STATE = {name: None if "8bit" in name else 0.0 if name == "sgd" else 2.0 for name in OPTIMIZERS}
ADAM_8BIT_BYTES = 2.0  # two moments of one byte each, whatever the weight's dtype
MAX_COMBINED_CHANGES = 6  # advice beyond this many changes at once is no longer advice


@dataclass(frozen=True)
class DeviceTarget:
    """A machine a config is meant to fit on: its memory and the share of it to leave free."""

    name: str
    total_gib: float
    keep_free: float  # fraction of total that must stay free
    source: str

    @property
    def usable_gib(self) -> float:
        return self.total_gib * (1 - self.keep_free)


# Unified memory (DGX Spark) is shared with the OS: past ~80 % it thrashes rather than failing cleanly, so
# a fifth stays free (the vlm-ft project's lesson). A discrete GPU keeps 5 % for fragmentation.
DEVICE_TARGETS = {
    "dgx-spark": DeviceTarget("dgx-spark", 128e9 / GIB, 0.20, "DGX Spark: 128 GB unified memory, a fifth left to the OS"),
    "h100": DeviceTarget("h100", 79.6, 0.05, "H100 80 GB"),
    "h200": DeviceTarget("h200", 139.8, 0.05, "H200 141 GB"),
    "a100-80gb": DeviceTarget("a100-80gb", 79.2, 0.05, "A100 80 GB"),
    "l40s": DeviceTarget("l40s", 44.4, 0.05, "L40S 48 GB"),
    "rtx-4090": DeviceTarget("rtx-4090", 23.6, 0.05, "RTX 4090 24 GB"),
}
DEFAULT_TARGET = "dgx-spark"


class EstimateError(ValueError):
    """A config whose memory cannot be estimated (unknown architecture, offline): training is not affected."""


@dataclass(frozen=True)
class Workload:
    """One training step of a recipe, in tokens: what the memory arithmetic needs to know.

    Attributes:
        sequences: Sequences in one forward/backward (the micro-batch).
        prompt_tokens: Text tokens of one prompt, chat template included.
        visual_tokens: Image or video tokens of one sample, after the projector.
        answer_tokens: Completion (GRPO) or label (SFT) tokens of one sample.
        vision_patches: Patches one sample sends through the vision tower.
        logits_tokens: Tokens per sequence whose logits are materialised for the loss.
        generated_sequences: Sequences generated at once (GRPO rollouts); 0 for SFT.
        reference_model: A separate frozen copy is kept for the KL term.
        notes: How the counts were obtained, for the table.
    """

    sequences: int
    prompt_tokens: int
    visual_tokens: int
    answer_tokens: int
    vision_patches: int
    logits_tokens: int
    generated_sequences: int = 0
    reference_model: bool = False
    notes: tuple[str, ...] = ()

    @property
    def sequence_tokens(self) -> int:
        return self.prompt_tokens + self.visual_tokens + self.answer_tokens


@dataclass
class Estimate:
    params_total: int
    params_trainable: int
    visual_tokens_per_sample: int
    sequence_tokens: int
    parts_gib: dict[str, float]
    steady_memory_gib: float
    peak_memory_gib: float
    device: DeviceTarget
    method: str
    notes: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def headroom_gib(self) -> float:
        return self.device.usable_gib - self.peak_memory_gib

    @property
    def fits(self) -> bool:
        return self.headroom_gib >= 0

    def to_json(self) -> dict[str, Any]:
        return {
            "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "visual_tokens_per_sample": self.visual_tokens_per_sample,
            "sequence_tokens": self.sequence_tokens,
            "peak_memory_gib": round(self.peak_memory_gib, 2),
            "steady_memory_gib": round(self.steady_memory_gib, 2),
            "parts_gib": {name: round(value, 3) for name, value in self.parts_gib.items()},
            "device": self.device.name,
            "device_memory_gib": round(self.device.total_gib, 1),
            "usable_memory_gib": round(self.device.usable_gib, 1),
            "device_source": self.device.source,
            "fits": self.fits,
            "headroom_gib": round(self.headroom_gib, 2),
            "method": self.method,
            "notes": self.notes,
            "advice": self.advice,
        }


# ---------------------------------------------------------------------------------------------- tokens


def family_of_architecture(model: ModelSection, config) -> Family:
    """The family row whose visual-token arithmetic the estimate uses, or an EstimateError for a model outside the
    table (it still trains: only the estimate needs the row)."""
    family = family_of_config(config)
    if family is None:
        known = ", ".join(f.title for f in FAMILIES)
        raise EstimateError(
            f"{model.name}: model type {getattr(config, 'model_type', '?')!r} is not in the family table ({known}), so "
            "the estimate cannot be made for it; training still works through transformers' Auto classes"
        )
    return family


def approximate_text_tokens(text: str) -> int:
    """Tokens of English text for a 150k-vocabulary BPE (Qwen2.5's): about four characters a token.

    >>> approximate_text_tokens("x" * 400)
    100
    """
    return math.ceil(len(text) / 4)


# ---------------------------------------------------------------------------------------------- devices


def device_target(name: str | None, model: ModelSection) -> DeviceTarget:
    """The memory a config must fit in: a named target or GiB given here, else the `max_memory_gb` cap (or this
    machine's GPU where that has less), else this machine's GPU, else the DGX Spark.

    >>> device_target("40", ModelSection()).total_gib
    40.0
    >>> device_target(None, ModelSection(max_memory_gb=100)).source
    'model.max_memory_gb cap'
    """
    if name:
        if name in DEVICE_TARGETS:
            return DEVICE_TARGETS[name]
        try:
            return DeviceTarget(f"{float(name):g} GiB", float(name), 0.0, "given on the command line")
        except ValueError:
            raise EstimateError(f"unknown device {name!r}; use GiB (e.g. 80) or one of {', '.join(DEVICE_TARGETS)}") from None
    gpu = this_machines_gpu()
    cap = model.max_memory_gb
    if cap and gpu is not None and cap > gpu.total_gib:
        # A cap above the GPU limits nothing: the shipped presets' 100 GiB is for a 128 GB Spark, not an 80 GB H100.
        return DeviceTarget(gpu.name, gpu.total_gib, gpu.keep_free, f"this machine's GPU (below the max_memory_gb cap of {cap:g} GiB)")
    if cap:
        return DeviceTarget(f"{cap:g} GiB cap", cap, 0.0, "model.max_memory_gb cap")
    return gpu or DEVICE_TARGETS[DEFAULT_TARGET]


def this_machines_gpu() -> DeviceTarget | None:
    """The CUDA GPU training would use, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return DeviceTarget(props.name, props.total_memory / GIB, 0.05, "this machine's GPU")


# ---------------------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class _Shapes:
    hidden: int
    kv: int
    intermediate: int
    layers: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int


def _shapes(config) -> _Shapes:
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    # Gemma 4 sets head sizes per layer (its global layers differ): the first layer's stand for the activations,
    # and the cache reads each layer's own (`attention_cache_widths`).
    layer = text.per_layer_config[0] if getattr(text, "per_layer_config", None) is not None else text
    head_dim = getattr(layer, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(layer, "num_key_value_heads", None) or text.num_attention_heads
    vision_layers = getattr(vision, "depth", None) or getattr(vision, "num_hidden_layers", 0)
    return _Shapes(
        hidden=text.hidden_size,
        kv=kv_heads * head_dim,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        vision_hidden=getattr(vision, "hidden_size", 0),
        vision_intermediate=getattr(vision, "intermediate_size", 0),
        vision_layers=vision_layers,
    )


def _weights(model, finetune: FinetuneSection, dtype_bytes: float) -> tuple[float, int, int, list[str]]:
    """(weight bytes, total params, trainable params, LoRA target names) of an empty model."""
    import torch

    from core.models import lora_target_modules, quantized_in_qlora

    quantized: set[int] = set()
    if finetune.method == "qlora":  # the language model's linear layers, as the loader asks bitsandbytes
        family = family_of_config(model.config)
        quantized = {
            id(m.weight)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and quantized_in_qlora(name, family)
        }
    seen: set[int] = set()
    weight_bytes = 0.0
    total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if id(param) in quantized:
            weight_bytes += param.numel() * NF4_BYTES_PER_WEIGHT
        else:
            weight_bytes += param.numel() * (4 if finetune.method == "qlora" else dtype_bytes)
    if finetune.method == "full":
        return weight_bytes, total, total, []
    targets = lora_target_modules(model, finetune)
    modules = dict(model.named_modules())
    trainable = sum(finetune.r * (modules[n].in_features + modules[n].out_features) for n in targets)
    return weight_bytes, total, trainable, targets


# A language layer's key and value projections, by the names every family's text tower gives them.
KV_PROJECTION = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|attention|attn)\.([kv])_proj$")


def attention_cache_widths(empty) -> dict[int, int]:
    """{language layer index: values one token adds to its cache (keys plus values)}, read from the meta model's
    projections, so per-layer head sizes (Gemma 4's global layers) and shared keys and values count as built."""
    widths: dict[int, dict[str, int]] = {}
    for name, module in empty.named_modules():
        found = KV_PROJECTION.search(name)
        if found and not any(part in VISION_PARTS for part in name.split(".")):
            widths.setdefault(int(found.group(1)), {})[found.group(2)] = module.out_features
    # A layer whose values are its keys (Gemma 4's attention_k_eq_v) caches both all the same.
    return {index: kv["k"] + kv.get("v", kv["k"]) for index, kv in widths.items() if "k" in kv}


def linear_attention_state_bytes(text, dtype_bytes: int) -> float:
    """One linear-attention layer's fixed state for one sequence, whatever its length (Qwen3.5's Gated DeltaNet): a
    key x value matrix per value head, kept in fp32 by the kernels, and the short convolution's last inputs."""
    key_dim = text.linear_num_key_heads * text.linear_key_head_dim
    value_dim = text.linear_num_value_heads * text.linear_value_head_dim
    recurrent = text.linear_num_value_heads * text.linear_key_head_dim * text.linear_value_head_dim * 4
    convolution = (2 * key_dim + value_dim) * text.linear_conv_kernel_dim * dtype_bytes
    return recurrent + convolution


def generation_cache_bytes(config, empty, tokens: int, dtype_bytes: int) -> float:
    """Bytes one generated sequence of `tokens` tokens keeps in its cache, layer by layer: a full-attention layer
    caches every token, a sliding-window layer at most its window, a linear-attention layer a fixed-size state, and
    a layer that reuses an earlier layer's keys and values (Gemma's `num_kv_shared_layers`) nothing of its own."""
    text = getattr(config, "text_config", config)
    layer_types = list(getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers)
    widths = attention_cache_widths(empty)
    fallback = 2 * _shapes(config).kv
    owners = len(layer_types) - (getattr(text, "num_kv_shared_layers", 0) or 0)
    window = getattr(text, "sliding_window", None)
    total = 0.0
    for index, kind in enumerate(layer_types[:owners]):
        if kind == "linear_attention":
            total += linear_attention_state_bytes(text, dtype_bytes)
            continue
        span = min(tokens, window) if kind == "sliding_attention" and window else tokens
        total += span * widths.get(index, fallback) * dtype_bytes
    return total


def mixture_of_experts(config) -> tuple[int, int] | None:
    """(experts, experts each token uses) of a mixture-of-experts text tower, None for a dense one."""
    text = getattr(config, "text_config", config)
    experts = next((getattr(text, key) for key in ("num_experts", "num_local_experts", "n_routed_experts")
                    if getattr(text, key, None)), None)
    if not experts or getattr(text, "enable_moe_block", True) is False:
        return None
    used = next((getattr(text, key) for key in ("num_experts_per_tok", "top_k_experts", "num_experts_per_token")
                 if getattr(text, key, None)), None)
    return experts, used or 1


def active_parameters(empty, experts: int, used: int) -> tuple[int, int]:
    """(total, active per token) parameters of a mixture-of-experts meta model: a token runs `used` of the
    `experts` experts' weights (every parameter under an `experts` module) and all of the rest."""
    total = expert = 0
    for name, param in empty.named_parameters():
        total += param.numel()
        if "experts" in name.split("."):
            expert += param.numel()
    return total, round(total - expert * (1 - used / experts))


def refuse_mixture_of_experts(model: ModelSection, config, empty) -> None:
    """An EstimateError, in one line, for a mixture-of-experts model: its parameters are counted (total and active),
    but what routing keeps alive per step is not modelled, so no memory figure is given."""
    moe = mixture_of_experts(config)
    if moe is None:
        return
    total, active = active_parameters(empty, *moe)
    raise EstimateError(
        f"{model.name} is a mixture of experts ({moe[0]} experts, {moe[1]} per token): {human_count(total)} "
        f"parameters in all, about {human_count(active)} active per token; the estimate does not model expert "
        "routing's memory, so it gives no memory figure for it (training is not affected)"
    )


def known_architecture(model: ModelSection):
    """The model's architecture config (no weights), or an EstimateError saying what to download or set."""
    from core.architectures import UnknownArchitecture, architecture_config

    try:
        return architecture_config(model.name, model.revision)
    except UnknownArchitecture as err:
        raise EstimateError(str(err)) from None


def empty_model(model: ModelSection, config):
    """The meta-device model of `config`, or an EstimateError saying why it cannot be built."""
    from core.architectures import meta_model

    try:
        return meta_model(config)
    except (ValueError, KeyError, OSError) as err:
        raise EstimateError(f"{model.name}: this architecture cannot be built on the meta device ({err})") from None


def estimate_memory(
    model: ModelSection,
    finetune: FinetuneSection,
    optim: str,
    workload: Workload,
    device: DeviceTarget,
    config=None,
    empty=None,
) -> Estimate:
    """Parameters and memory, part by part, of training `model` with `finetune` on `workload`; `empty` is the
    architecture's meta-device model when the caller already built it (nothing here changes it)."""
    config = config if config is not None else known_architecture(model)
    empty = empty if empty is not None else empty_model(model, config)
    dtype_bytes = 4 if model.dtype == "float32" else 2  # `auto` is bf16 on the GPU this estimates for
    full = finetune.method == "full"
    precision_note = None
    if full and dtype_bytes == 2 and finetune.full_precision == "fp32_master_weights":
        dtype_bytes = 4  # fp32 weights and gradients under bf16 autocast
        precision_note = "full fine-tuning keeps fp32 master weights (bf16 autocast): exact updates, ~16 bytes a weight"
    elif full and dtype_bytes == 2 and model.dtype != "float16":
        optim = "adamw_8bit"  # what full_update_arguments trains with: 8-bit AdamW, bf16 stochastic rounding
        precision_note = "full fine-tuning in bf16: 8-bit AdamW with stochastic rounding keeps small updates, ~6 bytes a weight"
    weight_bytes, total, trainable, targets = _weights(empty, finetune, dtype_bytes)
    shapes = _shapes(config)

    trainable_bytes = dtype_bytes if full else 4  # PEFT keeps LoRA weights in fp32
    state = OPTIMIZER_STATE.get(optim, 2.0)
    optimizer_bytes = trainable * (ADAM_8BIT_BYTES if state is None else state * trainable_bytes)
    gradient_bytes = trainable * trainable_bytes
    adapter_bytes = 0 if full else trainable * trainable_bytes

    # Activations. The hidden stream is fp32 under QLoRA (the upcast embedding feeds every layer).
    act = 4 if finetune.method == "qlora" else dtype_bytes
    tokens = workload.sequences * workload.sequence_tokens
    h, kv, i = shapes.hidden, shapes.kv, shapes.intermediate
    per_layer = 6 * h + 2 * kv + 4 * i  # norms, q/k/v, sdpa output, residual, gate/up/act/product
    if not full and finetune.dropout > 0:  # each adapted layer keeps its own dropped-out input
        modules = dict(empty.named_modules())
        per_layer += sum(modules[n].in_features for n in targets) // shapes.layers
    stored = shapes.layers * h if finetune.gradient_checkpointing else shapes.layers * per_layer
    recompute = 2 * per_layer if finetune.gradient_checkpointing else 0  # one layer and its gradients
    language_activations = tokens * (stored + recompute) * act
    vision_trained = full or finetune.vision_attention or finetune.vision_mlp
    patches = workload.sequences * workload.vision_patches
    vision_per_layer = 6 * shapes.vision_hidden + 4 * shapes.vision_intermediate
    if vision_trained:
        vision_layers = 2 if finetune.gradient_checkpointing else shapes.vision_layers
        vision_activations = patches * vision_per_layer * vision_layers * dtype_bytes
    else:  # frozen: nothing is kept, only one layer's working set while it runs
        vision_activations = patches * vision_per_layer * dtype_bytes
    logits_dtype = 4 if finetune.method == "qlora" else dtype_bytes
    logits = workload.sequences * workload.logits_tokens * shapes.vocab * (logits_dtype + 8)  # + fp32 copy, log-softmax

    generation = 0.0
    if workload.generated_sequences:
        kv_cache = workload.generated_sequences * generation_cache_bytes(config, empty, workload.sequence_tokens, dtype_bytes)
        generation = kv_cache + workload.generated_sequences * shapes.vocab * 4 * 2  # last-token logits, fp32
    reference = weight_bytes if workload.reference_model and full else 0.0

    parts = {
        "weights": weight_bytes,
        "adapters" if not full else "master weights": adapter_bytes,
        "optimizer state": optimizer_bytes,
        "gradients": gradient_bytes,
        "activations": language_activations + vision_activations,
        "logits and loss": logits,
        "generation KV cache": generation,
        "reference model": reference,
    }
    if full:
        parts.pop("master weights")  # bf16 weights are updated in place: no separate copy today
    steady = weight_bytes + adapter_bytes + optimizer_bytes + reference
    step = gradient_bytes + parts["activations"] + logits
    live = steady + max(step, generation)
    runtime = RUNTIME_FIXED_GIB * GIB + ALLOCATOR_SLACK * live
    parts["runtime"] = runtime
    notes = list(workload.notes) + ([precision_note] if precision_note else [])
    if not finetune.gradient_checkpointing:
        with_checkpointing = tokens * (shapes.layers * h + 2 * per_layer) * act
        notes.append(f"gradient checkpointing would keep {with_checkpointing / GIB:.1f} GiB of activations instead of {language_activations / GIB:.1f}")
    if workload.reference_model and not full:
        notes.append("the KL reference is the base model with the adapter switched off: no second copy")
    return Estimate(
        params_total=total,
        params_trainable=trainable,
        visual_tokens_per_sample=workload.visual_tokens,
        sequence_tokens=workload.sequence_tokens,
        parts_gib={name: value / GIB for name, value in parts.items()},
        steady_memory_gib=steady / GIB,
        peak_memory_gib=(live + runtime) / GIB,
        device=device,
        method=finetune.method,
        notes=notes,
    )


def estimate_config(
    cfg,
    workload: Callable[[Any, Any], Workload],
    fixes: Callable[[Any], Iterable[str]],
    device: str | None = None,
    with_advice: bool = True,
) -> Estimate:
    """A recipe config's estimate: `workload(cfg, architecture)` describes its step, `fixes(cfg)` the changes
    to try when it does not fit (the advice)."""
    architecture = known_architecture(cfg.model)
    empty = empty_model(cfg.model, architecture)  # built once: every candidate of the advice shares it
    refuse_mixture_of_experts(cfg.model, architecture, empty)  # before the family: a MoE id may be outside the table
    target = device_target(device, cfg.model)

    def one(c) -> Estimate:
        return estimate_memory(c.model, c.finetune, c.train.optim, workload(c, architecture), target, architecture, empty)

    result = one(cfg)
    if with_advice and not result.fits:
        result.advice = advise(cfg, one, lambda c: [*model_fixes(c), *fixes(c)], target.usable_gib)
    return result


def model_fixes(cfg) -> list[str]:
    """The changes to the model section worth trying in any recipe: fp32 weights (a tiny preset's, on CPU) in bf16,
    which halves weights, gradients and activations.

    >>> from types import SimpleNamespace as NS
    >>> model_fixes(NS(model=ModelSection(dtype="float32"))), model_fixes(NS(model=ModelSection()))
    (['model.dtype=bfloat16'], [])
    """
    return ["model.dtype=bfloat16"] if cfg.model.dtype == "float32" else []


# ---------------------------------------------------------------------------------------------- advice


def advise(cfg, estimate_cfg: Callable[[Any], Estimate], fixes: Callable[[Any], Iterable[str]], usable_gib: float) -> list[str]:
    """What to change so that the config fits: each single `key=value` change from `fixes(cfg)` that is enough
    on its own, largest peak first; when none is, the shortest run of changes, each the biggest saving left.

    Changes that do not validate (a batch that no longer divides the generations, say) are left out.
    """
    from core.config import ConfigError, deep_merge, parse_overrides, validate_config

    def options(base) -> list[tuple[float, str, Any]]:
        found = []
        for override in dict.fromkeys(fixes(base)):
            try:
                new = validate_config(type(base), deep_merge(base.model_dump(), parse_overrides([override])))
            except ConfigError:
                continue
            if new != base:
                found.append((estimate_cfg(new).peak_memory_gib, override, new))
        return found

    singles = options(cfg)
    fitting = sorted(((peak, override) for peak, override, _ in singles if peak <= usable_gib), reverse=True)
    if fitting:
        return [f"{override} (peak {peak:.1f} GiB)" for peak, override in fitting]
    combined, applied = cfg, []
    for _ in range(MAX_COMBINED_CHANGES):
        choices = options(combined)
        if not choices:
            break
        peak, override, combined = min(choices, key=lambda choice: choice[0])
        applied.append(override)
        if peak <= usable_gib:
            final = {change.partition("=")[0]: change for change in applied}  # a key halved twice: its last value
            return [f"{' '.join(final.values())} together (peak {peak:.1f} GiB)"]
    return []


# ---------------------------------------------------------------------------------------------- output


def human_count(n: int) -> str:
    """
    >>> [human_count(n) for n in (8_292_166_656, 80_740_352, 329_952, 12)]
    ['8.29 B', '80.7 M', '330.0 K', '12']
    """
    for scale, unit, digits in ((1e9, "B", 2), (1e6, "M", 1), (1e3, "K", 1)):
        if n >= scale:
            return f"{n / scale:,.{digits}f} {unit}"
    return str(n)


def format_table(estimate: Estimate) -> str:
    """The human form: counts, then memory part by part, then the verdict."""
    lines = [
        f"parameters        {human_count(estimate.params_total)} total, {human_count(estimate.params_trainable)} trainable ({estimate.method})",
        f"visual tokens     {estimate.visual_tokens_per_sample:,} per sample",
        f"sequence tokens   {estimate.sequence_tokens:,} per sample (prompt + visual + answer budget)",
        "memory (GiB)",
    ]
    for name, value in estimate.parts_gib.items():
        if value > 0:
            lines.append(f"  {name:<20} {value:8.2f}")
    lines.append(f"  {'peak':<20} {estimate.peak_memory_gib:8.2f}   (between steps: {estimate.steady_memory_gib:.2f})")
    lines.append(
        f"device            {estimate.device.name}: {estimate.device.total_gib:.1f} GiB, "
        f"{estimate.device.usable_gib:.1f} usable ({estimate.device.source})"
    )
    verdict = "fits" if estimate.fits else "does NOT fit"
    lines.append(f"verdict           {verdict}, headroom {estimate.headroom_gib:+.1f} GiB")
    lines += [f"note              {note}" for note in estimate.notes]
    return "\n".join(lines)


def summary_line(estimate: Estimate) -> str:
    """One line for the training log."""
    return (
        f"estimate: peak {estimate.peak_memory_gib:.1f} GiB of {estimate.device.usable_gib:.1f} usable on "
        f"{estimate.device.name} ({'fits' if estimate.fits else 'does not fit'}); "
        f"{human_count(estimate.params_trainable)} of {human_count(estimate.params_total)} parameters trained; "
        f"{estimate.sequence_tokens:,} tokens per sample, {estimate.visual_tokens_per_sample:,} visual"
    )


def does_not_fit_line(estimate: Estimate) -> str:
    """The exit-3 line: how far over, and what to change."""
    if estimate.advice:
        fix = "set " + " or ".join(estimate.advice)
    else:
        fix = "no small change is enough: use a machine with more memory, or fewer trainable layers and shorter samples"
    return (
        f"does not fit: peak {estimate.peak_memory_gib:.1f} GiB > {estimate.device.usable_gib:.1f} GiB usable on "
        f"{estimate.device.name}. To fit, {fix}"
    )


# ---------------------------------------------------------------------------------------------- prompts

TEMPLATE_TOKENS_PER_MESSAGE = 5  # <|im_start|>role\n ... <|im_end|>\n


def message_text(messages: list[dict[str, Any]]) -> str:
    """The text parts of chat messages, in order (images and videos are counted separately)."""
    parts = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [part["text"] for part in content if part.get("type") == "text"]
    return "\n".join(parts)


def prompt_tokens(model: ModelSection, messages: list[dict[str, Any]]) -> tuple[int, str]:
    """(tokens of a text-only prompt with its chat template, how they were counted).

    The model's own tokenizer when it is on this machine (tiny models, a local folder, the HF cache);
    otherwise about four characters a token, which the note says.
    """
    text = message_text(messages)
    template = TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + 3  # + the assistant turn's opening
    try:
        from transformers import AutoTokenizer

        from core.tiny import TINY_PREFIX, resolve_model_name

        local = {} if model.name.startswith(TINY_PREFIX) else {"local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(model.name), revision=model.revision, **local)
    except (OSError, ValueError):
        return approximate_text_tokens(text) + template, "prompt tokens approximated at 4 characters a token (tokenizer not on this machine)"
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + template, "prompt tokens counted with the model's tokenizer"
