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
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The full-size architectures live in the product (the pre-launch estimate counts them too); benches use them from there.
from core.architectures import build_random_model, meta_parameter_counts, parameter_counts  # noqa: E402,F401
from core.families.internvl import INTERNVL3_8B, internvl3_8b_config  # noqa: E402,F401
from core.families.qwen2_5_vl import QWEN2_5_VL_7B, qwen2_5_vl_7b_config  # noqa: E402,F401

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
    "decord2",
    "torchcodec",
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

def estimated_memory(module: str, cfg, measured_peak_gib: float | None) -> dict[str, Any]:
    """The product's pre-launch estimate of a row's config beside its measured peak (and their ratio), so
    `bench/RESULTS.md` can keep the estimate honest."""
    try:
        result = importlib.import_module(module).estimate(cfg, with_advice=False)
    except Exception as error:  # noqa: BLE001 - a row without an estimate still reports what it measured
        return {"estimate_note": f"no estimate: {error}"}
    return {
        "estimated_peak_gib": result.peak_memory_gib,
        "estimated_steady_gib": result.steady_memory_gib,
        "measured_over_estimate": ratio(measured_peak_gib, result.peak_memory_gib),
    }


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
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
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


def quiet(arguments):
    """The recipe's trainer arguments without progress bars and below-error logs: the benchmarks print their own
    table. Set here rather than through `train.trainer`, whose allowlist leaves logging to the product."""
    arguments.disable_tqdm = True
    arguments.log_level = "error"
    return arguments


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
