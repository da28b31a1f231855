"""The model card an export writes beside its weights: `README.md` in the Hub's format (YAML metadata, then markdown).

`model_card` is a pure function of what the run folder says: the resolved config, the status, the evaluation
reports and, when the trainer wrote one, the provenance. `core.export` reads those files and writes the card.

A card leaves the box, so it never holds a secret or a local path: it is built only from chosen fields, the paths
among them cut to their last part, and `redact` then replaces any absolute path and any secret's value that is
left, as a last line of defence.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.page_paths import is_local_model
from core.tiny import TINY_PREFIX
from core.verdict import verdict_sentence

PIPELINE_TAG = "image-text-to-text"
TAG = "vlm-playbook"  # every card this project writes carries it, so export can tell its card from PEFT's
REPO_PLACEHOLDER = "ORG/NAME"  # the snippet's repo id until the folder is pushed somewhere

# The shipped presets' base models and their licences, as each model's Hub page states it (checked 2026-12):
# (licence id, licence_name for `other`, a note). A model not listed gets `other` and a note to check its page.
BASE_LICENSES: dict[str, tuple[str, str | None, str]] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": ("apache-2.0", None, ""),
    "Qwen/Qwen3-VL-8B-Instruct": ("apache-2.0", None, ""),
    # The -hf conversion's page says "License: qwen" (its Qwen2.5 language tower's licence), where the original
    # OpenGVLab/InternVL3-8B says apache-2.0 and the InternVL code is MIT: the weights follow the Qwen licence.
    "OpenGVLab/InternVL3-8B-hf": ("other", "qwen", "the Qwen licence of its Qwen2.5 language model"),
    "OpenGVLab/InternVL3_5-8B-HF": ("apache-2.0", None, ""),
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct": ("apache-2.0", None, ""),
    "google/gemma-3-4b-it": ("gemma", None, "the Gemma Terms of Use (ai.google.dev/gemma/terms)"),
}

# The image recipe's real data, as `python -m image_vlm.data download` fetches it into data/wildfire/.
WILDFIRE_KAGGLE = "abdelghaniaaba/wildfire-prediction-dataset"
WILDFIRE_URL = f"https://www.kaggle.com/datasets/{WILDFIRE_KAGGLE}"

# An absolute or home-relative path: a slash not preceded by a word, a dot, a colon, `<` or another slash (so neither
# `org/name`, `https://host/x` nor `</SOLUTION>` matches), then at least one segment.
_PATH = re.compile(r"(?<![\w.:/~<])(?:~|/)(?:/?[\w.+@-]+)+/?")
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)


def recipe_of(config: Mapping[str, Any]) -> str:
    """`image_vlm` or `video_vlm`, from a resolved config's sections (only the image recipe has rewards).

    >>> recipe_of({"rewards": {}}), recipe_of({"stages": []})
    ('image_vlm', 'video_vlm')
    """
    return "image_vlm" if "rewards" in config else "video_vlm"


def public_name(value: str) -> str:
    """A path cut to its last part (what a reader elsewhere can use); anything else as it is.

    >>> public_name("/home/me/data/wildfire"), public_name("Qwen/Qwen2.5-VL-7B-Instruct"), public_name("tiny:internvl")
    ('wildfire', 'Qwen/Qwen2.5-VL-7B-Instruct', 'tiny:internvl')
    """
    if value.startswith(("/", "~", "./", "../")) or "\\" in value:
        return Path(value.replace("\\", "/")).name
    return value


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with every secret's value (an environment variable named like a token, key, secret or password)
    replaced by `***`, and every absolute path by its last part.

    >>> redact("weights from /tmp/run-1/merged and https://huggingface.co/Qwen/x", {})
    'weights from merged and https://huggingface.co/Qwen/x'
    >>> redact("token hf_abcdefgh here", {"HF_TOKEN": "hf_abcdefgh", "HOME": "/root"})
    'token *** here'
    """
    env = os.environ if env is None else env
    for name, value in env.items():
        if _SECRET_NAME.search(name) and value and len(value) >= 6:
            text = text.replace(value, "***")
    return _PATH.sub(lambda m: Path(m.group(0).rstrip("/")).name or "", text)


