# One entry point for people and CI. `make test` installs what it needs, then runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# uv from PATH when present, else a private copy bootstrapped with pip into .tools/.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# On a CUDA box (nvidia-smi present) setup installs the gpu extra too: bitsandbytes for QLoRA, Liger kernels.
GPU_EXTRA := $(if $(shell command -v nvidia-smi 2>/dev/null),--extra gpu)
CONFIG_IMAGE ?= image_vlm/configs/qwen2_5_vl_7b_grpo.yaml
CONFIG_VIDEO ?= video_vlm/configs/internvl3_8b_sft.yaml
ARGS ?=
# The suite runs in TEST_WORKERS pytest-xdist workers (one per core, at most 4): most tests are one thread of Python,
# and the learning runs are one intra-op thread each by design, so one process left the other cores idle. A run
# several tests share is trained once per session across workers (tests/conftest.py: once_per_session).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
RUN ?=
GPUS ?= 1
SPLIT ?= test
ACCELERATE_CONFIG ?= configs/accelerate/$(if $(filter 1,$(GPUS)),single.yaml,ddp.yaml)

RUNS_DIR ?= $(or $(VLM_RUNS_DIR),runs)
# A single GPU runs the module directly; GPUS=N wraps the same module in accelerate launch, with one
# run folder named here so that every rank writes to the same place.
define launch
$(if $(filter 1,$(GPUS)),$(PY) -m $(1),$(VENV)/bin/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(GPUS) -m $(1) --run-dir $(RUNS_DIR)/$(2)-$(shell date +%Y%m%d-%H%M%S))
endef

.PHONY: setup test test-containers test-containers-gpu test-gpu test-fast gpu-check gpu-wheels lint containers-check wheels-check ui up down logs train-image eval-image export-image train-video eval-video prepare-video export data-image data-video bench clean

setup: $(VENV)/.installed

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (CI sets it) every Python process would
# otherwise compile torch, transformers and TRL again, ~9 s a process; compiling once costs ~15 s.
$(VENV)/.installed: pyproject.toml uv.lock | $(if $(findstring .tools,$(UV)),.tools/bin/uv)
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --compile-bytecode --extra test --extra decord $(GPU_EXTRA) --python $(PYTHON)
	@touch $@

# ruff first: it takes a second, and a lint error fails before minutes of tests.
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --ignore=tests/test_containers_live.py $(PYTEST_ARGS)
	$(MAKE) --no-print-directory containers-check
	$(MAKE) --no-print-directory test-containers

# The real containers: the image built from uv.lock (base: a debootstrap bookworm, made once), both services up
# from a CPU variant of docker-compose.yml with host networking, checked in Chromium and through the run CLI.
# Skips with one line without a Docker engine (the module skips whole: pytest's exit 5, "no tests collected",
# is that skip); fails under CI=true. See docs/containers.md.
test-containers: setup
	$(PY) -m pytest -q -rs -p no:cacheprovider tests/test_containers_live.py $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The same checks on a GPU box with the real docker-compose.yml (GPU reservation, published ports, CUDA).
test-containers-gpu: setup
	VLM_CONTAINERS_GPU=1 CI=true $(PY) -m pytest -q -rs -p no:cacheprovider tests/test_containers_live.py $(PYTEST_ARGS)

# The GPU suite: tests marked `gpu` (bf16 LoRA and full fine-tuning, QLoRA, attention kernels, Liger, vLLM, compare),
# on the tiny models and on the shipped presets at 7-8B with random weights; skipped without CUDA.
test-gpu: setup
	$(PY) -m pytest -q -m gpu -rs --durations=0 $(PYTEST_ARGS)

# The GPU suite and the full-size benches in one timed pass (under 8 minutes by construction), figures in
# bench/results/gpu-check; on a lent device machine without the project's environment, after `make gpu-wheels` here.
gpu-check:
	scripts/gpu-check

gpu-wheels: setup
	scripts/gpu-wheels

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not browser" $(PYTEST_ARGS)

containers-check: setup
	@command -v docker-compose >/dev/null || { echo "docker-compose is missing: apt-get install docker-compose"; exit 1; }
	docker-compose -f docker-compose.yml config --quiet
	$(VENV)/bin/hadolint --failure-threshold error docker/Dockerfile
	$(MAKE) --no-print-directory wheels-check

# Every package the image installs has a wheel on the DGX Spark (aarch64) and on x86_64 (needs the package index).
wheels-check: setup
	@mkdir -p build
	docker/image-requirements.sh build/image-requirements.txt $(UV)
	docker/check-wheels.sh build/image-requirements.txt $(UV)

# Python (ruff: pyflakes, import order, bugbear, pyupgrade; config in pyproject.toml), then Docker.
lint: setup
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory containers-check

ui: setup
	$(VENV)/bin/streamlit run ui/app.py --server.address 127.0.0.1

up:
	docker compose up -d
down:
	docker compose down
logs:
	docker compose logs -f

train-image: setup
	$(call launch,image_vlm.train,image) --config $(if $(CONFIG),$(CONFIG),$(CONFIG_IMAGE)) $(ARGS)
eval-image: setup
	$(PY) -m image_vlm.evaluate --run $(RUN) --split $(SPLIT) $(ARGS)
export-image: setup
	$(PY) -m image_vlm.export --run $(RUN) $(ARGS)
data-image: setup
	$(PY) -m image_vlm.data download

train-video: setup
	$(call launch,video_vlm.train,video) --config $(if $(CONFIG),$(CONFIG),$(CONFIG_VIDEO)) $(ARGS)
# Decode every clip window of CONFIG's dataset into the frame cache before training (a progress bar; safe to rerun).
prepare-video: setup
	$(PY) -m video_vlm.prepare --config $(if $(CONFIG),$(CONFIG),$(CONFIG_VIDEO)) $(ARGS)
eval-video: setup
	$(PY) -m video_vlm.evaluate --run $(RUN) $(ARGS)

export: export-image

BENCHES := bench/frames.py bench/video_data.py bench/grpo_step.py bench/video_sft_step.py bench/compare.py
bench: setup
	for b in $(BENCHES); do $(PY) $$b $(ARGS) || exit 1; done

clean:
	rm -rf .pytest_cache build *.egg-info
