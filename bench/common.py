"""Shared helpers for the benchmarks in bench/: environment facts, timing, memory, output, full-size models.

Every benchmark script:

* times the product's own code (core/, image_vlm/, video_vlm/), never a copy of it;
* takes every figure as a ratio against a baseline measured in the same run, on the same device;
* prints a table and writes one JSON file (`--out`, default `bench/results/<name>.json`) holding
  `device`, `versions`, `config`, `figures` (with the ratio) and `notes`;
* has `--tiny`: the tiny random-weight models of `core.tiny` and small synthetic data, on CPU in about a minute.

Full-size runs build the published architectures with random weights straight in bf16 on the GPU (no download:
the machines that run them have no hub access). Without CUDA they are skipped with the reason written to the JSON.

    python bench/common.py    # prints the device and library versions the benchmarks would record
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
SCHEMA_VERSION = 1

# Libraries whose versions change the numbers. Optional ones are recorded as None when missing.
_VERSIONED = (
    "torch",
    "torchvision",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "av",
    "opencv-python-headless",
    "numpy",
    "decord",
    "liger-kernel",
    "vllm",
    "flash-attn",
    "bitsandbytes",
)

# Dense bf16 tensor-core peak per GPU (TFLOP/s), from the vendor data sheets; used for MFU.
_PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 SXM", 989.0),
    ("H100 80GB HBM3", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 756.0),  # an unlabelled H100 gets the lower (PCIe) figure, so MFU is never overstated
    ("A100", 312.0),
    ("L40S", 362.0),
    ("GB10", 104.0),  # DGX Spark, dense bf16 (the vendor's 1 PFLOP figure is sparse FP4)
)


# ---------------------------------------------------------------------------------------------- CLI


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark shares: --tiny, --out and --seed."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random-weight models and small synthetic data (CPU, ~1 min)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="JSON output (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: 1 with --tiny, else torch's)")
    return parser


# ---------------------------------------------------------------------------------------------- environment


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    info: dict[str, Any] = {
        "kind": "cuda" if torch.cuda.is_available() else "cpu",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host_memory_gib": _host_memory_gib(),
    }
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            name=torch.cuda.get_device_name(index),
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            peak_bf16_tflops=peak_bf16_tflops(),
        )
    else:
        info["name"] = info["cpu"]
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def peak_bf16_tflops(override: float | None = None) -> float | None:
    """Dense bf16 peak of the current GPU in TFLOP/s (None on CPU or an unknown GPU, unless overridden)."""
    if override:
        return float(override)
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    for key, value in _PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """Library versions (None = not installed) and the repository commit the run measured."""
    found: dict[str, Any] = {name: package_version(name) for name in _VERSIONED}
    found["repo_commit"] = _git(["rev-parse", "--short", "HEAD"])
    status = _git(["status", "--porcelain", "--", "core", "image_vlm", "video_vlm", "bench"])
    found["repo_dirty"] = bool(status) if status is not None else None
    return found


def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def module_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_requirement(modules: Iterable[str] = (), cuda: bool = False) -> str | None:
    """Why a variant cannot run here ("<module> is not installed", "needs CUDA"), or None when it can."""
    reasons = [f"{module} is not installed" for module in modules if not module_available(module)]
    if cuda and not has_cuda():
        reasons.append("needs a CUDA GPU")
    return "; ".join(reasons) or None


def full_size_skip_reason() -> str | None:
    """Full-size (7B/8B) runs need a CUDA GPU; None when there is one."""
    if has_cuda():
        return None
    return "needs a CUDA GPU (full size = bf16 7-8B model); run with --tiny on CPU"


# ---------------------------------------------------------------------------------------------- timing


def sync() -> None:
    """Wait for queued GPU work so wall-clock times cover it (no-op on CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def now() -> float:
    """`time.perf_counter()` after a CUDA sync."""
    sync()
    return time.perf_counter()


@contextlib.contextmanager
def timed(into: list[float] | None = None) -> Iterator[dict[str, float]]:
    """Time a block (CUDA-synchronised): `with timed() as t: ...` then `t["s"]`; also appended to `into`."""
    result = {"s": 0.0}
    start = now()
    try:
        yield result
    finally:
        result["s"] = now() - start
        if into is not None:
            into.append(result["s"])


def wrap_timed(owner: Any, name: str, into: list[tuple[float, float]]) -> Callable:
    """Replace `owner.name` (a bound method or function attribute) by a CUDA-synchronised timed call.

    Each call appends (start, seconds) to `into`; returns the original so callers can restore it.
    """
    original = getattr(owner, name)

    def timed_call(*args, **kwargs):
        start = now()
        try:
            return original(*args, **kwargs)
        finally:
            into.append((start, now() - start))

    setattr(owner, name, timed_call)
    return original


def mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


# ---------------------------------------------------------------------------------------------- memory


def reset_peak_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_memory_gib() -> float | None:
    """Peak memory allocated by tensors since the last reset (None on CPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def gpu_allocated_gib() -> float | None:
    """Memory held by live tensors now (None on CPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.memory_allocated() / 2**30


def peak_gpu_reserved_gib() -> float | None:
    """Peak memory held by the caching allocator since the last reset (what nvidia-smi roughly shows)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_reserved() / 2**30


def rss_gib() -> float | None:
    """Resident set size of this process now."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**30
    except ImportError:
        return None


def peak_rss_gib() -> float:
    """Highest resident set size of this process so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform != "darwin" else peak / 2**30


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def parameter_counts(model) -> dict[str, int]:
    """Total, trainable and per-tower parameter counts (a shared storage is counted once)."""
    seen: set[int] = set()
    total = trainable = vision = 0
    from core.models import VISION_PARTS

    for name, param in model.named_parameters():
        key = id(param)
        if key in seen:
            continue
        seen.add(key)
        count = param.numel()
        total += count
        if param.requires_grad:
            trainable += count
        if any(part in name.split(".") for part in VISION_PARTS):
            vision += count
    return {"total": total, "trainable": trainable, "vision": vision, "language_and_projector": total - vision}


def parameter_bytes(*models) -> int:
    """Bytes of parameter storage across models, each distinct storage counted once (shared weights are not doubled)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for model in models:
        for param in model.parameters():
            if param.device.type == "meta":
                total += param.numel() * param.element_size()
                continue
            storage = param.untyped_storage()
            key = (str(param.device), storage.data_ptr())
            if key in seen:
                continue
            seen.add(key)
            total += storage.nbytes()
    return total


# ---------------------------------------------------------------------------------------------- full-size models

# Qwen/Qwen2.5-VL-7B-Instruct, config.json as published (checked against a verbatim copy of the hub file, exported
# by transformers 4.53.1), written in transformers 5's nested form (rope_theta moves into rope_parameters).
QWEN2_5_VL_7B = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "use_sliding_window": False,
        "rms_norm_eps": 1e-6,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "out_hidden_size": 3584,
        "initializer_range": 0.02,
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
}

# OpenGVLab/InternVL3-8B-hf: InternViT-300M-448px-V2.5 + Qwen2.5-7B, pixel-shuffle 0.5 -> 256 tokens per 448 px
# frame. Checked against published config fragments (vision 1024/4096/24 layers/16 heads/448/14, vocab 151674,
# image_token_id 151667, image_seq_length 256, downsample_ratio 0.5); fields not in them (qkv bias, LayerNorm,
# layer scale 0.1, mean pooling) are InternViT-300M's and transformers' InternVLVisionConfig defaults.
INTERNVL3_8B = {
    "text_config": {
        "model_type": "qwen2",
        "vocab_size": 151674,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "max_window_layers": 28,
        "use_sliding_window": False,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "hidden_act": "gelu",
        "image_size": 448,
        "patch_size": 14,
        "attention_bias": True,
        "use_qk_norm": False,
        "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6,
        "layer_scale_init_value": 0.1,
        "use_absolute_position_embeddings": True,
        "use_mean_pooling": True,
    },
    "image_token_id": 151667,
    "image_seq_length": 256,
    "downsample_ratio": 0.5,
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "default",
    "tie_word_embeddings": False,
}


def _token_ids(tokenizer, names: dict[str, str]) -> dict[str, int]:
    ids = {}
    for key, token in names.items():
        value = tokenizer.convert_tokens_to_ids(token)
        if value is None or value == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r}")
        ids[key] = value
    return ids


