"""Every export writes a model card the Hub can read, and push sends the exported folder only, or says why not."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from conftest import IMAGE_SMOKE, make_run, run_cli, tiny_run
from core.runs import RunDir
from core.verdict import verdict_sentence

SECRET = "hf_notARealTokenButSecret0123456789"
# An absolute path: a slash that starts a word (not `org/name`, not a URL's `//`, not `</TAG>`), then a segment.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/<])/[\w.-]+")


def front_matter(card: str) -> dict:
    assert card.startswith("---\n"), card[:200]
    return yaml.safe_load(card.split("\n---", 1)[0][4:])


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, wildfire_synthetic) -> RunDir:
    """A tiny LoRA image run, trained a few steps (a checkpoint kept; GRPO alone earns no reward from random weights,
    the warm start moves them), evaluated on 4 images and exported, with a
    token in the environment of each command and a page-style train.log beside them."""
    from image_vlm import evaluate, export, train

    run = RunDir(tmp_path_factory.mktemp("card") / "image-card")
    had = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = SECRET
    try:
        assert train.main(["--config", "image_vlm/configs/tiny.yaml", "--run-dir", str(run.path), *IMAGE_SMOKE,
                           "train.max_steps=1", "logging.save_steps=1", "train.max_completion_length=24",
                           "warm_start.enabled=true", "warm_start.max_steps=2",  # SFT moves the LoRA weights
                           f"data.root={wildfire_synthetic}"]) == 0
        assert evaluate.main(["--run", str(run.path), "--limit", "4", "--batch-size", "4"]) == 0
        assert export.main(["--run", str(run.path)]) == 0
    finally:
        os.environ.pop("HF_TOKEN") if had is None else os.environ.update(HF_TOKEN=had)
    run.log_path.write_text(f"training with HF_TOKEN={SECRET}\n")
    return run


def test_export_writes_a_model_card_with_the_hub_metadata_and_the_evaluation(exported_run):
    card = (exported_run.merged_dir / "README.md").read_text()
    meta = front_matter(card)
    assert meta["base_model"] == "tiny:qwen2_5_vl"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["license"] == "other" and "vlm-playbook" in meta["tags"]
    assert "datasets" not in meta, "synthetic data names no dataset"
    report = json.loads(exported_run.eval_report_path("test").read_text())
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == "test"
    assert result["metrics"][0]["type"] == report["headline"]["metric"] == "accuracy"
    assert result["metrics"][0]["value"] == report["headline"]["tuned"]
    # The body: what the base model is, the method, the evaluation with its verdict, and how to load it.
    assert "tiny random-weight model" in card and "GRPO" in card and "LoRA" in card
    assert "| `finetune.r` | 8 |" in card and "| `train.max_steps` | 1 |" in card
    assert verdict_sentence(report["headline"]) in card
    assert "AutoModelForImageTextToText.from_pretrained(" in card
    assert "no provenance" in card or "**GPU:**" in card


def test_the_card_holds_no_token_and_no_local_path(exported_run, wildfire_synthetic):
    card = (exported_run.merged_dir / "README.md").read_text()
    assert SECRET not in card
    for local in (str(exported_run.path), str(exported_run.path.parent), str(wildfire_synthetic), "/tmp", os.getcwd()):
        assert local not in card, local
    assert not ABSOLUTE_PATH.findall(card), ABSOLUTE_PATH.findall(card)


def test_an_adapter_only_export_writes_a_peft_card_into_the_adapter(exported_run, capsys):
    from image_vlm import export

    assert export.main(["--run", str(exported_run.path), "--adapter-only"]) == 0
    meta = front_matter((exported_run.adapter_dir / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["base_model"] == "tiny:qwen2_5_vl"
    assert "adapter_model.safetensors" in os.listdir(exported_run.adapter_dir)


def test_push_dry_run_lists_the_exported_folder_and_sends_nothing(exported_run):
    pushed = run_cli("core.export", "push", "--run", str(exported_run.path), "--repo", "me/tiny", "--dry-run",
                     env={"HF_TOKEN": ""}, timeout=300)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    listed = [line.split()[0] for line in pushed.stdout.splitlines() if line.startswith("  ")]
    assert "README.md" in listed and "config.json" in listed
    assert any(name.endswith(".safetensors") for name in listed), listed
    assert not any(name.startswith(("checkpoints", "adapter", "eval", "train.log")) for name in listed), listed
    assert "private" in pushed.stdout and "nothing sent" in pushed.stdout


def test_push_without_a_token_is_refused_in_one_line_naming_hf_token(exported_run, tmp_path):
    pushed = run_cli("core.export", "push", "--run", str(exported_run.path), "--repo", "me/tiny",
                     env={"HF_TOKEN": "", "HF_HOME": str(tmp_path), "HF_TOKEN_PATH": str(tmp_path / "no-token")},
                     timeout=300)
    assert pushed.returncode == 2
    (line,) = pushed.stderr.strip().splitlines()
    assert line.startswith("error:") and "HF_TOKEN" in line


def test_push_of_a_run_never_exported_names_the_export_command(tmp_path):
    run = RunDir(make_run(tmp_path, "image-plain", "finished", adapter=True))
    (run.adapter_dir / "README.md").write_text("---\nbase_model: x\n---\n# Model Card for Model ID\n")  # PEFT's own
    pushed = run_cli("core.export", "push", "--run", str(run.path), "--repo", "me/tiny", "--dry-run", timeout=300)
    assert pushed.returncode == 2
    (line,) = pushed.stderr.strip().splitlines()
    assert f"python -m image_vlm.export --run {run.path}" in line and "nothing exported" in line


def test_a_push_creates_a_private_repo_and_uploads_the_exported_folder_only(exported_run, monkeypatch, capsys):
    import huggingface_hub

    from core import export

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: SECRET)
    assert export.main(["push", "--run", str(exported_run.path), "--repo", "me/tiny"]) == 0
    (_, token), (_, repo, options), (_, upload) = calls
    assert token == SECRET and repo == "me/tiny"
    assert options["private"] is True and options["exist_ok"] is True
    assert upload["repo_id"] == "me/tiny" and upload["folder_path"] == str(exported_run.merged_dir)
    assert set(upload) <= {"repo_id", "folder_path", "commit_message"}, "no patterns that could widen what is sent"
    assert "pushed" in capsys.readouterr().out

    calls.clear()
    assert export.main(["push", "--run", str(exported_run.path), "--repo", "me/tiny", "--public"]) == 0
    assert calls[1][2]["private"] is False


def test_a_fully_fine_tuned_run_gets_its_card_in_model(tmp_path):
    from image_vlm import export

    run, _, _ = tiny_run(tmp_path, "full")
    assert export.main(["--run", str(run.path)]) == 0
    meta = front_matter((run.model_dir / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["base_model"] == "tiny:qwen2_5_vl"
    assert "model-index" not in meta, "not evaluated: no results to claim"
    assert "Not evaluated yet" in (run.model_dir / "README.md").read_text()
    pushed = run_cli("core.export", "push", "--run", str(run.path), "--repo", "me/full", "--dry-run", timeout=300)
    assert pushed.returncode == 0 and str(run.model_dir) in pushed.stdout, pushed.stdout + pushed.stderr
