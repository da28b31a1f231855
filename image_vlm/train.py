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

DPO (`method: dpo`): instead of GRPO, a `pairs` stage samples answers per training image from the start weights
(the warm start's, `pairs.source_run`'s, or the base model's) and ranks them with the same rewards
(image_vlm/pairs.py), then a `dpo` stage trains on best against worst with TRL's DPOTrainer, from those same
weights. `pairs.file` trains on your own pairs instead. A relaunch keeps the pairs sampled so far.

vLLM rollouts: see image_vlm/vllm_rollouts.py; a machine that cannot run them is refused with one line before
the GPU lock is taken.

torch, transformers and TRL are imported inside the functions: the CLI takes the GPU lock first, so a
second launch is told "GPU busy" in a second instead of after the libraries load.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_training_main
from core.control import RunControl
from core.dpo import unused_stages_problem
from core.preference import DPO, PAIRS
from core.runs import RunDir
from image_vlm.config import ImageConfig
from image_vlm.vllm_rollouts import vllm_arguments, vllm_problem
from image_vlm.warm_start import WARM_START, WarmStartCollator, warm_start_rows

GRPO = "grpo"
DPO_STAGES = [PAIRS, DPO]
DEFAULT_CONFIG = "image_vlm/configs/qwen2_5_vl_7b_grpo.yaml"


def grpo_arguments(cfg: ImageConfig, run: RunDir, output_dir: Path | None = None):
    """TRL's GRPOConfig from our config; `train.trainer` passes through verbatim and TRL validates it."""
    from trl import GRPOConfig

    from core.models import trainer_config

    t = cfg.train
    return trainer_config(
        GRPOConfig, cfg, run, output_dir or run.checkpoints_dir, "train", t.trainer, **t.trainer_arguments(),
        num_generations=t.num_generations,
        max_completion_length=t.max_completion_length,
        temperature=t.temperature,
        beta=t.beta,
        loss_type=t.loss_type,
        # The UI's reward weights reach the trainer here; the reference playbook dropped them.
        reward_weights=list(cfg.rewards.weights.values()),
        **vllm_arguments(t),
    )


def train(cfg: ImageConfig, run: RunDir, control: RunControl) -> None:
    from accelerate import PartialState
    from datasets import Dataset
    from trl import GRPOTrainer

    from core.callbacks import GracefulStop, RunMetricsCallback
    from core.metrics import RolloutRecorder
    from core.models import apply_memory_cap, load_processor, load_stage_start, trainable_summary
    from core.stages import dpo_stage, finished_stage, sft_arguments, sft_stage, train_stage
    from image_vlm.pairs import pairs_dataset, run_pairs_stage, training_pairs
    from image_vlm.rewards import completion_text, get_reward
    from image_vlm.task import dataset_rows, image_size_arguments, training_dataset

    # Dataset first (rank 0 first: it may generate or verify files the other ranks then only read), so that a
    # warm start the data cannot fill is refused before any weights load.
    with PartialState().main_process_first():
        dataset = training_dataset(cfg.data, cfg.data.train_split, cfg.data.max_train_samples, record=run.append_metric)
        warm_rows = warm_start_rows(cfg, dataset_rows(dataset)) if cfg.warm_start.enabled else []
    # A pairs file of your own is checked line by line before any weights load.
    user_pairs = training_pairs(cfg, run) if cfg.method == DPO and cfg.pairs.file else None
    print(f"training on {len(dataset)} images from {cfg.data.root}/{cfg.data.train_split}", flush=True)

    # Model
    cap = apply_memory_cap(cfg.model.max_memory_gb)
    if cap:
        print(cap, flush=True)
    processor = load_processor(cfg.model, **image_size_arguments(cfg.model, cfg.data.max_pixels))
    dpo_stages = [DPO] if cfg.pairs.file else DPO_STAGES
    stages = ([WARM_START] if cfg.warm_start.enabled else []) + (dpo_stages if cfg.method == DPO else [GRPO])
    stages = stages if len(stages) > 1 else []
    if control.poll():  # a stop during start-up: nothing trained, nothing to save
        return

    # Warm start (SFT): the answer format, so that GRPO's rewards are not all 0; a relaunch skips it once done
    start = None
    if cfg.warm_start.enabled:
        start = finished_stage(run, WARM_START) or sft_stage(
            cfg, run, control, processor, start=None, stage=WARM_START, stages=stages,
            args=sft_arguments(cfg, cfg.warm_start, run, run.stage_checkpoints_dir(WARM_START), WARM_START),
            dataset=Dataset.from_list(warm_rows), collator=WarmStartCollator(processor, cfg.data, cfg.warm_start),
            freeze_vision=cfg.warm_start.freeze_vision,
        )
        if start is None:
            return

    # Pairs, then DPO (image_vlm/pairs.py): answers ranked by the rewards, batched by TRL's vision collator
    if cfg.method == DPO:
        rows = dataset_rows(dataset)
        return dpo_stage(
            cfg, run, control, processor, start, stages, user_pairs,
            sample=lambda model: run_pairs_stage(cfg, run, control, processor, model, rows, stages),
            read=lambda: training_pairs(cfg, run), dataset=lambda pairs: pairs_dataset(cfg, pairs, processor),
        )
    model = load_stage_start(cfg.model, cfg.finetune, start)
    stage = GRPO if stages else None
    print(f"[{stage or 'train'}] starting from {start or cfg.model.name}; {trainable_summary(model)}", flush=True)

    # Rewards: pure functions, weighted by the trainer; the recorder copies each scored batch to the run folder.
    rewards = RolloutRecorder(run, [get_reward(name) for name in cfg.rewards.weights], completion_text)

    # Training (GRPO): the final weights go to adapter/ (model/ for full fine-tuning)
    output_dir = run.stage_checkpoints_dir(stage)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards.wrapped(),
        args=grpo_arguments(cfg, run, output_dir),
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[RunMetricsCallback(run, stage=stage), GracefulStop(control)],
    )
    train_stage(trainer, run, control, output_dir, run.artifact_dir(None, cfg.finetune.method == "full"),
                cfg.model.max_memory_gb, stage=stage, stages=stages)


def main(argv=None) -> int:
    return run_training_main(
        argv, config_cls=ImageConfig, prefix="image", default_config=DEFAULT_CONFIG, description=__doc__, train=train,
        modality="image", estimate="image_vlm.estimate", preflight=preflight,
    )


def preflight(cfg: ImageConfig) -> str | None:
    """Why this config must not start (on this machine), before the GPU lock is taken."""
    if cfg.method == DPO:
        return unused_stages_problem(cfg.pairs, [WARM_START] if cfg.warm_start.enabled else [])
    return vllm_problem(cfg.train)


if __name__ == "__main__":
    sys.exit(main())
