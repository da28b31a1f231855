"""GRPO for Qwen2.5-VL on satellite tiles.

    python -m image_vlm.train --config image_vlm/configs/qwen2_5_vl_7b_grpo.yaml [--run-dir D] [key=value ...]

The run folder (see core/runs.py) is created or resumed: a folder holding a checkpoint continues from it.
A stop request (`python -m core.runs stop RUN_DIR`, the UI's Stop) or SIGTERM saves a checkpoint and ends
with state `stopped`; a finished run leaves `adapter/` (`model/` for full fine-tuning).

Warm start: with `warm_start.enabled`, a short SFT stage teaches the answer format first (see
image_vlm/warm_start.py), and GRPO starts from its weights, as the video curriculum's stages do. The stages
share the run folder: `warm_start` checkpoints under `checkpoints/warm_start/` and leaves
`stages/warm_start/`, GRPO checkpoints under `checkpoints/grpo/`; `status.json` and every `metrics.jsonl`
line name the stage. A relaunch skips a finished warm start and resumes the interrupted stage.

vLLM rollouts: `train.use_vllm` generates with vLLM inside this process (colocate mode), or on the
`trl vllm-serve` at `train.vllm_server_url` (server mode). A machine without the vllm package or a CUDA GPU
is refused with one line before the GPU lock is taken.

torch, transformers and TRL are imported inside the functions: the CLI takes the GPU lock first, so a
second launch is told "GPU busy" in a second instead of after the libraries load.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from core.cli import run_training_main
from core.config import ConfigError
from core.control import RunControl
from core.runs import RunDir, is_main_process
from image_vlm.config import GRPOSection, ImageConfig

WARM_START, GRPO = "warm_start", "grpo"

DEFAULT_CONFIG = "image_vlm/configs/qwen2_5_vl_7b_grpo.yaml"


# vLLM is no extra of this project: each vLLM wheel pins one torch, and no release TRL 1.16 supports pins 2.15.0.
VLLM_NOT_INSTALLED = (
    "train.use_vllm needs vllm, which is not installed: TRL 1.16 supports vllm 0.22-0.31, whose wheels pin torch "
    "2.11.0 (0.22-0.26) or 2.13.0 (0.27-0.31), not this project's torch 2.15.0; set train.use_vllm=false, or use an "
    "environment with torch==2.13.0 and `pip install 'vllm>=0.27,<=0.31'`"
)


def vllm_arguments(t: GRPOSection) -> dict:
    """TRL's vLLM arguments: none without vLLM; server mode when a URL is given, else colocate (TRL's default)."""
    if not t.use_vllm:
        return {}
    if t.vllm_server_url:
        return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": t.vllm_server_url}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": t.vllm_gpu_memory_utilization}


def vllm_problem(t: GRPOSection) -> str | None:
    """Why this machine cannot run the configured vLLM rollouts, or None.

    Server mode needs the same two things on the trainer's side as colocate mode: TRL's VLLMClient refuses to
    start without the vllm package (its weight sync is vLLM's NCCL engine), and NCCL needs a CUDA device.
    """
    if not t.use_vllm:
        return None
    if importlib.util.find_spec("vllm") is None:
        return VLLM_NOT_INSTALLED
    import torch  # only for a vLLM run: every other launch still hears "GPU busy" before torch loads

    if not torch.cuda.is_available():
        if t.vllm_server_url:
            return (
                "train.vllm_server_url (vLLM server mode) needs a CUDA GPU on the trainer too: the weights reach the "
                "server over NCCL; set train.use_vllm=false on CPU"
            )
        return "train.use_vllm (vLLM colocate mode) needs a CUDA GPU; set train.use_vllm=false on CPU"
    return None


def grpo_arguments(cfg: ImageConfig, run: RunDir, output_dir: Path | None = None):
    """TRL's GRPOConfig from our config; `train.trainer` passes through verbatim and TRL validates it."""
    from trl import GRPOConfig

    from core.models import trainer_config

    t = cfg.train
    return trainer_config(
        GRPOConfig,
        cfg,
        run,
        output_dir or run.checkpoints_dir,
        "train",
        t.trainer,
        max_steps=t.max_steps,
        num_train_epochs=t.num_train_epochs,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_generations=t.num_generations,
        max_completion_length=t.max_completion_length,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        optim=t.optim,
        temperature=t.temperature,
        beta=t.beta,
        loss_type=t.loss_type,
        seed=t.seed,
        # The UI's reward weights reach the trainer here; the reference playbook dropped them.
        reward_weights=list(cfg.rewards.weights.values()),
        **vllm_arguments(t),
    )


def sft_arguments(cfg: ImageConfig, run: RunDir, output_dir: Path):
    """TRL's SFTConfig for the warm start; `warm_start.trainer` passes through verbatim and TRL validates it."""
    from trl import SFTConfig

    from core.models import trainer_config

    w = cfg.warm_start
    return trainer_config(
        SFTConfig,
        cfg,
        run,
        output_dir,
        "warm_start",
        w.trainer,
        max_steps=w.max_steps,
        per_device_train_batch_size=w.per_device_train_batch_size,
        gradient_accumulation_steps=w.gradient_accumulation_steps,
        learning_rate=w.learning_rate,
        lr_scheduler_type="constant",
        seed=w.seed,
        # The warm-start collator builds input_ids and labels; TRL must neither tokenise nor truncate.
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
    )


def warm_start_rows(cfg: ImageConfig, train_rows: list[dict]) -> list[dict]:
    """The warm start's rows: the user's JSONL (bad lines reported and left out) or the template over the
    training split; a budget the data cannot fill is a config error."""
    from image_vlm.warm_start import print_report, read_warm_start_jsonl, template_rows

    w = cfg.warm_start
    if w.jsonl:
        report = read_warm_start_jsonl(w.jsonl, cfg.data)
        print_report(report)
        rows, source = report.rows, f"warm_start.jsonl ({w.jsonl})"
        if not rows:
            raise ConfigError(f"{source}: no usable line ({len(report.problems)} problem(s), listed above)")
    else:
        rows, source = template_rows(train_rows), f"the training split ({cfg.data.root}/{cfg.data.train_split})"
    if w.max_samples is not None:
        if w.max_samples > len(rows):
            raise ConfigError(f"warm_start.max_samples ({w.max_samples}) is larger than {source}, which has {len(rows)} example(s)")
        rows = rows[: w.max_samples]
    if w.per_device_train_batch_size > len(rows):
        raise ConfigError(
            f"warm_start.per_device_train_batch_size ({w.per_device_train_batch_size}) is larger than {source}, "
            f"which has {len(rows)} example(s)"
        )
    return rows


def warm_start(cfg: ImageConfig, run: RunDir, control: RunControl, processor, rows: list[dict], stages: list[str]) -> Path | None:
    """Run (or resume, or skip when done) the SFT warm start; returns its saved weights, None when stopped."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    from core.checkpoints import agreed_by_all_ranks, resume_point, train_from
    from core.metrics import GracefulStop, RunMetricsCallback
    from core.models import freeze_vision_tower, load_stage_start, memory_hint, release_memory, save_trained, trainable_summary
    from image_vlm.warm_start import WarmStartCollator

    done = agreed_by_all_ranks(run.stage_artifact(WARM_START))
    if done:
        print(f"[{WARM_START}] finished earlier: {done}", flush=True)
        return done
    model = load_stage_start(cfg.model, cfg.finetune, None)
    if cfg.warm_start.freeze_vision:
        freeze_vision_tower(model)
    print(f"[{WARM_START}] {len(rows)} example(s), {cfg.warm_start.answers} answers; {trainable_summary(model)}", flush=True)
    output_dir = run.checkpoints_dir / WARM_START
    trainer = SFTTrainer(
        model=model,
        args=sft_arguments(cfg, run, output_dir),
        data_collator=WarmStartCollator(processor, cfg.data, cfg.warm_start),
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        callbacks=[RunMetricsCallback(run, stage=WARM_START), GracefulStop(control)],
    )
    if control.poll():
        return None
    if is_main_process():
        # Steps count from 0 in each stage: the trainer's first callback writes the real step and total.
        run.write_status("running", pid=os.getpid(), stage=WARM_START, stages=stages, step=0, total=None)
    try:
        train_from(trainer, resume_point(output_dir), log=lambda line: print(line, flush=True))
    except torch.OutOfMemoryError as err:
        raise RuntimeError(memory_hint(err, cfg.model.max_memory_gb)) from err
    if control.requested:
        return None
    out = run.path / "stages" / WARM_START / ("model" if cfg.finetune.method == "full" else "adapter")
    save_trained(trainer, out)
    if trainer.is_world_process_zero():
        print(f"saved {out}", flush=True)
    del trainer, model
    release_memory()
    return out


def train(cfg: ImageConfig, run: RunDir, control: RunControl) -> None:
    import torch
    from accelerate import PartialState
    from trl import GRPOTrainer

    from core.checkpoints import resume_point, train_from
    from core.metrics import GracefulStop, RolloutRecorder, RunMetricsCallback
    from core.models import apply_memory_cap, load_processor, load_stage_start, memory_hint, save_trained, trainable_summary
    from image_vlm.rewards import completion_text, get_reward
    from image_vlm.task import dataset_rows, image_size_arguments, training_dataset

    # Dataset first (rank 0 first: it may generate or verify files the other ranks then only read), so that a
    # warm start the data cannot fill is refused before any weights load.
    with PartialState().main_process_first():
        dataset = training_dataset(cfg.data, cfg.data.train_split, cfg.data.max_train_samples, record=run.append_metric)
        warm_rows = warm_start_rows(cfg, dataset_rows(dataset)) if cfg.warm_start.enabled else []
    print(f"training on {len(dataset)} images from {cfg.data.root}/{cfg.data.train_split}", flush=True)

    # Model
    cap = apply_memory_cap(cfg.model.max_memory_gb)
    if cap:
        print(cap, flush=True)
    processor = load_processor(cfg.model, **image_size_arguments(cfg.data.max_pixels))
    stages = [WARM_START, GRPO] if cfg.warm_start.enabled else []
    if control.poll():  # a stop during start-up: nothing trained, nothing to save
        return

    # Warm start (SFT): the answer format, so that GRPO's rewards are not all 0
    start = None
    if cfg.warm_start.enabled:
        start = warm_start(cfg, run, control, processor, warm_rows, stages)
        if start is None:
            return
    model = load_stage_start(cfg.model, cfg.finetune, start)
    stage = GRPO if stages else None
    print(f"[{stage or 'train'}] starting from {start or cfg.model.name}; {trainable_summary(model)}", flush=True)

    # Rewards: pure functions, weighted by the trainer; the recorder copies each scored batch to the run folder.
    rewards = RolloutRecorder(run, [get_reward(name) for name in cfg.rewards.weights], completion_text)

    # Training (GRPO)
    output_dir = run.checkpoints_dir / GRPO if stage else run.checkpoints_dir
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards.wrapped(),
        args=grpo_arguments(cfg, run, output_dir),
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[RunMetricsCallback(run, stage=stage), GracefulStop(control)],
    )
    if control.poll():
        return
    if is_main_process() and stage:
        run.write_status("running", pid=os.getpid(), stage=stage, stages=stages, step=0, total=None)
    try:
        train_from(trainer, resume_point(output_dir), log=lambda line: print(line, flush=True))
    except torch.OutOfMemoryError as err:
        raise RuntimeError(memory_hint(err, cfg.model.max_memory_gb)) from err
    if not control.requested:
        out = save_trained(trainer, run.adapter_dir if cfg.finetune.method != "full" else run.model_dir)
        if trainer.is_world_process_zero():
            print(f"saved {out}", flush=True)


def main(argv=None) -> int:
    return run_training_main(
        argv, config_cls=ImageConfig, prefix="image", default_config=DEFAULT_CONFIG, description=__doc__, train=train,
        estimate="image_vlm.estimate", preflight=lambda cfg: vllm_problem(cfg.train),
    )


if __name__ == "__main__":
    sys.exit(main())
