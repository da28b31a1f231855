"""GRPO for Qwen2.5-VL on satellite tiles.

    python -m image_vlm.train --config image_vlm/configs/qwen2_5_vl_7b_grpo.yaml [--run-dir D] [key=value ...]

The run folder (see core/runs.py) is created or resumed: a folder holding a checkpoint continues from it.
A stop request (`python -m core.runs stop RUN_DIR`, the UI's Stop) or SIGTERM saves a checkpoint and ends
with state `stopped`; a finished run leaves `adapter/`.

torch, transformers and TRL are imported inside the functions: the CLI takes the GPU lock first, so a
second launch is told "GPU busy" in a second instead of after the libraries load.
"""

from __future__ import annotations

import sys

from core.cli import run_training_main
from core.config import ConfigError
from core.control import RunControl
from core.runs import RunDir
from image_vlm.config import ImageConfig

DEFAULT_CONFIG = "image_vlm/configs/qwen2_5_vl_7b_grpo.yaml"


def grpo_arguments(cfg: ImageConfig, run: RunDir):
    """TRL's GRPOConfig from our config; `train.trainer` passes through verbatim and TRL validates it."""
    import torch
    from trl import GRPOConfig

    from core.metrics import configure_wandb
    from core.models import checkpointing_arguments

    t = cfg.train
    arguments = dict(
        output_dir=str(run.checkpoints_dir),
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
        **checkpointing_arguments(GRPOConfig, cfg.finetune.gradient_checkpointing),
        bf16=torch.cuda.is_available(),
        logging_steps=cfg.logging.logging_steps,
        save_strategy="steps",
        save_steps=cfg.logging.save_steps,
        save_total_limit=cfg.logging.save_total_limit,
        report_to=configure_wandb(cfg.logging.report_to, cfg.logging.wandb_project, run),
        run_name=run.id,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    arguments.update(t.trainer)
    try:
        return GRPOConfig(**arguments)
    except TypeError as err:
        raise ConfigError(f"train.trainer: {err} (see trl.GRPOConfig for the accepted arguments)") from None
    except ValueError as err:
        raise ConfigError(f"train: {err}") from None


def train(cfg: ImageConfig, run: RunDir, control: RunControl) -> None:
    import torch
    from accelerate import PartialState
    from trl import GRPOTrainer

    from core.checkpoints import train_from
    from core.metrics import GracefulStop, RolloutRecorder, RunMetricsCallback
    from core.models import apply_finetune, apply_memory_cap, load_model, load_processor, memory_hint, save_final, trainable_summary
    from image_vlm.rewards import completion_text, get_reward
    from image_vlm.task import image_size_arguments, training_dataset

    # Model
    cap = apply_memory_cap(cfg.model.max_memory_gb)
    if cap:
        print(cap, flush=True)
    processor = load_processor(cfg.model, **image_size_arguments(cfg.data.max_pixels))
    model = apply_finetune(load_model(cfg.model, cfg.finetune), cfg.finetune)
    print(trainable_summary(model), flush=True)
    if control.poll():  # a stop during start-up: nothing trained, nothing to save
        return

    # Dataset (rank 0 first: it may generate or verify files the other ranks then only read)
    with PartialState().main_process_first():
        dataset = training_dataset(cfg.data, cfg.data.train_split, cfg.data.max_train_samples, record=run.append_metric)
    print(f"training on {len(dataset)} images from {cfg.data.root}/{cfg.data.train_split}", flush=True)

    # Rewards: pure functions, weighted by the trainer; the recorder copies each scored batch to the run folder.
    rewards = RolloutRecorder(run, [get_reward(name) for name in cfg.rewards.weights], completion_text)

    # Training
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards.wrapped(),
        args=grpo_arguments(cfg, run),
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[RunMetricsCallback(run), GracefulStop(control)],
    )
    if control.poll():
        return
    try:
        train_from(trainer, run.latest_checkpoint(), log=lambda line: print(line, flush=True))
    except torch.OutOfMemoryError as err:
        raise RuntimeError(memory_hint(err, cfg.model.max_memory_gb)) from err
    if not control.requested and trainer.is_world_process_zero():
        out = run.adapter_dir if cfg.finetune.method != "full" else run.model_dir
        save_final(trainer.model, processor, out)
        print(f"saved {out}", flush=True)


def main(argv=None) -> int:
    return run_training_main(
        argv, config_cls=ImageConfig, prefix="image", default_config=DEFAULT_CONFIG, description=__doc__, train=train,
        estimate="image_vlm.estimate",
    )


if __name__ == "__main__":
    sys.exit(main())
