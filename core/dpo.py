"""The DPO stage both recipes share: its trainer arguments, its reference model, and where a run's DPO starts.

The loss is TRL's (`trl.DPOTrainer`, sigmoid loss by default: -log σ(β·[(log π(y_w|x) - log π_ref(y_w|x)) -
(log π(y_l|x) - log π_ref(y_l|x))]), Rafailov et al. 2023, eq. 7). The image recipe hands it TRL's own vision
collator; the video recipe hands it batches from its own collator in the same layout (chosen rows, then rejected
rows, with a `completion_mask`), so both train through the same loss and log the same metrics.
"""

from __future__ import annotations

from pathlib import Path

from core.config import ConfigError, DPOSection, FinetuneSection, ModelSection, PairsSection
from core.runs import RunDir


def dpo_arguments(cfg, dpo: DPOSection, run: RunDir, output_dir: Path):
    """TRL's DPOConfig for the DPO stage; `dpo.trainer` passes through verbatim and TRL validates it."""
    from trl import DPOConfig

    from core.models import trainer_config

    return trainer_config(
        DPOConfig, cfg, run, output_dir, "dpo", dpo.trainer, **dpo.trainer_arguments(),
        beta=dpo.beta,
        # RPO (Pang et al. 2024): the chosen answers' negative log-likelihood beside the preference loss.
        **({"loss_type": [dpo.loss_type, "sft"], "loss_weights": [1.0, dpo.sft_weight]} if dpo.sft_weight else
           {"loss_type": [dpo.loss_type]}),
        # Pairs are never truncated: a cut answer is not the answer that was scored.
        max_length=None,
    )


def reference_model(model: ModelSection, finetune: FinetuneSection, start: Path | None):
    """DPO's reference: None under LoRA and QLoRA, where TRL scores the reference with the adapter switched off
    (or, when DPO continues an adapter, with a frozen copy of that adapter alone), never a second copy of the
    weights; under full fine-tuning, the start's weights loaded once more and frozen."""
    if finetune.method != "full":
        return None
    from core.models import load_model

    source = model if start is None else model.model_copy(update={"name": str(start), "revision": None})
    reference = load_model(source, finetune).eval()
    reference.requires_grad_(False)
    return reference


def unused_stages_problem(pairs: PairsSection, stages: list[str]) -> str | None:
    """Why a DPO run with `pairs.source_run` must not start: the stages before it would train weights nothing uses,
    since pairs and DPO start from the source run. None when there is no such stage.

    >>> unused_stages_problem(PairsSection(source_run="runs/a"), ["warm_start"]).split(", so ")[1]
    'the warm_start stage(s) before it would train for nothing: turn them off, or drop pairs.source_run to start DPO from them'
    >>> unused_stages_problem(PairsSection(), ["warm_start"]) is None
    True
    """
    if not pairs.source_run or not stages:
        return None
    return (
        f"pairs.source_run ({pairs.source_run}) starts DPO from that run's weights, so the {', '.join(stages)} "
        f"stage(s) before it would train for nothing: turn them off, or drop pairs.source_run to start DPO from them"
    )


def source_run_start(pairs: PairsSection, model: ModelSection) -> Path | None:
    """The weights of `pairs.source_run` (a finished run of the same base model), where its pairs are sampled and
    its DPO starts; None without a source run. The run's `config.yaml` names its model under `model.name` in
    either recipe (the shared `ModelSection`).

    Raises:
        ConfigError: the run has no final weights, or trained another model than this config's.
    """
    if not pairs.source_run:
        return None
    source = RunDir(pairs.source_run)
    artifact = source.final_artifact() if source.exists() else None
    if artifact is None:
        raise ConfigError(f"pairs.source_run: {pairs.source_run} is not a finished run (no adapter/ or model/)")
    trained = source.read_config()["model"]["name"]
    if trained != model.name:
        raise ConfigError(
            f"pairs.source_run: {source.id} trained model {trained}, but this config trains {model.name}; "
            "DPO continues the weights that sampled its pairs, so the two must match"
        )
    return artifact


def load_sampling_model(pairs: PairsSection, model: ModelSection, finetune: FinetuneSection):
    """(model, where its weights come from) for the pairs CLIs: `pairs.source_run`'s weights, else the base model."""
    from core.models import load_model, load_tuned

    start = source_run_start(pairs, model)
    return (load_tuned(model, start, finetune) if start else load_model(model)), start or model.name