def qwen2_5_vl_7b_config(tokenizer=None):
    """Qwen2.5-VL-7B's architecture; with `tokenizer`, its special-token ids are used instead of the published ones.

    The benchmarks run without hub access, so prompts are tokenised by the tiny model's tokenizer (same chat
    template and special tokens, smaller BPE vocabulary); the model must then expect that tokenizer's ids.
    """
    import copy

    from transformers import Qwen2_5_VLConfig

    values = copy.deepcopy(QWEN2_5_VL_7B)
    if tokenizer is not None:
        ids = _token_ids(
            tokenizer,
            {
                "image_token_id": "<|image_pad|>",
                "video_token_id": "<|video_pad|>",
                "vision_start_token_id": "<|vision_start|>",
                "vision_end_token_id": "<|vision_end|>",
                "bos": "<|endoftext|>",
                "eos": "<|im_end|>",
            },
        )
        values.update({k: v for k, v in ids.items() if k.endswith("_token_id")})
        values["text_config"].update(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["bos"])
    return Qwen2_5_VLConfig(**values)


def internvl3_8b_config(tokenizer=None):
    """InternVL3-8B-hf's architecture; with `tokenizer`, its `<IMG_CONTEXT>` and end ids replace the published ones."""
    import copy

    from transformers import InternVLConfig

    values = copy.deepcopy(INTERNVL3_8B)
    if tokenizer is not None:
        ids = _token_ids(tokenizer, {"image_token_id": "<IMG_CONTEXT>", "bos": "<|endoftext|>", "eos": "<|im_end|>"})
        values["image_token_id"] = ids["image_token_id"]
        values["text_config"].update(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["bos"])
    return InternVLConfig(**values)


