"""GRPO step throughput: the product's defaults against the reference playbook's settings, plus the speed levers.

    python bench/grpo_step.py --tiny        # CPU, tiny random Qwen2.5-VL, ~1 min
    python bench/grpo_step.py               # CUDA: Qwen2.5-VL-7B architecture, random bf16 weights, 350x350 images

Every variant builds its trainer exactly as `image_vlm/train.py` does: `load_model`/`apply_finetune` from
core.models (full size: the published architecture with random weights, then the same `apply_finetune`),
`image_vlm.task.training_dataset` on the synthetic tiles of `image_vlm.synthetic`, the recipe's rewards wrapped
by `RolloutRecorder`, `image_vlm.train.grpo_arguments(cfg, run)` on a temporary run folder, and TRL's
GRPOTrainer. Variants differ only in config overrides, most through `train.trainer`, the pass-through the product
offers its users.

Random weights never emit an end-of-sequence token and do not follow the answer format, so completions are fixed
at `--completion-length` tokens (`min_new_tokens` = `max_new_tokens` through `generation_kwargs`); every variant
generates and trains on the same number of tokens per completion. Rewards are therefore all zero; that changes
no cost.

Figures per variant: completions per second, seconds per optimizer step split into generation (TRL's
`_generate`), scoring (the rest of `_generate_and_score_completions`: reference/old log-prob passes and rewards)
and training (loss forward/backward and the optimizer step), and peak GPU memory. The headline ratio is the
default's completions/s over the playbook-equivalent's, both measured in this run.
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common

NAME = "grpo_step"

# The reference playbook (DGX Spark "vlm-finetuning", ui_image/src/train_image_vlm.py and image_vlm_config.yaml):
# batch 4 with 2 generations per prompt and no accumulation, max_prompt_length = max_completion_length = 16384
# (max_seq_length), LoRA r=32/alpha=64/dropout 0.05 on vision AND language attention+MLP, Unsloth gradient
# checkpointing, adamw_torch lr 1e-5 cosine with 10% warm-up, weight decay 0.1, max_grad_norm 0.1,
# loss_type dr_grpo with sequence-level importance sampling, mask_truncated_completions False (its 10 % warm-up
# ratio is left out: transformers 5 dropped `warmup_ratio`, and the learning rate costs nothing). Its training log
# reports a `kl` metric, so the KL term was on: beta 0.04, TRL's default at the time (today's default is 0.0).
# TRL 1.16 has no max_prompt_length; the playbook's ~200-token prompts were never truncated by it anyway.
PLAYBOOK_OVERRIDES: dict[str, Any] = {
    "model": {"max_memory_gb": None},
    "finetune": {
        "method": "lora",
        "r": 32,
        "alpha": 64,
        "dropout": 0.05,
        "vision_attention": True,
        "vision_mlp": True,
        "language_attention": True,
        "language_mlp": True,
        "gradient_checkpointing": True,
    },
    "train": {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_generations": 2,
        "max_completion_length": 16384,
        "learning_rate": 1.0e-5,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "optim": "adamw_torch",
        "beta": 0.04,
        "loss_type": "dr_grpo",
        "trainer": {
            "importance_sampling_level": "sequence",
            "mask_truncated_completions": False,
            "max_grad_norm": 0.1,
            "weight_decay": 0.1,
            "adam_beta1": 0.9,
            "adam_beta2": 0.99,
        },
    },
}


@dataclass
class Variant:
    name: str
    description: str
    base: str = "default"  # "default" (the product's YAML) or "playbook"
    overrides: dict[str, Any] = field(default_factory=dict)
    modules: tuple[str, ...] = ()  # Python modules the variant needs
    cuda: bool = False  # needs a CUDA GPU


VARIANTS = (
    Variant("playbook", "reference playbook settings (baseline): batch 4 x 2 generations, dr_grpo + KL, vision+language LoRA", base="playbook"),
    Variant("default", "product defaults: image_vlm/configs/qwen2_5_vl_7b_grpo.yaml"),
    Variant(
        "default/gen-per-microbatch",
        "generation not batched across the step: steps_per_generation=1, one generate() per micro-batch",
        overrides={"train": {"trainer": {"steps_per_generation": 1}}},
    ),
    Variant(
        "default/static-kv-cache",
        "pre-allocated static KV cache for generation (cache_implementation=static)",
        overrides={"train": {"trainer": {"cache_implementation": "static"}}},
    ),
    Variant(
        "default/no-grad-ckpt",
        "gradient checkpointing off (finetune.gradient_checkpointing=false)",
        overrides={"finetune": {"gradient_checkpointing": False}},
    ),
    Variant(
        "default/liger",
        "Liger Triton kernels (use_liger_kernel=true)",
        overrides={"train": {"trainer": {"use_liger_kernel": True}}},
        modules=("liger_kernel",),
        cuda=True,
    ),
    Variant(
        "default/flash-attn-2",
        "FlashAttention-2 instead of SDPA (model.attn_implementation=flash_attention_2)",
        overrides={"model": {"attn_implementation": "flash_attention_2"}},
        modules=("flash_attn",),
        cuda=True,
    ),
    Variant(
        "default/vllm-colocate",
        "rollouts by vLLM sharing the training GPU (train.use_vllm=true: colocate mode, 0.3 of the GPU's memory)",
        overrides={"train": {"use_vllm": True, "vllm_gpu_memory_utilization": 0.3}},
        modules=("vllm",),
        cuda=True,
    ),
)

# What the default config does with each lever, and why (also written to the JSON and bench/RESULTS.md).
LEVERS = {
    "batched generation": (
        "on",
        "TRL generates the whole optimizer step's completions (batch x accumulation = 8) in one generate() call "
        "(steps_per_generation defaults to gradient_accumulation_steps); decoding is memory-bound, so 8 sequences "
        "cost little more than 4.",
    ),
    "KV cache": (
        "dynamic (transformers' default)",
        "a static cache only pays off under torch.compile, which TRL disables for generation (disable_compile=True); "
        "the static-kv-cache row measures it.",
    ),
    "gradient checkpointing": (
        "on",
        "keeps activations of 8 x (prompt + 256) tokens through 28 layers out of memory so the 7B fits in the "
        "40 GiB target and in a DGX Spark's shared memory; the no-grad-ckpt row measures its cost.",
    ),
    "Liger kernels": (
        "off",
        "liger-kernel is only in the optional `gpu` extra, and TRL 1.16 already computes log-probs through a chunked "
        "fused LM head (the large-vocabulary part Liger would fuse); the liger row measures it where installed.",
    ),
    "vLLM colocate": (
        "off",
        "vLLM is not a dependency: every vLLM release TRL 1.16 supports (0.22-0.31) pins torch 2.11.0 or 2.13.0, "
        "not the project's 2.15.0; colocate mode also needs the weights on disk and re-syncs merged LoRA weights "
        "each step. The row runs where vLLM and CUDA are present, through the product's train.use_vllm.",
    ),
    "KL reference pass": (
        "off (beta 0.0)",
        "the playbook's beta 0.04 costs an extra forward pass per step through the adapter-disabled model; recent "
        "GRPO practice (DAPO, Dr. GRPO) drops the KL term.",
    ),
}

COLUMNS = (
    ("variant", "variant"),
    ("status", "status"),
    ("completions_per_step", "compl/step"),
    ("step_s", "s/step"),
    ("completions_per_s", "compl/s"),
    ("gen_s", "gen s"),
    ("score_s", "score s"),
    ("train_s", "train s"),
    ("gen_share", "gen share"),
    ("peak_gib", "peak GiB"),
    ("estimated_peak_gib", "estimate GiB"),
    ("vs_playbook", "x playbook"),
)


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=None, help="measured optimizer steps per variant (default: 1 tiny, 3 full)")
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps run first and not measured (default: 1)")
    parser.add_argument("--completion-length", type=int, default=None, help="tokens per completion (default: 16 tiny, 256 full)")
    parser.add_argument("--image-size", type=int, default=None, help="synthetic tile side in pixels (default: 64 tiny, 350 full)")
    parser.add_argument("--variants", nargs="*", default=None, help="run only these variants (the playbook baseline always runs)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (1 if args.tiny else 3)
    args.completion_length = args.completion_length or (16 if args.tiny else 256)
    args.image_size = args.image_size or (64 if args.tiny else 350)
    return args


# ---------------------------------------------------------------------------------------------- configs


def variant_config(variant: Variant, args, data_root: Path, suppress_ids: list[int]):
    """The validated ImageConfig a variant trains with: the product's YAML (or the playbook's settings) plus overrides."""
    from core.config import deep_merge, read_yaml, validate_config
    from image_vlm.config import ImageConfig
    from image_vlm.train import DEFAULT_CONFIG

    data = read_yaml(common.REPO_ROOT / DEFAULT_CONFIG)
    if variant.base == "playbook":
        data = deep_merge(data, PLAYBOOK_OVERRIDES)
    data = deep_merge(data, copy.deepcopy(variant.overrides))
    length = args.completion_length
    bench = {
        "model": {"name": "tiny:qwen2_5_vl"} if args.tiny else {},
        # Tiny: batches in the training process. Worker processes cost nothing to the measured steps, but each
        # variant's loader then waits out DataLoader's 5 s join timeout when it is freed (measured: ~5 s a row).
        "data": {"root": str(data_root), "synthetic": False, "max_train_samples": None, **({"num_workers": 0} if args.tiny else {})},
        "logging": {"report_to": "none", "logging_steps": 1, "save_steps": 1_000_000},
        "train": {
            "max_steps": args.warmup + args.steps,
            "warmup_steps": 0,
            "seed": args.seed,
            "trainer": {
                # Fixed-length completions: random weights never stop on their own. The vision special tokens
                # are suppressed too (TRL only suppresses the image token) so a sampled <|vision_start|> cannot
                # make the next forward pass look for a picture.
                "generation_kwargs": {"min_new_tokens": length, "max_new_tokens": length, "suppress_tokens": suppress_ids},
            },
        },
    }
    data = deep_merge(data, bench)
    return validate_config(ImageConfig, data, source=f"variant {variant.name}")


def suppressed_token_ids(processor) -> list[int]:
    tokenizer = processor.tokenizer
    names = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
    return sorted({tokenizer.convert_tokens_to_ids(name) for name in names})


# ---------------------------------------------------------------------------------------------- one variant


def build_model(cfg, args):
    """The policy as train.py builds it; full size = the published architecture with random bf16 weights on the GPU."""
    import torch

    from core.models import apply_finetune, load_model

    torch.manual_seed(args.seed)
    if args.tiny:
        base = load_model(cfg.model, cfg.finetune)
    else:
        from transformers import Qwen2_5_VLForConditionalGeneration

        attn = None if cfg.model.attn_implementation == "auto" else cfg.model.attn_implementation
        base = common.build_random_model(Qwen2_5_VLForConditionalGeneration, args.full_config, attn_implementation=attn)
        if args.vllm_model_dir is not None:
            base.name_or_path = str(args.vllm_model_dir)
            base.config._name_or_path = str(args.vllm_model_dir)
    return apply_finetune(base, cfg.finetune)


def run_variant(variant: Variant, args, processor, data_root: Path, work: Path) -> dict[str, Any]:
    """Train `warmup + steps` optimizer steps and return the measured row."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from core.callbacks import RunMetricsCallback
    from core.metrics import RolloutRecorder
    from core.runs import RunDir
    from image_vlm.rewards import completion_text, get_reward
    from image_vlm.task import training_dataset
    from image_vlm.train import grpo_arguments

    cfg = variant_config(variant, args, data_root, suppressed_token_ids(processor))
    run = RunDir(work / variant.name.replace("/", "-"))
    model = build_model(cfg, args)
    dataset = training_dataset(cfg.data, cfg.data.train_split, cfg.data.max_train_samples)
    rewards = RolloutRecorder(run, [get_reward(name) for name in cfg.rewards.weights], completion_text)

    marks: list[float] = []  # [start of the first step, end of step 1, end of step 2, ...]

    class StepClock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kwargs):
            if not marks:
                marks.append(common.now())

        def on_step_end(self, a, state, control, **kwargs):
            marks.append(common.now())

    common.reset_peak_memory()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards.wrapped(),
        args=common.quiet(grpo_arguments(cfg, run)),
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[RunMetricsCallback(run), StepClock()],
    )
    common.remove_printer(trainer)
    generate_calls: list[tuple[float, float]] = []
    rollout_calls: list[tuple[float, float]] = []
    common.wrap_timed(trainer, "_generate", generate_calls)
    common.wrap_timed(trainer, "_generate_and_score_completions", rollout_calls)
    common.reset_peak_memory()
    trainer.train()
    peak = common.peak_gpu_memory_gib()
    reserved = common.peak_gpu_reserved_gib()

    t = cfg.train
    steps_per_generation = trainer.args.steps_per_generation
    completions_per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    measured = marks[1 + args.warmup :]
    start = marks[args.warmup]
    steps = [b - a for a, b in zip([start, *measured[:-1]], measured)]
    window = (start, measured[-1]) if measured else (0.0, 0.0)

    def inside(calls):
        return sum(seconds for begin, seconds in calls if window[0] <= begin < window[1])

    total = sum(steps)
    gen = inside(generate_calls)
    rollout = inside(rollout_calls)
    n = max(len(steps), 1)
    row = {
        "variant": variant.name,
        "status": "ok",
        "description": variant.description,
        "completions_per_step": completions_per_step,
        "generate_calls_per_step": completions_per_step // (t.per_device_train_batch_size * steps_per_generation),
        "measured_steps": len(steps),
        "step_s": total / n,
        "step_s_each": steps,
        "completions_per_s": completions_per_step * len(steps) / total if total else None,
        "gen_s": gen / n,
        "score_s": (rollout - gen) / n,
        "train_s": (total - rollout) / n,
        "gen_share": gen / total if total else None,
        "peak_gib": peak,
        "peak_reserved_gib": reserved,
        **common.estimated_memory("image_vlm.estimate", cfg, peak),
        "trainable_parameters": common.trainable_parameters(model),
        "settings": {
            "per_device_train_batch_size": t.per_device_train_batch_size,
            "gradient_accumulation_steps": t.gradient_accumulation_steps,
            "num_generations": t.num_generations,
            "steps_per_generation": steps_per_generation,
            "max_completion_length": t.max_completion_length,
            "completion_tokens_generated": args.completion_length,
            "beta": t.beta,
            "loss_type": t.loss_type,
            "gradient_checkpointing": cfg.finetune.gradient_checkpointing,
            "lora": {"r": cfg.finetune.r, "alpha": cfg.finetune.alpha, "vision": cfg.finetune.vision_attention or cfg.finetune.vision_mlp},
            "trainer": dict(t.trainer),
            "attn_implementation": cfg.model.attn_implementation,
        },
    }
    del trainer, model
    common.free_memory()
    row["gpu_allocated_after_gib"] = common.gpu_allocated_gib()  # ~0 unless the variant leaked its model
    return row