def base_license(model_name: str) -> tuple[str, str | None, str]:
    """(licence id, licence name for `other`, note) of a base model; unknown models read `other`.

    >>> base_license("Qwen/Qwen2.5-VL-7B-Instruct")
    ('apache-2.0', None, '')
    >>> base_license("tiny:qwen2_5_vl")[0], base_license("someone/else")[0]
    ('other', 'other')
    """
    if model_name in BASE_LICENSES:
        return BASE_LICENSES[model_name]
    if model_name.startswith(TINY_PREFIX):
        return "other", None, "a tiny random-weight test model built on this box: no licence of its own"
    return "other", None, "unknown to this project: check the base model's own card before sharing"


def model_card(config: Mapping[str, Any], status: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]],
               provenance: Mapping[str, Any] | None = None, adapter: bool = False,
               env: Mapping[str, str] | None = None) -> str:
    """The card's text: YAML metadata (base_model, library_name, pipeline_tag, license, datasets, tags,
    model-index), then the task, method, hyperparameters, time and hardware, evaluation and how to load it.

    `reports` are the run's `eval/*.json` by name (`test`, `test-vs-warm_start`); `adapter` says the folder holds a
    PEFT adapter rather than a whole model.

    >>> config = {"method": "grpo", "model": {"name": "Qwen/Qwen2.5-VL-7B-Instruct"}, "rewards": {"weights": {}},
    ...           "finetune": {"method": "lora", "r": 8, "alpha": 16}, "train": {"max_steps": 3},
    ...           "data": {"root": "/home/me/data/wildfire", "synthetic": False}}
    >>> report = {"split": "test", "baseline": "base", "models": {"base": {"n": 8}, "tuned": {"n": 8}},
    ...           "headline": {"metric": "accuracy", "label": "accuracy", "base": 0.5, "tuned": 0.875,
    ...                        "difference": 0.375, "ci95": [0.2, 0.52], "verdict": "better"}}
    >>> card = model_card(config, {"state": "finished"}, {"test": report}, adapter=True, env={})
    >>> import yaml; meta = yaml.safe_load(card.split("---")[1])
    >>> meta["base_model"], meta["library_name"], meta["license"], meta["datasets"]
    ('Qwen/Qwen2.5-VL-7B-Instruct', 'peft', 'apache-2.0', ['abdelghaniaaba/wildfire-prediction-dataset'])
    >>> meta["model-index"][0]["results"][0]["metrics"][0]["value"]
    0.875
    >>> "/home/me" in card, "tuned is better than base (+0.375)" in card
    (False, True)
    """
    from huggingface_hub import EvalResult, ModelCardData

    recipe = recipe_of(config)
    model = dict(config.get("model") or {})
    name = str(model.get("name") or "")
    tiny = name.startswith(TINY_PREFIX)
    local = not tiny and is_local_model(name)
    base = public_name(name) if local else name
    license_id, license_name, license_note = base_license(name)
    if local:
        license_note = "a local folder: check the licence of the model it came from"
    data = dict(config.get("data") or {})
    dataset_id, dataset_label = _dataset(recipe, data)
    finetune = dict(config.get("finetune") or {})
    method = str(config.get("method") or "")
    tags = [TAG, recipe.replace("_", "-"), method, finetune.get("method") or "lora"]
    tags += ["tiny-test-model"] if tiny else []
    tags += ["synthetic-data"] if data.get("synthetic") else []

    scored = [(key, r) for key, r in sorted(reports.items()) if isinstance(r.get("headline"), Mapping)]
    results = [
        EvalResult(task_type=PIPELINE_TAG, task_name=_task_name(recipe),
                   dataset_type=dataset_id or re.sub(r"\W+", "-", dataset_label).strip("-"),
                   dataset_name=f"{dataset_label} ({r.get('split', key)})",
                   dataset_split=str(r.get("split", key)), metric_type=str(r["headline"].get("metric", "score")),
                   metric_value=r["headline"].get("tuned"),
                   metric_name=f"{r['headline'].get('label', 'score')} (tuned"
                               + ("" if r.get("baseline", "base") == "base" else f", against {r['baseline']}") + ")")
        for key, r in scored if r["headline"].get("tuned") is not None
    ]
    title = f"{_short(base)} fine-tuned: {_task_name(recipe)}"
    meta = ModelCardData(
        base_model=base or None, library_name="peft" if adapter else "transformers", pipeline_tag=PIPELINE_TAG,
        license=license_id, license_name=license_name, datasets=[dataset_id] if dataset_id else None, tags=tags,
        model_name=title if results else None, eval_results=results or None,
    )
    body = [
        f"# {title}", "",
        _about(recipe, name, base, tiny, local, adapter, license_id, license_name, license_note, dataset_id,
               dataset_label, data, config),
        "## Training", "", *_hyperparameters(recipe, config), "",
        *_time_and_hardware(status, provenance), "",
        "## Evaluation", "", *_evaluation(scored), "",
        "## How to load it", "", _loading(base, adapter, tiny or local), "",
        "Made with the VLM fine-tuning playbook (`python -m <recipe>.export`, then `python -m core.export push`).", "",
    ]
    return redact(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(body), env)


