"""Base-vs-tuned compare: one copy of the weights with the adapter toggled, against two separately loaded models.

    python bench/compare.py --tiny   # CPU, tiny random Qwen2.5-VL, ~1 min
    python bench/compare.py          # CUDA: Qwen2.5-VL-7B architecture, random bf16 weights (writes ~32 GB to a temp dir)

The product answers base and tuned from ONE copy: `core.models.load_tuned` attaches the run's LoRA adapter and
`core.generation.stream_generate(use_adapter=False)` answers as the base model inside `disable_adapter()`
(ui/compare_models.py moves it to the GPU and streams the same way). The reference playbook started two vLLM servers,
one on the base and one on a merged checkpoint (up to 15 minutes each to start on a DGX Spark); with no vLLM here,
its in-process equivalent is two models loaded with `core.models.load_model`: the base and the merged checkpoint
written by `core.models.merge_adapter` (the product's export).

The adapter is made on the fly: PEFT LoRA from `core.models.apply_finetune` with the image recipe's defaults,
lora_B drawn at random (a fresh adapter is a no-op), saved to a temp folder. Each arm runs in its own process,
so load times, process memory and GPU peaks do not mix. Per arm: load time, then per answer (base, tuned) the
time to first token and decode tokens/s, after one untimed warm-up answer. Answers have a fixed length
(`min_new_tokens` = `max_new_tokens` on the model's generation config): random weights stop at random places.

Memory: peak GPU memory (CUDA), else process RSS after loading; and, everywhere, the bytes of distinct parameter
storage the arm holds, which says how many copies of the weights it keeps. With --tiny the arms share one process
(RSS is then mostly the runtime, and parameter bytes are the figure that counts); --isolate yes separates them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

NAME = "compare"
ARMS = ("one-copy", "two-copies")

COLUMNS = (
    ("arm", "arm"),
    ("status", "status"),
    ("load_s", "load s"),
    ("base_ttft_s", "base TTFT s"),
    ("base_tokens_per_s", "base tok/s"),
    ("tuned_ttft_s", "tuned TTFT s"),
    ("tuned_tokens_per_s", "tuned tok/s"),
    ("weight_copies", "weight copies"),
    ("param_gib", "param GiB"),
    ("memory_gib", "memory GiB"),
    ("memory_kind", "memory"),
)


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__)
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per answer (default: 32 tiny, 256 full = eval.max_new_tokens)")
    parser.add_argument("--repeats", type=int, default=None, help="timed answers per (arm, base|tuned) (default: 1 tiny, 3 full)")
    parser.add_argument(
        "--isolate",
        choices=("auto", "yes", "no"),
        default="auto",
        help="run each arm in its own process (auto: yes for full size, no with --tiny, where process memory is "
        "mostly the Python runtime anyway and a second interpreter start doubles the run time)",
    )
    # Internal: one arm in a child process.
    parser.add_argument("--arm", choices=ARMS, help=argparse_hidden())
    parser.add_argument("--work", type=Path, help=argparse_hidden())
    args = parser.parse_args(argv)
    args.new_tokens = args.new_tokens or (32 if args.tiny else 256)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    return args


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


# ---------------------------------------------------------------------------------------------- preparation


def model_section(args, work: Path):
    from core.config import ModelSection

    return ModelSection(name="tiny:qwen2_5_vl" if args.tiny else str(work / "base"))


def prepare(args, work: Path) -> dict[str, Any]:
    """Write what both arms load: (full size) the random base model, the adapter, the merged checkpoint, a tile."""
    import torch

    from core.config import FinetuneSection
    from core.models import apply_finetune, load_model, merge_adapter
    from image_vlm.config import ImageDataSection
    from image_vlm.synthetic import terrain_tile
    from image_vlm.task import image_size_arguments

    facts: dict[str, Any] = {}
    start = time.perf_counter()
    if not args.tiny:
        from core.architectures import write_random_checkpoint

        write_random_checkpoint("qwen2_5_vl", work / "base", seed=args.seed)
        common.free_memory()
    section = model_section(args, work)
    torch.manual_seed(args.seed)
    base = load_model(section)
    finetune = FinetuneSection()  # the image recipe's LoRA: r=32, alpha=64, language attention + MLP
    tuned = apply_finetune(base, finetune)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    tuned.save_pretrained(work / "adapter")
    facts["adapter"] = {"r": finetune.r, "alpha": finetune.alpha, "lora_B": "random normal(0, 0.02)"}
    del base, tuned
    common.free_memory()
    facts["merge"] = merge_adapter(section, work / "adapter", work / "merged")
    facts["prepare_s"] = time.perf_counter() - start
    size = ImageDataSection().max_pixels
    import numpy as np

    terrain_tile(np.random.default_rng(args.seed), size=350, fire=True).save(work / "tile.png")
    facts["image_size_arguments"] = image_size_arguments(section, size)
    return facts


# ---------------------------------------------------------------------------------------------- one arm (child)


class FirstToken:
    """Times the first forward pass (prefill + first token) and the last one of a generate() call."""

    def __init__(self, model):
        self.marks: list[float] = []
        self.handle = model.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        self.marks.append(common.now())

    def reset(self):
        self.marks = []


def answer(model, processor, messages, new_tokens: int, use_adapter: bool, clock: FirstToken) -> dict[str, Any]:
    from core.generation import stream_generate

    model.generation_config.min_new_tokens = new_tokens  # fixed-length answers (see the module docstring)
    clock.reset()
    start = common.now()
    first_text = None
    text = ""
    for text in stream_generate(model, processor, messages, max_new_tokens=new_tokens, use_adapter=use_adapter):
        if first_text is None and text:
            first_text = common.now() - start
    end = common.now()
    marks = clock.marks
    decode_s = marks[-1] - marks[0] if len(marks) > 1 else None
    return {
        "ttft_s": marks[0] - start if marks else None,
        "first_text_s": first_text,
        "tokens": len(marks),
        "tokens_per_s": (len(marks) - 1) / decode_s if decode_s else None,
        "total_s": end - start,
        "text": text,
    }


def run_arm(args) -> dict[str, Any]:
    """Load and answer for one arm; returns its figures (normally in a fresh process)."""
    import statistics

    import peft  # noqa: F401  (imported before the clock starts: load time is weights, not modules)
    import torch

    from core.config import ModelSection
    from core.media.image import open_image
    from core.models import load_model, load_processor, load_tuned
    from image_vlm.config import ImageDataSection
    from image_vlm.task import prompt_messages

    work = args.work
    section = model_section(args, work)
    data = ImageDataSection()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    processor = load_processor(section, max_pixels=data.max_pixels)  # as ui/compare_models.py loads it
    messages = prompt_messages(data, image=open_image(work / "tile.png"))
    common.reset_peak_memory()
    rss_before = common.rss_gib()

    start = common.now()
    if args.arm == "one-copy":
        model = load_tuned(section, work / "adapter")
        if device == "cuda":
            model = model.to("cuda")
        models = {"base": (model, False), "tuned": (model, True)}
        held = [model]
    else:
        base = load_model(section)
        merged = load_model(ModelSection(name=str(work / "merged"), dtype=section.dtype))
        if device == "cuda":
            base, merged = base.to("cuda"), merged.to("cuda")
        models = {"base": (base, True), "tuned": (merged, True)}
        held = [base, merged]
    for model in held:
        model.eval()
    load_s = common.now() - start
    weights_gpu_gib = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else None
    rss_loaded = common.rss_gib()

    figures: dict[str, Any] = {"arm": args.arm, "status": "ok", "load_s": load_s}
    texts = {}
    for which, (model, use_adapter) in models.items():
        clock = FirstToken(model.get_base_model() if hasattr(model, "get_base_model") else model)
        answer(model, processor, messages, 4, use_adapter, clock)  # warm-up, untimed
        runs = [answer(model, processor, messages, args.new_tokens, use_adapter, clock) for _ in range(args.repeats)]
        clock.handle.remove()
        figures[f"{which}_ttft_s"] = statistics.median(r["ttft_s"] for r in runs)
        figures[f"{which}_first_text_s"] = runs[-1]["first_text_s"]
        figures[f"{which}_tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in runs if r["tokens_per_s"])
        figures[f"{which}_tokens"] = runs[-1]["tokens"]
        texts[which] = runs[-1]["text"]
    figures["texts"] = texts
    figures["param_bytes"] = common.parameter_bytes(*held)
    figures["param_gib"] = figures["param_bytes"] / 2**30
    figures["peak_gpu_gib"] = common.peak_gpu_memory_gib()
    figures["weights_gpu_gib"] = weights_gpu_gib
    figures["rss_after_load_gib"] = rss_loaded
    figures["rss_load_delta_gib"] = rss_loaded - rss_before if rss_loaded is not None and rss_before is not None else None
    figures["peak_rss_gib"] = common.peak_rss_gib()
    if device == "cuda":
        figures["memory_gib"], figures["memory_kind"] = figures["peak_gpu_gib"], "GPU peak"
    else:
        figures["memory_gib"] = rss_loaded
        figures["memory_kind"] = "RSS" if getattr(args, "isolated", True) else "RSS, shared process"
    return figures


# ---------------------------------------------------------------------------------------------- parent


def run_child(args, arm: str, work: Path) -> dict[str, Any]:
    out = work / f"{arm}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--arm", arm, "--work", str(work), "--out", str(out)]
    command += ["--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats), "--seed", str(args.seed)]
    if args.tiny:
        command.append("--tiny")
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"arm": arm, "status": f"failed: exit {result.returncode}: {tail[0][:300]}"}
    return json.loads(out.read_text())


def expected_full_size() -> dict[str, Any]:
    """What the arms would hold at full size, from the architecture alone (meta device, no memory, any machine).

    bf16 base weights; PEFT keeps LoRA weights in fp32.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    from core.config import FinetuneSection
    from core.models import apply_finetune

    model = common.build_random_model(Qwen2_5_VLForConditionalGeneration, common.qwen2_5_vl_7b_config(), device="meta")
    base = common.parameter_counts(model)["total"]
    adapter = common.parameter_counts(apply_finetune(model, FinetuneSection()))["trainable"]
    base_gib, adapter_gib = base * 2 / 2**30, adapter * 4 / 2**30
    return {
        "base_parameters": base,
        "adapter_parameters": adapter,
        "one_copy_param_gib": base_gib + adapter_gib,
        "two_copies_param_gib": 2 * base_gib,
        "one_copy_weight_copies": (base_gib + adapter_gib) / base_gib,
    }