def skipped_row(variant: Variant, reason: str) -> dict[str, Any]:
    return {"variant": variant.name, "status": f"skipped: {reason}", "description": variant.description}


# ---------------------------------------------------------------------------------------------- main


def prepare_data(args, work: Path) -> Path:
    from image_vlm.data import load_manifest
    from image_vlm.synthetic import make_synthetic_dataset

    per_class = 8 if args.tiny else 16
    root = make_synthetic_dataset(work / "tiles", per_class=per_class, size=args.image_size, seed=args.seed)
    load_manifest(root, progress=False)  # verify once, quietly; training_dataset then reads the manifest
    return root


def load_processor(args):
    from core.config import ModelSection
    from core.models import load_processor as core_load_processor
    from image_vlm.config import ImageDataSection
    from image_vlm.task import image_size_arguments

    max_pixels = ImageDataSection().max_pixels
    # No hub access: the full-size model takes the tiny model's processor (same chat template, special tokens and
    # 14 px / 2x2-merge image processing, smaller BPE vocabulary) at the recipe's image budget.
    return core_load_processor(ModelSection(name="tiny:qwen2_5_vl"), **image_size_arguments(ModelSection(name="tiny:qwen2_5_vl"), max_pixels))


def image_tokens(processor, size: int) -> int:
    from PIL import Image

    out = processor.image_processor(images=[Image.new("RGB", (size, size))], return_tensors="pt")
    merge = processor.image_processor.merge_size
    return int(out["image_grid_thw"].prod(-1).sum()) // (merge * merge)


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = {row["variant"]: row for row in rows}
    base = by_name.get("playbook", {})
    default = by_name.get("default", {})
    for row in rows:
        row["vs_playbook"] = common.ratio(row.get("completions_per_s"), base.get("completions_per_s"))
        row["memory_vs_playbook"] = common.ratio(row.get("peak_gib"), base.get("peak_gib"))
    value = common.ratio(default.get("completions_per_s"), base.get("completions_per_s"))
    return {
        "name": "default completions/s over playbook-equivalent completions/s",
        "baseline": "playbook",
        "value": value,
    }


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    common.quiet_libraries()
    threads = common.set_threads(args.tiny, args.threads)
    print(common.describe_env(), flush=True)
    notes = [
        f"completions are fixed at {args.completion_length} tokens (random weights never stop); rewards are all 0",
        "the default generates all completions of an optimizer step in one call; the playbook has no accumulation",
    ]
    skip = None if args.tiny else common.full_size_skip_reason()
    selected = [v for v in VARIANTS if args.variants is None or v.name in args.variants or v.name == "playbook"]

    from transformers import Qwen2_5_VLForConditionalGeneration

    config: dict[str, Any] = {
        "model": "tiny:qwen2_5_vl" if args.tiny else "Qwen2.5-VL-7B-Instruct architecture, random bf16 weights",
        "completion_length": args.completion_length,
        "image_size": args.image_size,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "seed": args.seed,
        "torch_threads": threads,
        "variants": {v.name: {"base": v.base, "overrides": v.overrides, "description": v.description} for v in selected},
        "playbook_overrides": PLAYBOOK_OVERRIDES,
        "levers_in_default": {name: {"setting": s, "why": why} for name, (s, why) in LEVERS.items()},
    }
    if not args.tiny:
        config["architecture"] = common.QWEN2_5_VL_7B
        config["parameters"] = common.meta_parameter_counts(Qwen2_5_VLForConditionalGeneration, common.qwen2_5_vl_7b_config())

    rows: list[dict[str, Any]] = []
    status = "ok"
    if skip:
        status = f"skipped: {skip}"
        rows = [skipped_row(v, skip) for v in selected]
        notes.append(skip)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-grpo-"))
        try:
            processor = load_processor(args)
            config["image_tokens_per_tile"] = image_tokens(processor, args.image_size)
            data_root = prepare_data(args, work)
            args.full_config = None if args.tiny else common.qwen2_5_vl_7b_config(processor.tokenizer)
            args.vllm_model_dir = None
            for variant in selected:
                reason = common.missing_requirement(variant.modules, cuda=variant.cuda)
                if reason:
                    rows.append(skipped_row(variant, reason))
                    print(f"{variant.name}: skipped ({reason})", flush=True)
                    continue
                if "vllm" in variant.modules and not args.tiny:
                    args.vllm_model_dir = save_for_vllm(args, processor, work)
                print(f"{variant.name}: running {args.warmup} + {args.steps} step(s)", flush=True)
                try:
                    rows.append(run_variant(variant, args, processor, data_root, work))
                except Exception as error:  # a failing lever is a finding, not a crash
                    message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                    rows.append({"variant": variant.name, "status": f"failed: {message}", "description": variant.description})
                    print(f"{variant.name}: failed\n{traceback.format_exc(limit=4)}", file=sys.stderr, flush=True)
                    common.free_memory()
                finally:
                    args.vllm_model_dir = None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    figures: dict[str, Any] = {"rows": rows, "ratio": headline(rows)}
    default = next((r for r in rows if r["variant"] == "default"), {})
    figures["targets"] = {
        "completions_per_s_vs_playbook": {"target": ">= 3", "value": figures["ratio"]["value"]},
        "peak_gib_default": {"target": "<= 40", "value": default.get("peak_gib")},
        "meaningful": not args.tiny and status == "ok",
    }
    if args.tiny:
        notes.append("tiny mode checks the harness; its ratios say nothing about the 7B on a GPU")
    payload = common.result_payload(NAME, tiny=args.tiny, config=config, figures=figures, status=status, notes=notes, started=started)
    table = common.format_table(rows, COLUMNS)
    if figures["ratio"]["value"] is not None:
        table += f"\nratio (default / playbook completions/s): {figures['ratio']['value']:.2f}x"
    return common.finish(args.out, payload, table)


def save_for_vllm(args, processor, work: Path) -> Path:
    """vLLM loads weights from a folder: write the random full-size model once (about 16 GB) for the colocate row."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    folder = work / "vllm-model"
    if not (folder / "config.json").exists():
        model = common.build_random_model(Qwen2_5_VLForConditionalGeneration, args.full_config)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        del model
        common.free_memory()
    return folder


if __name__ == "__main__":
    sys.exit(main())