# ---------------------------------------------------------------------------------------------- pieces


def _short(base: str) -> str:
    return base.split("/")[-1] if base else "model"


def _task_name(recipe: str) -> str:
    return "wildfire yes/no from satellite images" if recipe == "image_vlm" else "dashcam clip to a JSON report"


def _dataset(recipe: str, data: Mapping[str, Any]) -> tuple[str | None, str]:
    """(the dataset's id where known, a name for it)."""
    root = public_name(str(data.get("root") or "")) or "data"
    if data.get("synthetic"):
        return None, f"synthetic ({root})"
    if recipe == "image_vlm" and root == "wildfire":
        return WILDFIRE_KAGGLE, "Wildfire Prediction Dataset (Kaggle)"
    return None, f"own data ({root})"


def _about(recipe, name, base, tiny, local, adapter, license_id, license_name, license_note, dataset_id,
           dataset_label, data, config) -> str:
    if recipe == "image_vlm":
        labels = data.get("labels") or {}
        answers = " or ".join(f"`{a}`" for a in dict.fromkeys(labels.values())) or "a label"
        task = (f"Answers *{data.get('question', 'the question')}* about a satellite image with {answers} inside "
                "`<SOLUTION>…</SOLUTION>`" + (", after its reasoning in `<REASONING>…</REASONING>`."
                                              if data.get("reasoning", True) else "."))
    else:
        schema = public_name(str(data.get("schema_file") or "")) or "the built-in dashcam schema"
        task = (f"Watches a dashcam clip ({data.get('num_frames', '?')} frames) and reports it as one JSON object "
                f"following {schema}.")
    if tiny:
        origin = f"`{name}`, a tiny random-weight model built on this box for tests (not a Hub model)"
    elif local:
        origin = f"a local model folder (`{base}`)"
    else:
        origin = f"[{base}](https://huggingface.co/{base})"
    what = "a LoRA adapter (load it on top of the base model)" if adapter else "a standalone model"
    if (config.get("finetune") or {}).get("method") != "full" and not adapter:
        what += " (the LoRA adapter merged into the base weights)"
    licence = license_name or license_id
    source = f"[{dataset_label}]({WILDFIRE_URL})" if dataset_id == WILDFIRE_KAGGLE else dataset_label
    lines = [
        task, "",
        f"- **Base model:** {origin}",
        f"- **This folder:** {what}",
        f"- **Recipe:** `{recipe}`, {_method_words(config)}",
        f"- **Data:** {source}",
        f"- **Licence:** `{licence}`" + (f" ({license_note})" if license_note else ""),
        "",
    ]
    return "\n".join(lines)


