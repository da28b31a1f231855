"""The benchmark harness (bench/): every script runs in --tiny mode and writes the JSON the results are read from.

The scripts start together in the background when the first test needs them (tiny mode uses one CPU thread per
script, so two run at full speed on two cores) and each test checks one script's JSON. Those tests are `slow`;
the architecture check is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 420
SCRIPTS = ("grpo_step", "video_sft_step", "compare", "frames", "video_data")


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory):
    """Start every script with --tiny once; return {name: (process, out path, log path)}."""
    out_dir = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    runs, logs = {}, []
    for name in SCRIPTS:
        out, log = out_dir / f"{name}.json", out_dir / f"{name}.log"
        args = [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--tiny", "--out", str(out)]
        if name in ("frames", "video_data"):
            args += ["--cache-dir", str(out_dir / f"clips-{name}")]
        logs.append(log.open("w"))
        runs[name] = (subprocess.Popen(args, cwd=ROOT, env=env, stdout=logs[-1], stderr=subprocess.STDOUT), out, log)
    yield runs
    for process, _, _ in runs.values():
        if process.poll() is None:
            process.kill()
            process.wait()
    for handle in logs:
        handle.close()


def finished(bench_runs, name: str) -> tuple[dict, str]:
    """Wait for one script; return its JSON and its printed output."""
    process, out, log = bench_runs[name]
    deadline = time.monotonic() + TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if process.poll() is None:
        process.kill()
        pytest.fail(f"bench/{name}.py --tiny ran past {TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
    assert process.returncode == 0, f"bench/{name}.py --tiny exited {process.returncode}:\n{log.read_text()[-3000:]}"
    assert out.exists(), f"bench/{name}.py wrote no JSON:\n{log.read_text()[-3000:]}"
    return json.loads(out.read_text()), log.read_text()


def result(bench_runs, name: str) -> dict:
    """A --tiny run's JSON, with the envelope every benchmark writes checked."""
    payload, printed = finished(bench_runs, name)
    assert payload["benchmark"] == name
    assert payload["mode"] == "tiny" and payload["status"] == "ok"
    assert payload["device"]["kind"] in ("cpu", "cuda") and payload["device"]["name"]
    for library in ("torch", "transformers", "av"):
        assert payload["versions"][library], library
    assert isinstance(payload["config"], dict) and payload["config"]
    figures = payload["figures"]
    assert figures["rows"], "no rows"
    assert figures["ratio"]["value"] is not None and figures["ratio"]["value"] > 0, figures["ratio"]
    assert "targets" in figures
    assert "-----" in printed and "wrote " in printed, printed[-2000:]  # the table, then the JSON path
    return payload


def rows_by(payload: dict, key: str) -> dict[str, dict]:
    return {row[key]: row for row in payload["figures"]["rows"]}


@pytest.mark.slow
def test_grpo_step_tiny(bench_runs):
    payload = result(bench_runs, "grpo_step")
    rows = rows_by(payload, "variant")
    assert payload["config"]["model"] == "tiny:qwen2_5_vl"
    for name in ("playbook", "default", "default/gen-per-microbatch", "default/static-kv-cache", "default/no-grad-ckpt"):
        row = rows[name]
        assert row["status"] == "ok", (name, row["status"])
        for key in ("completions_per_s", "step_s", "gen_s", "score_s", "train_s", "gen_share", "vs_playbook"):
            assert row[key] is not None and row[key] >= 0, (name, key, row[key])
        assert "peak_gib" in row
        assert row["estimated_peak_gib"] > 0, "each row carries the product's estimate beside what it measured"
    assert rows["playbook"]["completions_per_step"] == 4 and rows["default"]["completions_per_step"] == 8
    assert rows["playbook"]["settings"]["num_generations"] == 2 and rows["default"]["settings"]["num_generations"] == 4
    assert rows["default"]["generate_calls_per_step"] == 1 and rows["default/gen-per-microbatch"]["generate_calls_per_step"] == 2
    # Levers whose dependency is missing are reported, never dropped.
    for name in ("default/liger", "default/flash-attn-2", "default/vllm-colocate"):
        assert rows[name]["status"].startswith(("ok", "skipped: ", "failed: ")), rows[name]
    assert "levers_in_default" in payload["config"]
    assert payload["figures"]["ratio"]["baseline"] == "playbook"


@pytest.mark.slow
def test_video_sft_step_tiny(bench_runs):
    payload = result(bench_runs, "video_sft_step")
    rows = payload["figures"]["rows"]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok"]
    baseline, in_process, dynamic = rows
    assert in_process["loader_workers"] == 0 and dynamic["loader_workers"] == payload["config"]["dataloader_num_workers"] >= 1
    assert baseline["pad_to"] and baseline["padded_tokens_per_sample"] == baseline["pad_to"]
    assert dynamic["pad_to"] is None and dynamic["padded_tokens_per_sample"] < baseline["padded_tokens_per_sample"]
    assert dynamic["tokens_per_sample"] == pytest.approx(baseline["tokens_per_sample"], rel=0.05)  # same clips
    for row in rows:
        for key in ("samples_per_s", "tokens_per_s", "loader_share", "step_s"):
            assert row[key] is not None and row[key] > 0, (row["variant"], key)
        assert "mfu" in row and "peak_gib" in row
        assert row["estimated_peak_gib"] > 0
    assert payload["config"]["full_size_token_budget"]["frames"] == 16
    assert payload["config"]["collator"] == "video_vlm.collator.VideoSFTCollator"


