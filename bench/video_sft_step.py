"""Video SFT step throughput: dynamic padding (the product's collator) against padding every sample to 8192 tokens.

    python bench/video_sft_step.py --tiny   # CPU, tiny random InternVL, 4 frames, ~1 min
    python bench/video_sft_step.py          # CUDA: InternVL3-8B architecture, random bf16 weights, 16 frames at 448 px

Both variants train exactly as `video_vlm/train.py` does: the model from core.models (`load_model` +
`apply_finetune` with the recipe's LoRA r=128/alpha=256; full size = the published architecture with random
weights, then the same `apply_finetune`), `video_vlm.task` verified items and dataset on the synthetic clips of
`video_vlm.synthetic`, the product's `VideoSFTCollator` (`read_frames` sampling, the inference prompt, masked
labels, padding to the longest sample), `video_vlm.train.sft_arguments` on a temporary run folder, and TRL's
SFTTrainer. The baseline wraps that collator and pads its batch on to 8192 tokens with the pad id and a zero
attention mask, which is what the reference notebook's collate_fn did to every sample (`seq_len = 8192`).

The recipe's trainer loads batches in `data.num_workers` worker processes (the collator decodes, samples,
processes, tokenises and pads there) and reads frames from the frame cache after their first decode. The
loader's share of a step is the time the training process waits for its batches (`Trainer.get_batch_samples`),
measured for the product's loader and, for contrast, for the same collator run in the training process
(`num_workers=0`, what the recipe did before).

Figures: samples/s, tokens/s (non-padding tokens; padded tokens/s too), MFU, peak GPU memory, data-loader share.
MFU uses the 6*N*T convention: N = every parameter of the model (frozen base weights, vision tower and LoRA
included), T = non-padding tokens of the language model per second, over the GPU's dense bf16 peak. It ignores
attention FLOPs, the vision tower's extra patches (each frame is 1024 patches before the 4x pixel shuffle), the
weight gradients LoRA does not compute and the recomputation of gradient checkpointing, so it is the usual
model-FLOPs figure, comparable across runs, not a hardware counter. A second figure adds the vision patches.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import common

NAME = "video_sft_step"
VIDEO_CONFIG = "video_vlm/configs/internvl3_8b_sft.yaml"
NOTEBOOK_PAD_TO = 8192

COLUMNS = (
    ("variant", "variant"),
    ("status", "status"),
    ("tokens_per_sample", "tokens/sample"),
    ("padded_tokens_per_sample", "padded/sample"),
    ("step_s", "s/step"),
    ("samples_per_s", "samples/s"),
    ("tokens_per_s", "tokens/s"),
    ("mfu", "MFU"),
    ("loader_share", "loader share"),
    ("peak_gib", "peak GiB"),
    ("estimated_peak_gib", "estimate GiB"),
    ("vs_pad8192", "x baseline"),
)


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=None, help="measured optimizer steps per variant (default: 1 tiny, 2 full)")
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps run first and not measured (default: 1)")
    parser.add_argument("--accumulation", type=int, default=None, help="micro-batches per optimizer step (default: 2 tiny, the config's 8 full)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: 4 tiny, 16 full)")
    parser.add_argument(
        "--pad-to",
        type=int,
        default=None,
        help="baseline padding length (default: the notebook's 8192; with --tiny, the same padded/real ratio as a full-size sample)",
    )
    parser.add_argument("--workers", type=int, default=None, help="loader worker processes (default: the config's data.num_workers)")
    parser.add_argument("--clip-size", type=int, default=None, help="synthetic clip side in pixels (default: 64 tiny, 448 full)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU when the GPU is not recognised")
    args = parser.parse_args(argv)
    args.steps = args.steps or (1 if args.tiny else 2)
    args.frames = args.frames or (4 if args.tiny else 16)
    args.clip_size = args.clip_size or (64 if args.tiny else 448)
    return args


# ---------------------------------------------------------------------------------------------- setup


def video_config(args):
    """The recipe's config at the benchmark's frame count (max_length raised so 16 x 256 video tokens fit)."""
    from core.config import load_config
    from video_vlm.config import VideoConfig

    overrides = [
        f"data.num_frames={args.frames}",
        "train.max_length=8192",
        f"train.max_steps={args.warmup + args.steps}",
        "train.warmup_steps=0",
        f"train.seed={args.seed}",
        "logging.report_to=none",
        "logging.save_steps=1000000",
    ]
    if args.tiny:
        overrides.append("model.name=tiny:internvl")
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    if args.accumulation:
        overrides.append(f"train.gradient_accumulation_steps={args.accumulation}")
    elif args.tiny:
        overrides.append("train.gradient_accumulation_steps=2")
    return load_config(VideoConfig, common.REPO_ROOT / VIDEO_CONFIG, overrides)


def full_size_processor(work: Path):
    """InternVL3-8B's processing at full size (no hub): the tiny model's tokenizer, frames at 448 px -> 256 tokens."""
    from core.architectures import full_size_processor_files
    from core.config import ModelSection
    from core.models import load_processor

    return load_processor(ModelSection(name=str(full_size_processor_files("internvl", work / "internvl-processor"))))


def build_model(cfg, args, processor):
    """The model a (single-stage) run starts from, as `video_vlm.train` builds it (`core.models.load_stage_start`)."""
    import torch

    from core.models import apply_finetune

    torch.manual_seed(args.seed)
    if args.tiny:
        from core.models import load_stage_start

        return load_stage_start(cfg.model, cfg.finetune, None)
    from transformers import InternVLForConditionalGeneration

    base = common.build_random_model(InternVLForConditionalGeneration, common.internvl3_8b_config(processor.tokenizer))
    return apply_finetune(base, cfg.finetune)


class PadToLength:
    """The notebook's padding: the product collator's batch, then pad ids up to `length` (attention mask 0, no loss)."""

    def __init__(self, collator, length: int):
        self.collator = collator
        self.length = length

    def __call__(self, rows):
        import torch

        from video_vlm.collator import IGNORE_INDEX

        batch = self.collator(rows)
        extra = self.length - batch["input_ids"].shape[1]
        if extra > 0:
            rows_n = batch["input_ids"].shape[0]
            fill = {"input_ids": self.collator.pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
            for key, value in fill.items():
                pad = torch.full((rows_n, extra), value, dtype=batch[key].dtype)
                batch[key] = torch.cat([batch[key], pad], dim=1)
        return batch


def time_batch_fetches(trainer) -> list[dict[str, float]]:
    """Times each optimizer step's wait for its micro-batches in the training process, and counts their real and
    padded tokens and frames. Workers or not, this is what the step waits for."""
    fetches: list[dict[str, float]] = []
    original = trainer.get_batch_samples

    def timed(epoch_iterator, num_batches, device):
        start = common.now()
        batches, items = original(epoch_iterator, num_batches, device)
        fetches.append(
            {
                "start": start,
                "s": common.now() - start,
                "tokens": sum(int(b["attention_mask"].sum()) for b in batches),
                "padded": sum(int(b["input_ids"].numel()) for b in batches),
                "frames": sum(int(b["pixel_values"].shape[0]) for b in batches if "pixel_values" in b),
                "samples": sum(int(b["input_ids"].shape[0]) for b in batches),
            }
        )
        return batches, items

    trainer.get_batch_samples = timed
    return fetches


# ---------------------------------------------------------------------------------------------- one variant


def run_variant(name: str, pad_to: int | None, workers: int, cfg, args, processor, dataset, param_counts, work: Path) -> dict[str, Any]:
    """Train `warmup + steps` optimizer steps through the recipe's SFTTrainer set-up; return the measured row."""
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from core.callbacks import RunMetricsCallback
    from core.runs import RunDir
    from video_vlm.collator import VideoSFTCollator
    from video_vlm.skipped_clips import SkippedClipsCallback
    from video_vlm.task import load_task_schema
    from video_vlm.train import sft_arguments

    common.reset_peak_memory()
    run = RunDir(work / f"run-{'pad' if pad_to else 'dynamic'}-{workers}")
    cfg.data.num_workers = workers
    model = build_model(cfg, args, processor)
    collator = VideoSFTCollator(
        processor, cfg.data, load_task_schema(cfg.data), cfg.train.max_length, replacements=list(dataset),
        seed=cfg.train.seed, run=run,
    )
    marks: list[float] = []  # end of each optimizer step

    class StepClock(TrainerCallback):
        def on_step_end(self, a, state, control, **kwargs):
            marks.append(common.now())

    trainer = SFTTrainer(
        model=model,
        args=common.quiet(sft_arguments(cfg, cfg.train, run, run.checkpoints_dir)),
        data_collator=PadToLength(collator, pad_to) if pad_to else collator,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[SkippedClipsCallback(run, len(dataset), 1.0), RunMetricsCallback(run), StepClock()],
    )
    common.remove_printer(trainer)
    fetches = time_batch_fetches(trainer)
    common.reset_peak_memory()
    trainer.train()
    peak = common.peak_gpu_memory_gib()
    reserved = common.peak_gpu_reserved_gib()

    accumulation = cfg.train.gradient_accumulation_steps
    window = (marks[args.warmup - 1], marks[-1]) if args.warmup else (marks[0], marks[-1])
    steps = len(marks) - args.warmup
    total = window[1] - window[0]
    # Each step starts by fetching its micro-batches, so the fetches that start inside the window are its steps'.
    calls = [c for c in fetches if window[0] <= c["start"] < window[1]]
    wait = sum(c["s"] for c in calls)
    fetched = sum(c["samples"] for c in calls) or 1
    samples = steps * accumulation * cfg.train.per_device_train_batch_size
    tokens = sum(c["tokens"] for c in calls) * samples / fetched
    padded = sum(c["padded"] for c in calls) * samples / fetched
    frames = sum(c["frames"] for c in calls) * samples / fetched
    tokens_per_s = tokens / total if total else None
    peak_flops = common.peak_bf16_tflops(args.peak_tflops)
    flops_per_s = 6 * param_counts["total"] * tokens_per_s if tokens_per_s else None
    patches_per_frame = (cfg_image_size(processor) // common.INTERNVL3_8B["vision_config"]["patch_size"]) ** 2
    vision_flops_per_s = 6 * param_counts["vision"] * (frames * patches_per_frame) / total if total else None
    row = {
        "variant": name,
        "status": "ok",
        "pad_to": pad_to,
        "loader_workers": workers,
        "measured_steps": steps,
        "micro_batches_per_step": accumulation,
        "samples_per_step": accumulation * cfg.train.per_device_train_batch_size,
        "tokens_per_sample": tokens / samples if samples else None,
        "padded_tokens_per_sample": padded / samples if samples else None,
        "step_s": total / steps if steps else None,
        "samples_per_s": samples / total if total else None,
        "tokens_per_s": tokens_per_s,
        "padded_tokens_per_s": padded / total if total else None,
        "model_tflops_per_s": flops_per_s / 1e12 if flops_per_s else None,
        "mfu": flops_per_s / (peak_flops * 1e12) if flops_per_s and peak_flops else None,
        "mfu_with_vision_patches": (flops_per_s + vision_flops_per_s) / (peak_flops * 1e12)
        if flops_per_s and vision_flops_per_s is not None and peak_flops
        else None,
        "loader_share": wait / total if total else None,
        "loader_s_per_sample": wait / fetched if calls else None,
        "peak_gib": peak,
        "peak_reserved_gib": reserved,
        **common.estimated_memory("video_vlm.estimate", cfg, peak),
        "skipped_samples": len(run.read_skips()),
    }
    del trainer, model
    common.free_memory()
    row["gpu_allocated_after_gib"] = common.gpu_allocated_gib()  # ~0 unless the variant leaked its model
    return row


def cfg_image_size(processor) -> int:
    size = processor.video_processor.size
    return int(size["height"] if isinstance(size, dict) else size.height)


# ---------------------------------------------------------------------------------------------- main


def full_size_budget(args, work: Path) -> dict[str, Any]:
    """Tokens of one full-size sample (16 frames at 448 px by default), from the processor alone."""
    from video_vlm.synthetic import synthetic_label
    from video_vlm.task import load_task_schema
    from video_vlm.token_budget import token_budget

    full = parse_args(["--frames", str(16 if args.tiny else args.frames)])
    cfg = video_config(full)
    processor = full_size_processor(work)
    label = synthetic_label("turn_left", True, True, True, True)
    return token_budget(processor, cfg.data, load_task_schema(cfg.data), label)


def make_dataset(cfg, args, work: Path):
    """The training dataset of synthetic clips (video_vlm.synthetic), verified and built as training does.

    Every valid clip is used, train and val alike: only the cost matters here. The trainer cycles through them.
    """
    from video_vlm.synthetic import make_synthetic_dataset
    from video_vlm.task import load_task_schema, training_dataset, verified_items

    clip_frames = max(12, args.frames * 4)
    root = make_synthetic_dataset(work / "clips", n=8, seed=args.seed, num_frames=clip_frames, size=args.clip_size)
    cfg.data.root = str(root)
    cfg.data.frame_cache_dir = str(work / "frame-cache")
    report = verified_items(cfg.data, load_task_schema(cfg.data))
    return training_dataset(report.items, root)


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    common.quiet_libraries()
    threads = common.set_threads(args.tiny, args.threads)
    print(common.describe_env(), flush=True)
    cfg = video_config(args)
    notes = [
        "MFU = 6 * N * T / peak: N = all parameters (frozen, vision and LoRA included), T = non-padding LM tokens/s",
        "the loader share is the time each step waits for its batches in the training process",
    ]
    config: dict[str, Any] = {
        "model": "tiny:internvl" if args.tiny else "InternVL3-8B-hf architecture, random bf16 weights",
        "frames": args.frames,
        "frame_size": cfg.data.frame_max_side,
        "clip_size": args.clip_size,
        "pad_to": args.pad_to,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "gradient_accumulation_steps": cfg.train.gradient_accumulation_steps,
        "per_device_train_batch_size": cfg.train.per_device_train_batch_size,
        "dataloader_num_workers": cfg.data.num_workers,
        "frame_cache": "on, in the temporary work folder (cold for the warm-up step's first clips)",
        "torch_threads": threads,
        "finetune": cfg.finetune.model_dump(),
        "learning_rate": cfg.train.learning_rate,
        "collator": "video_vlm.collator.VideoSFTCollator",
        "mfu_convention": "6*N*T, N = all parameters incl. frozen, T = non-padding LM tokens",
    }
    from transformers import InternVLForConditionalGeneration

    if not args.tiny:
        config["architecture"] = common.INTERNVL3_8B
        config["parameters"] = common.meta_parameter_counts(InternVLForConditionalGeneration, common.internvl3_8b_config())

    # What one full-size sample costs in tokens: computable on any machine, it is only the processor.
    work = Path(tempfile.mkdtemp(prefix="bench-video-"))
    full_budget = full_size_budget(args, work)
    config["full_size_token_budget"] = full_budget
    if args.pad_to is None:
        args.pad_to = NOTEBOOK_PAD_TO
        if args.tiny:
            # Tiny samples are ~10x shorter; padding them to 8192 would measure attention over padding only.
            # Pad them by the same factor as 8192 pads a full-size sample instead.
            args.pad_to = None
    rows: list[dict[str, Any]] = []
    status = "ok"
    skip = None if args.tiny else common.full_size_skip_reason()
    if skip:
        variants = (("pad-8192 (notebook)", args.pad_to, 0), ("dynamic, in-process loader", None, 0), ("dynamic (product)", None, 0))
        status = f"skipped: {skip}"
        rows = [{"variant": name, "status": f"skipped: {skip}"} for name, _, _ in variants]
        notes.append(skip)
    else:
        try:
            if args.tiny:
                from core.models import load_processor

                processor = load_processor(cfg.model)
            else:
                processor = full_size_processor(work)
            from video_vlm.task import load_task_schema
            from video_vlm.token_budget import token_budget

            dataset = make_dataset(cfg, args, work)
            schema = load_task_schema(cfg.data)
            budget = token_budget(processor, cfg.data, schema, json.loads(dataset[0]["label"]))
            config["token_budget"] = budget
            scaled = args.pad_to is None
            if scaled:
                factor = NOTEBOOK_PAD_TO / full_budget["total"]
                args.pad_to = -(-int(budget["total"] * factor) // 64) * 64
                notes.append(
                    f"tiny: the baseline pads to {args.pad_to} tokens, {factor:.2f}x a tiny sample, as 8192 is "
                    f"{factor:.2f}x a full-size {full_budget['frames']}-frame sample ({full_budget['total']} tokens)"
                )
            config["pad_to"] = args.pad_to
            label = f"pad-{args.pad_to}" + (" (notebook)" if args.pad_to == NOTEBOOK_PAD_TO else " (notebook ratio)" if scaled else "")
            workers = cfg.data.num_workers
            variants = (
                (label, args.pad_to, workers),
                ("dynamic, in-process loader", None, 0),
                (f"dynamic (product, {workers} worker{'s' if workers != 1 else ''})", None, workers),
            )
            if args.tiny:
                probe = build_model(cfg, args, processor)
            else:  # count on the meta device: no 16 GB allocation just to count
                from core.models import apply_finetune

                meta = common.build_random_model(
                    InternVLForConditionalGeneration, common.internvl3_8b_config(processor.tokenizer), device="meta"
                )
                probe = apply_finetune(meta, cfg.finetune)
            counts = common.parameter_counts(probe)
            config["parameters_with_lora"] = counts
            del probe
            common.free_memory()
            for name, pad_to, loader_workers in variants:
                print(f"{name}: running {args.warmup} + {args.steps} step(s)", flush=True)
                try:
                    rows.append(run_variant(name, pad_to, loader_workers, cfg, args, processor, dataset, counts, work))
                except Exception as error:
                    message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                    rows.append({"variant": name, "status": f"failed: {message}"})
                    print(f"{name}: failed\n{traceback.format_exc(limit=4)}", file=sys.stderr, flush=True)
                    common.free_memory()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)

    notes.insert(1, f"the baseline pads every batch to {args.pad_to} tokens as the reference notebook did; same model, LoRA, clips")
    base = rows[0] if rows else {}
    for row in rows:
        row["vs_pad8192"] = common.ratio(row.get("samples_per_s"), base.get("samples_per_s"))
    dynamic = rows[-1] if len(rows) > 1 else {}
    figures = {
        "rows": rows,
        "ratio": {
            "name": f"dynamic-padding samples/s over pad-to-{args.pad_to} samples/s",
            "baseline": base.get("variant"),
            "value": common.ratio(dynamic.get("samples_per_s"), base.get("samples_per_s")),
        },
        "targets": {
            "samples_per_s_vs_pad8192": {"target": ">= 2", "value": common.ratio(dynamic.get("samples_per_s"), base.get("samples_per_s"))},
            "mfu_dynamic": {"target": ">= 0.40", "value": dynamic.get("mfu")},
            "loader_share_with_workers": {"target": "< 0.05", "value": dynamic.get("loader_share")},
            "meaningful": not args.tiny and status == "ok",
        },
    }
    if args.tiny:
        notes.append("tiny mode checks the harness; MFU needs a GPU's peak and its ratios say nothing about the 8B")
    payload = common.result_payload(NAME, tiny=args.tiny, config=config, figures=figures, status=status, notes=notes, started=started)
    table = common.format_table(rows, COLUMNS)
    if figures["ratio"]["value"] is not None:
        table += f"\nratio (dynamic / pad-to-{args.pad_to} samples/s): {figures['ratio']['value']:.2f}x"
    return common.finish(args.out, payload, table)


if __name__ == "__main__":
    sys.exit(main())