def _method_words(config: Mapping[str, Any]) -> str:
    method = str(config.get("method") or "")
    finetune = config.get("finetune") or {}
    words = {"grpo": "GRPO (rewards on fresh rollouts)", "dpo": "DPO on ranked answer pairs",
             "sft": "supervised fine-tuning"}.get(method, method)
    kind = {"lora": "LoRA", "qlora": "QLoRA (4-bit base)", "full": "full fine-tuning"}.get(finetune.get("method"), "")
    warm = (config.get("warm_start") or {}).get("enabled")
    stages = [s.get("name") for s in config.get("stages") or [] if isinstance(s, Mapping)]
    extra = ", after an SFT warm start" if warm else ""
    extra += f", stages: {', '.join(map(str, stages))}" if stages else ""
    return f"{words} with {kind}{extra}"


def _hyperparameters(recipe: str, config: Mapping[str, Any]) -> list[str]:
    finetune = config.get("finetune") or {}
    rows: list[tuple[str, Any]] = [("finetune.method", finetune.get("method"))]
    if finetune.get("method") in ("lora", "qlora"):
        parts = [p for p in ("vision_attention", "vision_mlp", "language_attention", "language_mlp") if finetune.get(p)]
        rows += [("finetune.r", finetune.get("r")), ("finetune.alpha", finetune.get("alpha")),
                 ("finetune.dropout", finetune.get("dropout")), ("adapted", ", ".join(parts) or "-")]
    section = "dpo" if config.get("method") == "dpo" else "train"
    values = config.get(section) or {}
    keys = ["max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
            "lr_scheduler_type", "warmup_steps", "optim", "seed", "num_generations", "max_completion_length",
            "temperature", "beta", "loss_type", "max_length", "sft_weight"]
    rows += [(f"{section}.{k}", values[k]) for k in keys if k in values]
    if recipe == "image_vlm":
        rows += [("rewards.weights", ", ".join(f"{k}={v}" for k, v in ((config.get("rewards") or {}).get("weights")
                                                                        or {}).items()))]
        warm = config.get("warm_start") or {}
        if warm.get("enabled"):
            rows += [("warm_start.max_steps", warm.get("max_steps")), ("warm_start.answers", warm.get("answers"))]
        rows += [("data.max_pixels", (config.get("data") or {}).get("max_pixels"))]
    else:
        data = config.get("data") or {}
        rows += [("data.num_frames", data.get("num_frames")), ("data.frame_max_side", data.get("frame_max_side"))]
    rows = [(k, v) for k, v in rows if v is not None]
    return ["| setting | value |", "|---|---|", *(f"| `{k}` | {public_name(str(v))} |" for k, v in rows)]


def _time_and_hardware(status: Mapping[str, Any], provenance: Mapping[str, Any] | None) -> list[str]:
    lines = []
    state = status.get("state")
    if status.get("started"):
        took = status.get("active_s")
        lines.append(f"- **Trained:** {status['started']} → {status.get('ended') or '…'}"
                     + (f" ({float(took) / 60:.1f} min running)" if isinstance(took, (int, float)) else "")
                     + (f", ended `{state}`" if state else ""))
    if status.get("step") is not None:
        lines.append(f"- **Steps:** {status.get('step')} of {status.get('total') or '?'}")
    if not provenance:
        lines.append("- **Hardware:** not recorded (this run has no provenance)")
        return lines
    gpu = provenance.get("gpu")
    if isinstance(gpu, Mapping) and gpu.get("name"):
        count = gpu.get("count") or 1
        lines.append(f"- **GPU:** {count} × {gpu['name']}"
                     + (f", driver {gpu['driver']}" if gpu.get("driver") else "")
                     + (f", CUDA {gpu['cuda']}" if gpu.get("cuda") else ""))
    else:
        lines.append("- **GPU:** none (CPU)")
    if provenance.get("cpu"):
        lines.append(f"- **CPU:** {provenance['cpu']}")
    libraries = provenance.get("libraries") or {}
    if libraries:
        lines.append("- **Libraries:** " + ", ".join(f"{k} {v}" for k, v in libraries.items() if v))
    model = provenance.get("model") or {}
    if model.get("revision"):
        lines.append(f"- **Base weights revision:** `{model['revision']}`")
    data = provenance.get("data") or {}
    if data.get("fingerprint"):
        lines.append(f"- **Data fingerprint:** `{data['fingerprint']}`")
    code = provenance.get("code") or {}
    if code.get("git_commit"):
        dirty = " (with local changes)" if code.get("dirty") else ""
        lines.append(f"- **Code:** commit `{code['git_commit']}`{dirty}")
    elif code.get("package_version"):
        lines.append(f"- **Code:** version {code['package_version']}")
    if provenance.get("seed") is not None:
        lines.append(f"- **Seed:** {provenance['seed']}")
    return lines