def run_in_process(args, arm: str, work: Path) -> dict[str, Any]:
    import copy

    child = copy.copy(args)
    child.arm, child.work, child.isolated = arm, work, False
    try:
        return run_arm(child)
    except Exception as error:
        return {"arm": arm, "status": f"failed: {type(error).__name__}: {error}"[:300]}
    finally:
        common.free_memory()


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    common.quiet_libraries()
    threads = common.set_threads(args.tiny, args.threads)
    if args.arm:  # child process: one arm, figures to --out
        common.write_json(args.out, run_arm(args))
        return 0

    print(common.describe_env(), flush=True)
    config: dict[str, Any] = {
        "model": "tiny:qwen2_5_vl" if args.tiny else "Qwen2.5-VL-7B-Instruct architecture, random bf16 weights",
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "torch_threads": threads,
        "arms": {
            "one-copy": "core.models.load_tuned (base + LoRA adapter 'tuned'), stream_generate(use_adapter=False|True)",
            "two-copies": "core.models.load_model(base) + load_model(merged checkpoint from core.models.merge_adapter)",
        },
        "decoding": "greedy (stream_generate), fixed length via generation_config.min_new_tokens",
    }
    notes = [
        "the playbook's two vLLM servers are represented by two in-process transformers models (no vLLM here)",
        "TTFT = prompt processing + first token (end of the first forward pass); tokens/s = decode steps after it",
    ]
    rows: list[dict[str, Any]] = []
    status = "ok"
    skip = None if args.tiny else common.full_size_skip_reason()
    if skip:
        status = f"skipped: {skip}"
        rows = [{"arm": arm, "status": f"skipped: {skip}"} for arm in ARMS]
        notes.append(skip)
        config["expected_full_size"] = expected_full_size()
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
        try:
            print("preparing the adapter and the merged checkpoint", flush=True)
            config["prepared"] = prepare(args, work)
            isolate = args.isolate == "yes" or (args.isolate == "auto" and not args.tiny)
            config["isolated_processes"] = isolate
            for arm in ARMS:
                print(f"{arm}: loading and answering{' in a fresh process' if isolate else ''}", flush=True)
                arm_start = time.perf_counter()
                if isolate:
                    rows.append(run_child(args, arm, work))
                else:
                    rows.append(run_in_process(args, arm, work))
                rows[-1]["arm_wall_s"] = time.perf_counter() - arm_start
        finally:
            shutil.rmtree(work, ignore_errors=True)

    by_arm = {row["arm"]: row for row in rows}
    one, two = by_arm.get("one-copy", {}), by_arm.get("two-copies", {})
    single = (one.get("param_bytes") or 0) and two.get("param_bytes", 0) / 2  # one base copy
    for row in rows:
        if row.get("param_bytes") and single:
            row["weight_copies"] = row["param_bytes"] / single
    texts_match = None
    if one.get("texts") and two.get("texts"):
        texts_match = {k: one["texts"][k] == two["texts"][k] for k in ("base", "tuned")}
    figures = {
        "rows": rows,
        "ratio": {
            "name": "two-copies over one-copy: parameter memory (the headline), load time, memory",
            "baseline": "two-copies",
            "value": common.ratio(two.get("param_bytes"), one.get("param_bytes")),
            "load_time": common.ratio(two.get("load_s"), one.get("load_s")),
            "memory": common.ratio(two.get("memory_gib"), one.get("memory_gib")),
            "tuned_tokens_per_s_one_over_two": common.ratio(one.get("tuned_tokens_per_s"), two.get("tuned_tokens_per_s")),
        },
        "answers_match_between_arms": texts_match,
        "targets": {
            "one_copy_of_weights": {"target": "one-copy holds ~1 copy (< 1.1)", "value": one.get("weight_copies")},
            "meaningful": status == "ok",
        },
    }
    if args.tiny:
        notes.append("tiny mode: load times and tokens/s of a 2-layer model say nothing about the 7B; weight copies do")
    payload = common.result_payload(NAME, tiny=args.tiny, config=config, figures=figures, status=status, notes=notes, started=started)
    table = common.format_table(rows, COLUMNS)
    if figures["ratio"]["value"] is not None:
        r = figures["ratio"]
        table += (
            f"\nratio two-copies / one-copy: parameter memory {r['value']:.2f}x, load time {common.format_value(r['load_time'])}x, "
            f"memory {common.format_value(r['memory'])}x"
        )
    return common.finish(args.out, payload, table)


if __name__ == "__main__":
    sys.exit(main())