def build_random_model(model_cls, config, *, device: str | None = None, dtype=None, attn_implementation: str | None = None):
    """A model of `config`'s architecture with random weights, created directly where it will run.

    On CUDA the parameters are allocated and initialised on the GPU in bf16 (no host copy, no download, a few
    seconds for 8B parameters). `device="meta"` builds it without memory, for parameter counts.
    """
    import copy

    import torch

    config = copy.deepcopy(config)  # _from_config writes dtype and attention choice into the config it gets
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with torch.device(device):
        model = model_cls._from_config(config, **kwargs)
    if device != "meta":
        model.to(device)
    return model


def meta_parameter_counts(model_cls, config) -> dict[str, int]:
    """Parameter counts of an architecture without allocating it (works on CPU for 8B models)."""
    counts = parameter_counts(build_random_model(model_cls, config, device="meta"))
    counts.pop("trainable")  # before LoRA every weight is trainable: not a useful figure
    return counts


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------- output


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table; `columns` are (key, header) pairs; missing values print as "-"."""
    header = [title for _, title in columns]
    body = [[format_value(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in body]
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """Make configs and figures JSON-safe: paths and dtypes to strings, NaN/inf to None, tuples to lists."""
    import math

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):
        try:
            return jsonable(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def result_payload(
    name: str,
    *,
    tiny: bool,
    config: dict[str, Any],
    figures: dict[str, Any],
    status: str = "ok",
    notes: Sequence[str] = (),
    started: float | None = None,
) -> dict[str, Any]:
    """The JSON every benchmark writes. `figures` holds `rows` (one per variant) and the headline `ratio`."""
    return {
        "benchmark": name,
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "mode": "tiny" if tiny else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 2) if started is not None else None,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device_info(),
        "versions": versions(),
        "config": config,
        "figures": figures,
        "notes": list(notes),
    }


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    return path


def finish(path: Path, payload: dict[str, Any], table: str) -> int:
    """Print the table and where the JSON went; write the JSON. Returns the exit code (0)."""
    print(table, flush=True)
    for note in payload.get("notes", ()):
        print(f"note: {note}", flush=True)
    written = write_json(path, payload)
    print(f"wrote {written}", flush=True)
    return 0


def describe_env() -> str:
    """A short human summary of device and versions, for the top of each run."""
    info = device_info()
    found = versions()
    libs = ", ".join(f"{k} {v}" for k, v in found.items() if v and k in ("torch", "transformers", "trl", "peft", "av"))
    return f"device: {info['name']} ({info['kind']}); {libs}"


def quiet_libraries() -> None:
    """Keep benchmark output to the tables: silence progress bars, library chatter and deprecation notices."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass


def set_threads(tiny: bool, threads: int | None) -> int:
    """Intra-op CPU threads: `threads` if given, else 1 in tiny mode, else torch's default.

    Tiny models run kernels of a few microseconds, where thread hand-offs cost more than they save, and a busy
    machine (tests running beside the benchmark) makes spinning threads far slower still.
    """
    import torch

    if threads is None and tiny:
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def remove_printer(trainer) -> None:
    """Drop the trainer's per-step log printing (the benchmarks print their own table)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def main(argv: list[str] | None = None) -> int:
    """`python bench/common.py`: print what the benchmarks would record about this machine (ignores other args)."""
    info = device_info()
    found = versions()
    print(format_table([{"key": k, "value": v} for k, v in info.items()], [("key", "device"), ("value", "")]))
    print()
    print(format_table([{"key": k, "value": v} for k, v in found.items()], [("key", "library"), ("value", "version")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