def _evaluation(scored: list[tuple[str, Mapping[str, Any]]]) -> list[str]:
    if not scored:
        return ["Not evaluated yet: run `python -m <recipe>.evaluate --run RUN` before exporting to put the "
                "held-out results here."]
    lines = []
    for key, report in scored:
        headline = report["headline"]
        baseline = report.get("baseline", "base")
        n = (report.get("models") or {}).get("tuned", {}).get("n")
        lines += [f"### `{report.get('split', key)}` split" + (f", {n} samples" if n else "")
                  + ("" if baseline == "base" else f", against the {baseline} stage's weights"), ""]
        lines += [f"| metric | {baseline} | tuned | {baseline} 95 % CI | tuned 95 % CI |", "|---|---|---|---|---|"]
        models = report.get("models") or {}
        before, after = models.get("base") or {}, models.get("tuned") or {}
        metrics = [headline.get("metric")] + [k for k in (after.get("ci95") or {}) if k != headline.get("metric")]
        for metric in metrics:
            b, t = before.get(metric, headline.get("base") if metric == headline.get("metric") else None), after.get(
                metric, headline.get("tuned") if metric == headline.get("metric") else None)
            if not isinstance(t, (int, float)):
                continue
            lines.append(f"| {metric} | {_num(b)} | {_num(t)} | {_ci((before.get('ci95') or {}).get(metric))} "
                         f"| {_ci((after.get('ci95') or {}).get(metric))} |")
        lines.append("")
        figures = (headline.get("base"), headline.get("tuned"), headline.get("difference"))
        if headline.get("ci95") and None not in figures:  # an old report, or nothing resampled: the word alone
            lines.append(f"**Verdict:** {verdict_sentence(headline, baseline)}.")
        else:
            lines.append(f"**Verdict:** {headline.get('verdict', 'not stated')}.")
        if headline.get("interval"):
            lines.append(f"The interval of the difference: {headline['interval']}.")
        for warning in report.get("warnings") or []:
            lines.append(f"- warning: {warning}")
        lines.append("")
    return lines


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))


def _ci(interval: Any) -> str:
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return f"[{interval[0]:.3f}, {interval[1]:.3f}]"
    return ""


def _loading(base: str, adapter: bool, not_on_hub: bool) -> str:
    note = ("\n# The base model is not on the Hub (a tiny or local model): load it from where it was built."
            if not_on_hub else "")
    if adapter:
        return (f"```python{note}\nfrom peft import PeftModel\n"
                "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
                f'base = AutoModelForImageTextToText.from_pretrained("{base}", dtype="auto", device_map="auto")\n'
                f'model = PeftModel.from_pretrained(base, "{REPO_PLACEHOLDER}")  # this repository\n'
                f'processor = AutoProcessor.from_pretrained("{REPO_PLACEHOLDER}")\n```')
    return (f"```python\nfrom transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
            f'model = AutoModelForImageTextToText.from_pretrained("{REPO_PLACEHOLDER}", dtype="auto", '
            'device_map="auto")  # this repository\n'
            f'processor = AutoProcessor.from_pretrained("{REPO_PLACEHOLDER}")\n```')