@pytest.mark.slow
def test_compare_tiny(bench_runs):
    payload = result(bench_runs, "compare")
    rows = rows_by(payload, "arm")
    assert set(rows) == {"one-copy", "two-copies"}
    for row in rows.values():
        assert row["status"] == "ok", row["status"]
        for key in ("load_s", "base_ttft_s", "base_tokens_per_s", "tuned_ttft_s", "tuned_tokens_per_s", "param_bytes", "memory_gib"):
            assert row[key] is not None and row[key] > 0, (row["arm"], key)
    # One copy of the weights plus the adapter, against two full copies.
    assert rows["two-copies"]["param_bytes"] > 1.5 * rows["one-copy"]["param_bytes"] / rows["one-copy"]["weight_copies"]
    assert rows["two-copies"]["weight_copies"] == pytest.approx(2.0)
    assert payload["figures"]["answers_match_between_arms"] == {"base": True, "tuned": True}


@pytest.mark.slow
def test_frames_tiny(bench_runs):
    payload = result(bench_runs, "frames")
    rows = payload["figures"]["rows"]
    measured = [row for row in rows if row["status"] == "ok"]
    assert {row["backend"] for row in measured} >= {"pyav"}
    for row in measured:
        assert row["seek_s"] > 0 and row["decode_all_s"] > 0 and row["speedup"] > 0
        assert row["same_frames"] is True, row
        assert row["speedup_bound_frames"] >= 1
    for row in rows:
        assert row["status"].startswith(("ok", "skipped: ", "failed: "))
    # Every usable backend reads every rotation exactly like the baseline, or refuses it with its reason.
    parity = payload["figures"]["rotation_parity"]
    assert {row["rotation_deg"] for row in parity} == {90, 180, 270}
    for row in parity:
        assert row["status"] == "ok" or row["status"].startswith(("refused: ", "skipped: ")), row
    assert all(row["status"] == "ok" for row in parity if row["backend"] == "pyav")


@pytest.mark.slow
def test_video_data_tiny(bench_runs):
    payload = result(bench_runs, "video_data")
    rows = {row["case"]: row for row in payload["figures"]["rows"]}
    n = payload["config"]["n_workers"]
    assert set(rows) == {"cold, 1 worker", f"cold, {n} workers", "cold cache", "warm cache", f"warm cache, {n} workers"}
    for row in rows.values():
        assert row["status"] == "ok" and row["samples"] == payload["config"]["windows"] and row["samples_per_s"] > 0
    # the warm pass reads what the cold-cache pass wrote: far less time getting frames than decoding them
    assert rows["warm cache"]["frames_s_per_sample"] < rows["cold, 1 worker"]["frames_s_per_sample"] / 5
    targets = payload["figures"]["targets"]
    assert {"warm_cache_vs_cold", "n_workers_vs_1"} <= set(targets)


def load_bench(name: str, monkeypatch):
    """Import bench/<name>.py in this process; the scripts import their helpers as `common` (their own folder)."""
    import importlib.util

    def load(module_name: str, path: Path):
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    common = load("common", ROOT / "bench" / "common.py")
    monkeypatch.setitem(sys.modules, "common", common)
    return common if name == "common" else load(f"bench_{name}", ROOT / "bench" / f"{name}.py")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own deprecation notices, raised inside PEFT
def test_full_size_skips_without_cuda(tmp_path, monkeypatch, capsys):
    """Without CUDA a full-size run writes its JSON with the reason and the architecture's facts, and exits 0."""
    if has_cuda():
        pytest.skip("a GPU is present: the full-size run is a benchmark, run it by hand")
    compare = load_bench("compare", monkeypatch)
    monkeypatch.setattr(compare.common, "quiet_libraries", lambda: None)  # no global logging changes in pytest
    out = tmp_path / "compare.json"
    assert compare.main(["--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["mode"] == "full" and payload["status"].startswith("skipped: ") and "CUDA" in payload["status"]
    assert all(row["status"].startswith("skipped: ") for row in payload["figures"]["rows"])
    expected = payload["config"]["expected_full_size"]
    assert expected["one_copy_weight_copies"] == pytest.approx(1.02, abs=0.01)  # bf16 base + fp32 r=32 LoRA
    assert "CUDA" in capsys.readouterr().out


def test_full_size_architectures(monkeypatch):
    """The config dicts build the published models: Qwen2.5-VL-7B has 8.29B parameters, InternVL3-8B 7.94B."""
    common = load_bench("common", monkeypatch)
    from transformers import InternVLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

    qwen = common.meta_parameter_counts(Qwen2_5_VLForConditionalGeneration, common.qwen2_5_vl_7b_config())
    assert qwen["total"] == pytest.approx(8.29e9, rel=0.002)
    assert qwen["vision"] == pytest.approx(0.677e9, rel=0.01)  # 32 blocks 1280 wide, patch embedding and merger
    internvl = common.meta_parameter_counts(InternVLForConditionalGeneration, common.internvl3_8b_config())
    assert internvl["total"] == pytest.approx(7.94e9, rel=0.002)
    assert internvl["vision"] == pytest.approx(0.304e9, rel=0.01)  # InternViT-300M
