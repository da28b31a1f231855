"""The real containers: the image built from uv.lock, both services up from a CPU variant of docker-compose.yml.

    make test-containers          # CPU, host networking, any machine with a Docker engine (run by `make test`)
    make test-containers-gpu      # the same checks with the real docker-compose.yml and its GPU reservation

The CPU variant is made here from docker-compose.yml itself, so the two cannot drift: the same services, less
the GPU reservation and `ports:`, with host networking (`network_mode: host`) and Streamlit bound to
127.0.0.1. Every connection stays on 127.0.0.1; no bridge network is created. The GPU variant
(VLM_CONTAINERS_GPU=1) keeps the file as users run it, ports and reservation included.

Without a usable engine the module skips with one line; with CI=true it fails saying why. The engine is
Debian's (docker.io, docker-compose v1); `.ci/run` starts `dockerd` when none runs. The base image is a
bookworm made with debootstrap (no registry is reachable from CI), cached by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKER = os.environ.get("VLM_DOCKER", "/usr/bin/docker")  # Debian's client: BuildKit built in (another may lack buildx)
COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
BASE_IMAGE = os.environ.get("VLM_BASE_IMAGE", "vlm-playbook-base:bookworm")
IMAGE = "vlm-playbook:latest"
PROJECT = "vlmplaybooktest"
CA_BUNDLE = Path(os.environ.get("VLM_BUILD_CA", "/etc/ssl/certs/ca-certificates.crt"))
GPU = os.environ.get("VLM_CONTAINERS_GPU") == "1"
APPS = {"image-vlm": ("image", 8501), "video-vlm": ("video", 8502)}
SECRET_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY",
                "VLM_UI_PASSWORD", "VLLM_API_KEY", "SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "UV_NATIVE_TLS",
                "CURL_CA_BUNDLE")
# A few steps of the tiny preset: the same CLI path as the README's, in well under a minute on 2 cores.
SHORT_RUN = ["train.max_steps=4", "warm_start.max_steps=4", "logging.save_steps=2", "eval.limit=4"]

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(2400)]


def log(message: str) -> None:
    print(f"[containers] {message}", flush=True)


def run(command: list[str], timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def engine_problem() -> str | None:
    """Why the container checks cannot run here, or None."""
    if not Path(DOCKER).exists():
        return f"{DOCKER} is missing: apt-get install docker.io"
    if not Path(COMPOSE).exists():
        return "docker-compose is missing: apt-get install docker-compose"
    try:
        proc = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer in 30 s"
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"{said} (start one as root: dockerd --bridge=none --iptables=false)"
    return None


PROBLEM = engine_problem()
if PROBLEM and os.environ.get("CI") != "true":
    # One line for the whole module (`make test-containers` accepts pytest's "no tests collected", exit 5).
    pytest.skip(f"no usable Docker engine: {PROBLEM}", allow_module_level=True)


def unusable(reason: str):
    """Under CI the container checks must run: fail saying why."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the container checks cannot run: {reason}")
    pytest.skip(reason)


# ------------------------------------------------------------------------------------------ engine and image


@pytest.fixture(scope="module")
def engine():
    if PROBLEM:
        unusable(f"no usable Docker engine: {PROBLEM}")
    return True


def ensure_base_image() -> None:
    """Debian bookworm made by debootstrap and imported, once: the same release users pull as debian:bookworm-slim."""
    if run([DOCKER, "image", "inspect", BASE_IMAGE], check=False).returncode == 0:
        return
    if not shutil.which("debootstrap") or os.geteuid() != 0:
        unusable(f"base image {BASE_IMAGE} is missing and debootstrap needs root (apt-get install debootstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), "http://deb.debian.org/debian"], timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([DOCKER, "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True, timeout=600)
        tar.wait()
        assert imported.returncode == 0, imported.stderr
    log(f"base image {BASE_IMAGE} made with debootstrap in {time.monotonic() - started:.0f} s")


def build_command(base_image: str = BASE_IMAGE) -> list[str]:
    command = [DOCKER, "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image}", "-f", "docker/Dockerfile", "-t", IMAGE]
    if CA_BUNDLE.is_file():  # a TLS-inspecting proxy's CA, for the downloads only (never in a layer)
        command += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    return [*command, "."]


@pytest.fixture(scope="module")
def image(engine):
    if not GPU:
        ensure_base_image()
    started = time.monotonic()
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    proc = run(build_command(BASE_IMAGE if not GPU else "debian:bookworm-slim"), timeout=1800, check=False, cwd=REPO, env=env)
    if proc.returncode != 0:
        pytest.fail(f"docker build failed:\n{proc.stderr[-5000:]}")
    log(f"image built in {time.monotonic() - started:.0f} s")
    return IMAGE


# ------------------------------------------------------------------------------------------ compose


def compose_variant(runs: Path, data: Path, ports: dict[str, int] | None = None) -> dict:
    """docker-compose.yml as users run it, with the host folders swapped for ours; on CPU, less the GPU
    reservation and `ports:` and with host networking, Streamlit on 127.0.0.1 only."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    services = {}
    for name, (_, _port) in APPS.items():
        service = dict(raw["services"][name])
        service.pop("build", None)  # built above, with the CA secret compose v1 cannot pass
        env = {}
        for item in service.get("environment") or []:
            key, equals, value = item.partition("=")
            env[key] = value if equals else None  # None: a pass-through, as in the file
        env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
        if ports and name in ports:
            env["PORT"] = str(ports[name])
            if GPU:  # bridge networking: publish the moved port, still on 127.0.0.1 only
                service["ports"] = [f"127.0.0.1:{ports[name]}:{ports[name]}"]
        if not GPU:
            # The GPU settings go: the reservation cannot start without GPUs, and the pinned-memory ulimits
            # (memlock unlimited) are refused where the engine itself may not raise them (a nested sandbox).
            for key in ("deploy", "ports", "ulimits"):
                service.pop(key, None)
            service["network_mode"] = "host"
            env["STREAMLIT_SERVER_ADDRESS"] = "127.0.0.1"
        service["environment"] = env
        swapped = {"./runs": str(runs), "./data": str(data)}
        volumes = []
        for volume in service["volumes"]:
            source, _, target = volume.partition(":")
            volumes.append(f"{swapped.pop(source, source)}:{target}")
        assert not swapped, f"docker-compose.yml no longer mounts {list(swapped)}"
        service["volumes"] = volumes
        services[name] = service
    return {"services": services, "volumes": raw.get("volumes", {})}


class Stack:
    """One compose project in a temporary folder: runs/ and data/ owned by uid 1000, the compose file beside them."""

    def __init__(self, base: Path, project: str, runs_mode: int | None = None, ports: dict[str, int] | None = None):
        self.base, self.project = base, project
        self.runs, self.data = base / "runs", base / "data"
        for folder in (self.runs, self.data):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, 1000, 1000)
        if runs_mode is not None:  # e.g. a runs folder uid 1000 cannot write
            os.chown(self.runs, 0, 0)
            self.runs.chmod(runs_mode)
        self.file = base / "docker-compose.yml"
        self.file.write_text(yaml.safe_dump(compose_variant(self.runs, self.data, ports), sort_keys=False))
        self.ports = {name: (ports or {}).get(name, port) for name, (_, port) in APPS.items()}

    def compose(self, *args: str, timeout: float = 600, check: bool = True, project: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
        return run([COMPOSE, "-p", project or self.project, "-f", str(self.file), *args], timeout=timeout, check=check, cwd=self.base, env=env)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert ids, f"no container for {service}"
        return ids[0]

    def inspect(self, service: str) -> dict:
        return json.loads(run([DOCKER, "inspect", self.container(service)]).stdout)[0]

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "200", check=False).stdout

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "300", check=False, timeout=900)

    def wait_healthy(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        states = {}
        while time.monotonic() < deadline:
            states = {s: (self.inspect(s)["State"].get("Health") or {}).get("Status") for s in APPS}
            if all(state == "healthy" for state in states.values()):
                return
            if "unhealthy" in states.values():
                break
            time.sleep(3)
        pytest.fail(f"healthchecks: {states}\n{self.logs()}")

    def run_status(self, service: str, run_id: str) -> dict:
        proc = self.compose("exec", "-T", service, "python", "-m", "core.runs", "status", f"/app/runs/{run_id}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def stack_up(base: Path, project: str, **kwargs):
    stack = Stack(base, project, **kwargs)
    try:
        stack.compose("up", "-d", timeout=300)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def stack(image, tmp_path_factory):
    with stack_up(tmp_path_factory.mktemp("compose"), PROJECT) as started:
        started.wait_healthy()
        yield started


def owners(folder: Path) -> set[int]:
    return {path.stat().st_uid for path in folder.rglob("*")}


# ------------------------------------------------------------------------------------------ the checks


def baked_secrets(history: str) -> list[str]:
    """The credential names `docker history` shows baked into the image: in an ARG or ENV line, or among the build
    args a RUN saw (BuildKit writes `RUN |2 A=b C=d cmd`; the legacy builder `|2 A=b C=d /bin/sh -c ...`).

    >>> baked_secrets("RUN |2 HF_TOKEN=x UV_VERSION=1 /bin/sh -c export SSL_CERT_FILE=/run/secrets/ca\\nENV A=1 PIP_CERT=/c")
    ['HF_TOKEN', 'PIP_CERT']
    """
    names = []
    for line in history.splitlines():
        line = re.sub(r"^/bin/sh -c #\(nop\)\s+", "", line.strip())
        build_args = re.match(r"^(?:RUN )?\|(\d+) (.*)$", line)
        if build_args:
            names += [word.split("=", 1)[0] for word in build_args.group(2).split()[: int(build_args.group(1))]]
        elif line.startswith(("ARG ", "ENV ")):
            names += re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", line[4:]) + re.findall(r"^([A-Za-z_]\w*)$", line[4:])
    return [name for name in names if name in SECRET_NAMES]


def healthcheck_command(config: dict) -> list[str]:
    """The image's HEALTHCHECK as a command line (what Docker runs inside the container every interval)."""
    kind, *rest = (config.get("Healthcheck") or {}).get("Test") or ["NONE"]
    assert kind in ("CMD", "CMD-SHELL"), f"the image has no healthcheck: {config.get('Healthcheck')}"
    return rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]


# The image alone, in one container that serves nothing and has no network (so no page anywhere can answer its
# healthcheck): who runs, on what, with which packages, and what `COPY . /app` left in.
IMAGE_PROBE = r"""
import importlib.metadata as metadata, json, os, platform, subprocess, sys, sysconfig
from core.media.video import backend_unavailable_reason
site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
release = dict(line.rstrip("\n").split("=", 1) for line in open("/etc/os-release") if "=" in line)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "hf_home": os.environ.get("HF_HOME"),
    "codename": release.get("VERSION_CODENAME"), "python": platform.python_version(), "base_prefix": sys.base_prefix,
    "packages": {dist.metadata["Name"]: dist.version for dist in metadata.distributions(path=site)},
    "torchcodec": backend_unavailable_reason("torchcodec"),
    "healthcheck_without_app": subprocess.run(json.loads(sys.argv[1]), capture_output=True, timeout=60).returncode,
    "paths": {path: os.path.exists(path) for path in ("/app/.git", "/app/.venv", "/app/.env", "/app/.streamlit/config.toml")},
    "runs": os.listdir("/app/runs") + os.listdir("/app/data"), "code_writable": os.access("/app/ui/app.py", os.W_OK),
}))
"""


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_problems(seen: dict, lock_text: str) -> list[str]:
    """What IMAGE_PROBE saw that the image must not be: each problem one line."""
    import tomllib

    lock = tomllib.loads(lock_text)["package"]
    locked = {(_dist(package["name"]), package["version"]) for package in lock}
    project = next(package for package in lock if package["name"] == "vlm-playbook")
    required = {_dist(dep["name"]) for dep in project["dependencies"] + project["optional-dependencies"]["gpu"]}
    installed = {_dist(name): version.split("+")[0] for name, version in seen["packages"].items()}
    problems = []
    if (seen["uid"], seen["gid"]) != (1000, 1000):
        problems.append(f"runs as uid {seen['uid']} gid {seen['gid']}, not 1000:1000 (files in ./runs would not be the user's)")
    if seen["cwd"] != "/app" or seen["hf_home"] != "/home/app/.cache/huggingface":
        problems.append(f"WORKDIR {seen['cwd']}, HF_HOME {seen['hf_home']}: the README's relative paths and the cache volume")
    if seen["codename"] != "bookworm" or not seen["python"].startswith("3.11.") or seen["base_prefix"] != "/usr":
        problems.append(f"not Debian bookworm's Python 3.11: {seen['codename']}, {seen['python']} at {seen['base_prefix']}")
    not_locked = sorted(f"{name}=={version}" for name, version in installed.items() if (name, version) not in locked)
    if not_locked:
        problems.append(f"installed at versions uv.lock does not hold: {not_locked}")
    if required - set(installed) or "pytest" in installed:
        problems.append(f"not the lock's runtime and gpu extra: missing {sorted(required - set(installed))}, "
                        f"pytest {'in' if 'pytest' in installed else 'out'}")
    if seen["torchcodec"] is not None:
        problems.append(f"torchcodec cannot decode video: {seen['torchcodec']}")
    if seen["healthcheck_without_app"] == 0:
        problems.append("the healthcheck passes with no app running: it does not probe the page")
    if seen["paths"] != {"/app/.git": False, "/app/.venv": False, "/app/.env": False, "/app/.streamlit/config.toml": True}:
        problems.append(f"COPY . /app took the wrong files in or left settings out: {seen['paths']}")
    if seen["runs"]:
        problems.append(f"runs/ or data/ baked into the image: {seen['runs'][:5]}")
    if seen["code_writable"]:
        problems.append("the app can rewrite its own code (/app/ui/app.py is writable)")
    return problems


def test_image_is_the_lock_and_keeps_no_secret(image):
    """2.2: the image is uv.lock on Debian bookworm's Python 3.11 (every package at the lock's version, the gpu extra
    in, the test tools out), runs as uid 1000 in /app, decodes video with torchcodec (FFmpeg's libraries are there),
    has a healthcheck that fails when no page answers, holds no .git/.venv/.env, cannot rewrite its own code, and
    neither its history nor its environment nor its files hold the build's CA secret or a credential."""
    history = run([DOCKER, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image]).stdout
    assert "BEGIN CERTIFICATE" not in history
    assert "nvcr.io" not in history, "the NGC base is gone: the image is the lock on Debian"
    assert not baked_secrets(history), f"docker history shows {baked_secrets(history)} baked in"
    config = json.loads(run([DOCKER, "image", "inspect", image]).stdout)[0]["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    leaked = [name for name in env if name in SECRET_NAMES or "secret" in env[name].lower()]
    assert not leaked, f"the image's environment names {leaked}"
    assert config["User"] == "1000:1000"

    probe = run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", IMAGE_PROBE,
                 json.dumps(healthcheck_command(config))])
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    problems = image_problems(seen, (REPO / "uv.lock").read_text())
    assert not problems, "\n".join(problems)

    # The proxy CA (in the host's bundle, not in Debian's) must not have landed in any file of the image.
    host_certs = set(re.findall(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END", CA_BUNDLE.read_text(), re.S)) if CA_BUNDLE.is_file() else set()
    image_bundle = run([DOCKER, "run", "--rm", "--network", "host", "--entrypoint", "cat", image, "/etc/ssl/certs/ca-certificates.crt"]).stdout
    extra = [cert for cert in host_certs if cert not in image_bundle]
    if extra:
        needles = [cert.splitlines()[3] for cert in extra if len(cert.splitlines()) > 3]
        script = "grep -rlF -f /dev/stdin /etc /root /home /app /tmp /run /usr/local /opt --include=*.pem --include=*.crt --include=ca* 2>/dev/null; true"
        found = subprocess.run([DOCKER, "run", "--rm", "-i", "--network", "host", "--entrypoint", "sh", image, "-c", script],
                               input="\n".join(needles), capture_output=True, text=True, timeout=300).stdout
        assert not found.strip(), f"the build's CA bundle is in the image: {found}"
        log(f"{len(extra)} certificate(s) of the build's CA bundle are in no file of the image")
    log(f"image size {config and run([DOCKER, 'image', 'inspect', '-f', '{{.Size}}', image]).stdout.strip()} bytes")


def test_unwritable_runs_gives_the_message_not_a_crash_loop(image, tmp_path):
    """2.6: ./runs that uid 1000 cannot write: the entrypoint says so, once, and the app keeps serving (no restart loop)."""
    ports = {"image-vlm": 8511}
    with stack_up(tmp_path, PROJECT + "ro", runs_mode=0o755, ports=ports) as stack:
        stack.compose("stop", "video-vlm", check=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"http://127.0.0.1:{ports['image-vlm']}/_stcore/health", timeout=2).status == 200:
                    break
            time.sleep(2)
        else:
            pytest.fail(f"the app did not serve with an unwritable runs folder:\n{stack.logs()}")
        time.sleep(5)
        state = stack.inspect("image-vlm")
        logs = stack.compose("logs", "--no-color", "image-vlm").stdout
        assert "/app/runs is not writable by uid 1000" in logs and "chown -R 1000:1000 runs data" in logs, logs
        assert logs.count("is not writable") == 1, "one message, from one start"
        assert state["State"]["Running"] and state["RestartCount"] == 0, state["State"]
        if not GPU:
            assert "no NVIDIA GPU visible: running on CPU" in logs, logs


def test_both_apps_healthy_and_their_pages_open(stack, browser):
    """2.1: both healthchecks healthy (the fixture waited), /image on 8501 and /video on 8502 open in Chromium
    with no error and no "Page not found"; Streamlit answers on 127.0.0.1 and the apps run as uid 1000."""
    titles = {"image": "Image VLM", "video": "Video VLM"}
    for name, (page_name, _) in APPS.items():
        assert stack.compose("exec", "-T", name, "id", "-u").stdout.strip() == "1000"
        if not GPU:
            assert stack.inspect(name)["HostConfig"]["NetworkMode"] == "host"
        origin = f"http://127.0.0.1:{stack.ports[name]}"
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        try:
            page.goto(f"{origin}/{page_name}")
            page.locator("h1").first.wait_for(timeout=90_000)
            page.get_by_role("button", name="Start training").wait_for(timeout=90_000)
            not_found = False
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                not_found = not_found or page.get_by_text("Page not found").count() > 0
                time.sleep(0.2)
            assert not not_found, f"{name}: a 'Page not found' dialog showed"
            assert titles[page_name] in page.locator("h1").first.inner_text()
            for error in ("Traceback", "Error:"):
                assert page.get_by_text(error).count() == 0, f"{name}: {error} on the page"
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            page.close()


# docker-compose.yml's defaults for every service (docs/security.md): VLM_SHM_SIZE, VLM_MEM_LIMIT, pids_limit.
SHM_BYTES, MEMORY_BYTES, PIDS_LIMIT = 16 * 1024**3, 110 * 1024**3, 8192

# A running app container read from inside, in one `docker exec`: its processes (who runs the app, under what),
# the limits the kernel applies, the mounts the app writes to, Streamlit's settings as the app reads them, and the
# image's own healthcheck run against the live page.
CONTAINER_PROBE = r"""
import json, os, resource, subprocess, sys, tempfile
from streamlit import config

def status(pid):
    with open(f"/proc/{pid}/status") as fields:
        return dict((key, value.strip()) for key, _, value in (line.partition(":") for line in fields))

def first(*paths):
    for path in paths:
        try:
            with open(path) as value:
                return value.read().strip()
        except OSError:
            pass
    return None

processes = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = [word.decode(errors="replace") for word in cmdline.read().split(b"\0") if word]
        fields = status(pid)
    except OSError:  # ended meanwhile
        continue
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # another user's process
        cwd = None
    processes[pid] = {"command": command, "cwd": cwd, **{key: fields.get(key) for key in (
        "PPid", "Uid", "Gid", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")}}
hf_home = os.environ.get("HF_HOME", "")
try:
    tempfile.TemporaryFile(dir=hf_home).close()
    hf_writable = True
except OSError:
    hf_writable = False
shm = os.statvfs("/dev/shm")
config.get_config_options(force_reparse=True)
print(json.dumps({
    "processes": processes,
    "shm_bytes": shm.f_frsize * shm.f_blocks,
    "memory_limit": first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "pids_limit": first("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "memlock": resource.getrlimit(resource.RLIMIT_MEMLOCK),
    "hf_home": hf_home, "hf_writable": hf_writable,
    "docker_socket": [path for path in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(path)],
    "code_writable": os.access("/app/ui/app.py", os.W_OK),
    "streamlit": {key: config.get_option(key) for key in ("browser.gatherUsageStats", "client.toolbarMode", "ui.hideTopBar")},
    "healthcheck": subprocess.run(json.loads(sys.argv[1]), capture_output=True, timeout=60).returncode,
}))
"""


def confinement_problems(container: str) -> list[str]:
    """What a running app container does that docker-compose.yml and the image say it must not: each problem one line."""
    inspected = json.loads(run([DOCKER, "inspect", container]).stdout)[0]
    probe = run([DOCKER, "exec", container, "python", "-c", CONTAINER_PROBE, json.dumps(healthcheck_command(inspected["Config"]))])
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    processes = seen["processes"]
    problems = []

    # `docker compose down` signals PID 1: an init (init: true) that hands SIGTERM to core.supervise, which asks
    # this container's trainers to save before the app goes.
    init = processes.get("1", {}).get("command", ["?"])
    if os.path.basename(init[0]) not in ("docker-init", "tini"):
        problems.append(f"PID 1 is {init}, not an init (compose's init: true)")
    supervisors = [pid for pid, proc in processes.items() if "core.supervise" in proc["command"]]
    apps = [pid for pid, proc in processes.items()
            if "ui/app.py" in proc["command"] and any(word.endswith("streamlit") for word in proc["command"])]
    if len(supervisors) != 1 or len(apps) != 1 or processes[apps[0]]["PPid"] != supervisors[0]:
        problems.append(f"the app is not `streamlit run ui/app.py` under core.supervise: "
                        f"{[proc['command'][:4] for proc in processes.values()]}")
        return problems
    if processes[supervisors[0]]["PPid"] != "1":
        problems.append("core.supervise is not the process the init signals")
    app = processes[apps[0]]

    # The app as it runs: uid 1000 from the start, no capability at all, no privilege gain through setuid.
    if set(app["Uid"].split() + app["Gid"].split()) != {"1000"}:
        problems.append(f"the app runs as uid {app['Uid'].split()} gid {app['Gid'].split()}, not 1000 (the image's USER)")
    if app["cwd"] != "/app":
        problems.append(f"the app runs in {app['cwd']}, not /app (where .streamlit/config.toml is)")
    capabilities = {key: app[key] for key in ("CapPrm", "CapEff", "CapBnd", "CapAmb")}
    if any(int(mask, 16) for mask in capabilities.values()):
        problems.append(f"the app holds capabilities {capabilities} (cap_drop: [ALL])")
    if app["NoNewPrivs"] != "1":
        problems.append(f"NoNewPrivs {app['NoNewPrivs']}: a setuid binary can gain privileges (no-new-privileges:true)")

    # The caps the kernel applies, as compose set them.
    if seen["shm_bytes"] != SHM_BYTES:
        problems.append(f"/dev/shm is {seen['shm_bytes']} bytes, not {SHM_BYTES} (shm_size)")
    if seen["memory_limit"] != str(MEMORY_BYTES):
        problems.append(f"memory limit {seen['memory_limit']}, not {MEMORY_BYTES} (mem_limit)")
    if seen["pids_limit"] != str(PIDS_LIMIT):
        problems.append(f"pids limit {seen['pids_limit']}, not {PIDS_LIMIT} (pids_limit)")
    if GPU and seen["memlock"] != [-1, -1]:
        problems.append(f"memlock {seen['memlock']}, not unlimited (ulimits: memlock -1)")
    if GPU:
        bound = {binding.get("HostIp") for bindings in (inspected["HostConfig"].get("PortBindings") or {}).values()
                 for binding in bindings or []}
        if bound != {"127.0.0.1"}:
            problems.append(f"the page is published on {bound}, not 127.0.0.1 only")

    # What the app can reach and write.
    mounts = {mount["Destination"]: mount for mount in inspected["Mounts"]}
    if seen["hf_home"] not in mounts or not seen["hf_writable"]:
        problems.append(f"HF_HOME {seen['hf_home']} is not a writable volume: downloads would go with the container")
    sockets = seen["docker_socket"] + [m["Source"] for m in mounts.values() if m.get("Source", "").endswith("docker.sock")]
    if sockets:
        problems.append(f"the Docker socket is reachable: {sockets}")
    if seen["code_writable"]:
        problems.append("the app can rewrite its own code (/app/ui/app.py is writable)")
    if seen["streamlit"] != {"browser.gatherUsageStats": False, "client.toolbarMode": "minimal", "ui.hideTopBar": True}:
        problems.append(f"Streamlit is not served as a product (usage statistics, toolbar, top bar): {seen['streamlit']}")
    if seen["healthcheck"] != 0:
        problems.append(f"the image's healthcheck fails against the serving app (exit {seen['healthcheck']})")
    return problems


def test_running_apps_are_confined_as_the_compose_file_says(stack):
    """Both apps as they run (the fixture waited for their healthchecks): Streamlit under core.supervise under an
    init, as uid 1000 in /app, with no capability and no-new-privileges in effect; the kernel's /dev/shm, memory and
    process caps at the compose file's defaults; the HF cache a writable volume; no Docker socket; code it cannot
    rewrite; Streamlit's product settings read; and the image's healthcheck passing against the live page (the
    image check shows it failing with no page)."""
    found = {name: confinement_problems(stack.container(name)) for name in APPS}
    assert not any(found.values()), "\n".join(f"{name}: {problem}" for name, problems in found.items() for problem in problems)


def test_readme_headless_training_finishes(stack):
    """2.5 and 2.2: the README's headless path, `docker compose run --rm image-vlm python -m image_vlm.train --config
    image_vlm/configs/tiny.yaml` (a few steps), finishes; what it writes under ./runs belongs to uid 1000."""
    started = time.monotonic()
    # Under its own project name: compose v1's `run` links a one-off container to the service's running ones,
    # which host networking refuses (compose v2, what users run, does not link). Same file, image and mounts.
    cli = stack.project + "cli"
    try:
        proc = stack.compose(
            "run", "--rm", "-T", "image-vlm", "python", "-m", "image_vlm.train", "--config", "image_vlm/configs/tiny.yaml",
            *SHORT_RUN, timeout=900, check=False, project=cli,
        )
    finally:
        stack.compose("down", "-v", check=False, project=cli)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    folders = [path.parent for path in stack.runs.glob("*/status.json")]
    assert len(folders) == 1, folders
    status = json.loads((folders[0] / "status.json").read_text())
    assert status["state"] == "finished", status
    assert owners(stack.runs) == {1000}, "everything under ./runs must belong to uid 1000"
    assert stack.run_status("video-vlm", folders[0].name)["state"] == "finished"
    log(f"headless tiny run finished in {time.monotonic() - started:.0f} s")


def test_full_fine_tuning_default_runs_in_the_image(stack):
    """Full fine-tuning's default (bf16 weights, 8-bit AdamW with stochastic rounding, compiled by torch.compile)
    finishes inside the image: the compiler it needs must be in the image, not only on the host that runs the
    tests. (Before: `InvalidCxxCompiler: No working C++ compiler found`.)"""
    started = time.monotonic()
    cli = stack.project + "full"
    try:
        proc = stack.compose(
            "run", "--rm", "-T", "video-vlm", "python", "-m", "video_vlm.train", "--config", "video_vlm/configs/tiny.yaml",
            "finetune.method=full", "finetune.full_precision=bf16_stochastic_rounding", "model.dtype=bfloat16",
            "train.max_steps=2", "logging.save_steps=2", "data.num_workers=0", "--run-dir", "/app/runs/full-bf16",
            timeout=900, check=False, project=cli,
        )
    finally:
        stack.compose("down", "-v", check=False, project=cli)
        shutil.rmtree(stack.runs / "full-bf16", ignore_errors=True)  # the later tests count and compare runs
    output = proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]
    assert proc.returncode == 0 and "state: finished" in proc.stdout, output
    assert "InvalidCxxCompiler" not in output
    log(f"bf16 full fine-tuning (torch.compile) finished in the image in {time.monotonic() - started:.0f} s")


def test_gpu_only_methods_are_refused_in_one_line_in_the_image(stack):
    """The methods table's rows that need a GPU (QLoRA, Liger kernels, flash attention) are refused inside the
    image, on CPU, with one line each and exit 2, before anything is created; never a traceback."""
    rows = {
        "finetune.method=qlora": "error: finetune.method=qlora needs a CUDA GPU",
        "train.trainer.use_liger_kernel=true": "error: train.trainer.use_liger_kernel=true: Liger kernels need a CUDA GPU",
        # A kernel that is not installed is refused naming the ones that are.
        "model.attn_implementation=flash_attention_2": "error: model.attn_implementation=flash_attention_2: the flash-attn "
        "package is not installed here (no wheel for every platform, so the lock leaves it out); use one that is: sdpa, "
        "eager or auto",
    }
    script = "; ".join(
        f"python -m video_vlm.train --config video_vlm/configs/tiny.yaml {override} --run-dir /app/runs/refused "
        "2>&1 | tail -3" for override in rows
    )
    cli = stack.project + "refuse"
    try:
        proc = stack.compose("run", "--rm", "-T", "video-vlm", "sh", "-c", script, timeout=600, check=False, project=cli)
    finally:
        stack.compose("down", "-v", check=False, project=cli)
    output = proc.stdout + proc.stderr
    for override, line in rows.items():
        assert line in output, f"{override}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert not (stack.runs / "refused").exists(), "a refused run creates nothing"


# ------------------------------------------------------------------------------------------ the methods table

VIDEO_LORA = ["finetune.method=lora", "finetune.r=16", "finetune.alpha=32", "train.max_steps=2",
              "train.per_device_train_batch_size=2", "logging.save_steps=2", "data.num_workers=0"]
TWO_PROCESSES = "accelerate launch --num_processes 2 --config_file configs/accelerate/{} -m video_vlm.train"
# The README's methods table, row by row, with the DPO presets: each preset cut to a few steps with the CLI's
# overrides, as each row's user would run it. Full bf16 has its own check above; DDP with two processes is the
# two-machine check below (configs/accelerate/ddp.yaml, one process on each machine).
METHOD_ROWS = {
    "lora": ("python -m video_vlm.train", "video_vlm/configs/tiny.yaml", VIDEO_LORA),
    "full-fp32-master-weights": ("python -m video_vlm.train", "video_vlm/configs/tiny.yaml", [
        "finetune.method=full", "finetune.full_precision=fp32_master_weights", "model.dtype=bfloat16",
        "train.max_steps=2", "train.per_device_train_batch_size=2", "logging.save_steps=2", "data.num_workers=0"]),
    "image-dpo": ("python -m image_vlm.train", "image_vlm/configs/tiny_dpo.yaml", [
        "warm_start.max_steps=60", "data.max_train_samples=16", "pairs.batch_size=16", "dpo.max_steps=2",
        "dpo.per_device_train_batch_size=8", "logging.save_steps=2"]),
    "video-dpo": ("python -m video_vlm.train", "video_vlm/configs/tiny_dpo.yaml", [
        "stages=[{name: sft, train: {max_steps: 30}}]", "data.max_train_samples=16", "dpo.max_steps=2", "dpo.per_device_train_batch_size=4",
        "logging.save_steps=2", "data.num_workers=0"]),
    "fsdp-config": (TWO_PROCESSES.format("fsdp.yaml"), "video_vlm/configs/tiny.yaml", VIDEO_LORA),
}


def test_every_method_row_of_the_readme_trains_to_finished_in_the_image(image, tmp_path):
    """Each row of the README's methods table that runs on CPU trains inside the image, in one container, to
    `finished`: LoRA, full fine-tuning with fp32 master weights, the image and video DPO presets, and the FSDP
    config with two processes (data-parallel over gloo on CPU, and the log says so). Each row's time is logged."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    for folder in (runs, data):
        folder.mkdir()
        os.chown(folder, 1000, 1000)
    lines = []
    for name, (command, config, overrides) in METHOD_ROWS.items():
        lines.append(
            f"start=$(date +%s.%N); {command} --config {config} {shlex.join(overrides)} --run-dir /app/runs/{name} "
            f"> /app/runs/{name}.log 2>&1; echo \"row {name} $? $start $(date +%s.%N)\""
        )
    proc = run([
        DOCKER, "run", "--rm", "--init", "--no-healthcheck", "--network", "host", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true", "-e", "OMP_NUM_THREADS=1", "-e", "WANDB_MODE=disabled",
        "-e", "HF_HUB_OFFLINE=1", "-v", f"{runs}:/app/runs", "-v", f"{data}:/app/data", image, "bash", "-c", "\n".join(lines),
    ], timeout=1200, check=False)
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith("row "):
            _, name, code, start, end = line.split()
            rows[name] = (int(code), float(end) - float(start))
    failed = []
    for name in METHOD_ROWS:
        code, seconds = rows.get(name, (None, 0.0))
        output = (runs / f"{name}.log").read_text(errors="replace") if (runs / f"{name}.log").exists() else proc.stderr
        state = json.loads((runs / name / "status.json").read_text())["state"] if (runs / name / "status.json").exists() else None
        log(f"methods row {name}: exit {code}, {state}, {seconds:.0f} s in the container")
        if code != 0 or state != "finished" or "state: finished" not in output:
            failed.append(f"{name}: exit {code}, state {state}:\n{output[-2500:]}")
    assert not failed, "\n\n".join(failed)
    output = (runs / "fsdp-config.log").read_text()
    assert "distributed: DDP over gloo on CPU, 2 processes (FSDP was asked for; accelerate runs it on GPUs only)" in output


# ------------------------------------------------------------------------------------------ two machines

# The tiny image preset, cut to a few LoRA steps (tests/conftest.py's IMAGE_SMOKE), long enough to kill a machine
# between two checkpoints: steps take ~0.5 s with both "machines" on this box's 2 cores.
TWO_MACHINE_RUN = [
    "warm_start.enabled=false", "finetune.method=lora", "finetune.r=8", "finetune.alpha=16",
    "train.per_device_train_batch_size=4", "train.temperature=1.0", "train.loss_type=dapo", "rewards.weights.format=1.0",
    "data.max_train_samples=32", "train.max_steps=24", "logging.save_steps=3", "eval.limit=4",
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TwoMachines:
    """Two containers from the image on host networking, as two machines: the documented launch (docs/containers.md),
    the same command on each but --machine_rank, over one shared runs/ and data/ (NFS between real machines)."""

    def __init__(self, image: str, base: Path, port: int):
        self.image, self.base, self.port = image, base, port
        self.runs, self.data = base / "runs", base / "data"
        for folder in (self.runs, self.data):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, 1000, 1000)
        self.names = [f"{PROJECT}-machine{rank}" for rank in (0, 1)]

    def launch(self) -> None:
        for rank, name in enumerate(self.names):
            run([DOCKER, "rm", "-f", name], check=False)
            run([
                DOCKER, "run", "-d", "--init", "--no-healthcheck", "--name", name, "--network", "host", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges:true", "-e", "OMP_NUM_THREADS=1", "-e", "WANDB_MODE=disabled",
                "-e", "HF_HUB_OFFLINE=1", "-v", f"{self.runs}:/app/runs", "-v", f"{self.data}:/app/data", self.image,
                "accelerate", "launch", "--config_file", "configs/accelerate/ddp.yaml", "--num_machines", "2",
                "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                "--main_process_port", str(self.port), "-m", "image_vlm.train", "--config", "image_vlm/configs/tiny.yaml",
                *TWO_MACHINE_RUN, "data.root=/app/data/red-blobs", "--run-dir", "/app/runs/two",
            ])

    def wait(self, rank: int, timeout_s: float) -> int:
        return int(run([DOCKER, "wait", self.names[rank]], timeout=timeout_s).stdout.strip())

    def log(self, rank: int) -> str:
        proc = run([DOCKER, "logs", self.names[rank]], check=False)
        return proc.stdout + proc.stderr

    def status(self) -> dict:
        path = self.runs / "two" / "status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def remove(self) -> None:
        for name in self.names:
            run([DOCKER, "rm", "-f", name], check=False)


def test_two_machines_train_as_one_job_and_a_lost_machine_fails_the_run_then_both_resume(image, tmp_path):
    """Two containers on host networking, as two machines, train the tiny image preset as one job over a shared
    runs folder: rank 0 says "2 processes on 2 machines" and alone writes the run folder. Killing machine 1 mid-run
    ends machine 0 within 2 minutes, `failed`, with a line naming the peer it lost (not a 30-minute collective
    timeout); launching both again resumes from the newest checkpoint and finishes. (Before: machine 1 died building
    its tiny model, `OSError: [Errno 39] Directory not empty`.)"""
    machines = TwoMachines(image, tmp_path, free_port())
    run_dir = machines.runs / "two"
    try:
        started = time.monotonic()
        machines.launch()
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "checkpoint-6").is_dir():
            assert time.monotonic() < deadline, f"no checkpoint-6 in 300 s:\n{machines.log(0)[-3000:]}\n{machines.log(1)[-3000:]}"
            assert machines.status().get("state") not in ("failed", "finished"), f"{machines.status()}\n{machines.log(1)[-3000:]}"
            time.sleep(0.5)
        log(f"two machines formed one job and saved checkpoint-6 in {time.monotonic() - started:.0f} s")
        run([DOCKER, "kill", machines.names[1]])
        killed = time.monotonic()
        machines.wait(0, timeout_s=150)
        took = time.monotonic() - killed
        lost = machines.status()
        assert took < 120 and lost["state"] == "failed", f"{took:.0f} s after the kill: {lost}\n{machines.log(0)[-3000:]}"
        # gloo's line ("Connection closed by peer [127.0.0.1]:41234", "Read error [...]") becomes one that names
        # the machine lost and what to do.
        assert re.search(r"lost the machine at \[127\.0\.0\.1\]:\d+ .*launch every machine again", lost["error"]), lost
        assert lost["step"] < 24, lost
        first_log = machines.log(0)
        assert "distributed: DDP over gloo on CPU, 2 processes on 2 machines" in first_log, first_log[-3000:]
        assert lost["distributed"] == "DDP over gloo on CPU, 2 processes on 2 machines", lost  # the run folder says so
        newest = max(checkpoints(run_dir), key=lambda path: int(path.name.rsplit("-", 1)[1])).name
        log(f"machine 0 ended `failed` {took:.0f} s after machine 1 was killed, at step {lost['step']}")

        resumed = time.monotonic()
        machines.launch()
        codes = [machines.wait(rank, timeout_s=400) for rank in (0, 1)]
        logs = [machines.log(rank) for rank in (0, 1)]
        assert codes == [0, 0], f"exit codes {codes}:\n{logs[0][-3000:]}\n{logs[1][-3000:]}"
        assert f"resuming from /app/runs/two/checkpoints/{newest}" in logs[0], logs[0][-3000:]
        status = machines.status()
        assert status["state"] == "finished" and status["step"] == status["total"] == 24, status
        # Only rank 0 writes: one status owner, each step's metrics once, the saves in its log alone.
        steps = [line["step"] for line in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in line]
        assert steps == sorted(set(steps)) and steps[-1] == 24, steps
        assert "saved /app/runs/two" in logs[0] and "saved /app/runs/two" not in logs[1], logs[1][-3000:]
        assert not any(line.startswith(("distributed: ", "state: ")) for line in logs[1].splitlines()), logs[1][-3000:]
        assert "rank 1: done; rank 0 records the run's state in /app/runs/two/status.json" in logs[1], logs[1][-3000:]
        assert "state: finished" in logs[0], logs[0][-3000:]
        assert owners(machines.runs) == {1000}
        log(f"both machines resumed from {newest} and finished in {time.monotonic() - resumed:.0f} s")
    finally:
        machines.remove()


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(path for path in run_dir.rglob("checkpoint-*") if path.is_dir() and any(path.iterdir()))


def wait_state(stack: Stack, service: str, run_id: str, wanted: set[str], timeout_s: float, moved_from: dict | None = None) -> dict:
    """Poll `python -m core.runs status` in `service` until the run reads one of `wanted` (and, with `moved_from`,
    has trained past that status: a later step, or another stage, whose steps count from 0 again)."""
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        status = stack.run_status(service, run_id)
        moved = moved_from is None or (
            status.get("stage") != moved_from.get("stage") or (status.get("step") or 0) > (moved_from.get("step") or 0)
        )
        if status["state"] in wanted and moved and status.get("step") is not None:
            return status
        if status["state"] in {"failed", "crashed"} - wanted:
            break
        time.sleep(2)
    log_tail = (stack.runs / run_id / "train.log").read_text(errors="replace")[-3000:] if (stack.runs / run_id / "train.log").exists() else ""
    pytest.fail(f"{run_id} read {status} from {service}, not {sorted(wanted)}:\n{log_tail}\n{stack.logs()[-3000:]}")


def open_run_in_runs_page(browser, stack: Stack, service: str, run_id: str):
    """The Runs page of `service`'s app, showing `run_id` (picked in its "Open run" box)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(90_000)
    page.goto(f"http://127.0.0.1:{stack.ports[service]}/runs")
    page.locator("h1").first.wait_for()
    box = page.locator(".st-key-runs-open")
    box.wait_for()
    if run_id not in box.inner_text():
        try:
            box.get_by_role("combobox").click()
            page.get_by_role("option", name=run_id).click()
        except Exception:
            page.screenshot(path=str(stack.base / "runs-page.png"), full_page=True)
            (stack.base / "runs-box.html").write_text(box.inner_html())
            raise
    page.get_by_role("heading", name=run_id).wait_for()
    return page


def press_until_state_leaves(page, stack: Stack, name: str, run_id: str, state: str, tries: int = 4) -> None:
    """Press the button `name` until the run no longer reads `state`: a press that lands while the live view
    redraws can be lost. An error message on the page ends the wait at once."""
    for _ in range(tries):
        button = page.get_by_role("button", name=name)
        button.wait_for()
        button.click()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if stack.run_status("video-vlm", run_id)["state"] != state:
                return
            errors = page.locator("[data-testid='stAlertContentError']")
            if errors.count():
                pytest.fail(f"{name}: {errors.first.inner_text()}")
            time.sleep(1)
    page.screenshot(path=str(stack.base / f"{name}.png"), full_page=True)
    pytest.fail(f"{name} left {run_id} {state} after {tries} presses (screenshot in {stack.base})")


def test_one_gpu_lease_and_stop_across_containers_and_down_saves(stack, browser, tmp_path):
    """2.3 and 2.4: a tiny image run started with the image page's Start button reads `running` from the video
    container, a launch there hears "GPU busy", and the video app's Stop gives `stopped` with a checkpoint.
    Resumed from the video app, `docker-compose down` mid-training ends it `stopped` with a newer checkpoint within
    the grace period (not `crashed`); after `up` it still reads `stopped`, and Resume finishes it. Evaluation
    then runs in the video container and Compare answers in the image page."""
    before = {path.name for path in stack.runs.iterdir()}
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(90_000)
    try:
        page.goto(f"http://127.0.0.1:{stack.ports['image-vlm']}/image")
        start = page.get_by_role("button", name="Start training")
        start.wait_for()
        start.click()
        page.get_by_text("Started run").first.wait_for()
    finally:
        page.close()
    created = [path.name for path in stack.runs.iterdir() if path.name not in before and (path / "status.json").exists()]
    assert len(created) == 1, created
    run_id = created[0]
    run_dir = stack.runs / run_id

    # Read from the other container: running, and the GPU lease held for everyone.
    wait_state(stack, "video-vlm", run_id, {"running"}, 180)
    busy = stack.compose("exec", "-T", "video-vlm", "python", "-m", "video_vlm.train", "--config", "video_vlm/configs/tiny.yaml",
                         "--run-dir", "/app/runs/busy-probe", check=False, timeout=300)
    assert busy.returncode != 0 and "GPU busy" in busy.stdout + busy.stderr, f"{busy.stdout[-2000:]}\n{busy.stderr[-2000:]}"

    # Stop from the video app: the trainer in the image container saves and reads `stopped`.
    page = open_run_in_runs_page(browser, stack, "video-vlm", run_id)
    try:
        press_until_state_leaves(page, stack, "Stop training", run_id, "running")
        stopped = wait_state(stack, "video-vlm", run_id, {"stopped"}, 240)
        assert checkpoints(run_dir), f"stopped without a checkpoint: {stopped}"
        first_checkpoints = checkpoints(run_dir)

        # Resume from the video app, then `docker-compose down` while it trains.
        press_until_state_leaves(page, stack, "Resume training", run_id, "stopped")
        wait_state(stack, "video-vlm", run_id, {"running"}, 180, moved_from=stopped)
    finally:
        page.close()
    started = time.monotonic()
    stack.compose("down", "-t", "300", timeout=900)
    took = time.monotonic() - started
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped", f"after docker-compose down the run reads {status}"
    assert checkpoints(run_dir) != first_checkpoints, "down saved no newer checkpoint"
    log(f"docker-compose down saved a checkpoint and stopped the run in {took:.0f} s")

    # Up again: the run still reads stopped; Resume finishes it.
    stack.compose("up", "-d", timeout=300)
    stack.wait_healthy()
    assert stack.run_status("image-vlm", run_id)["state"] == "stopped"
    page = open_run_in_runs_page(browser, stack, "video-vlm", run_id)
    try:
        press_until_state_leaves(page, stack, "Resume training", run_id, "stopped")
        wait_state(stack, "image-vlm", run_id, {"finished"}, 900)
    finally:
        page.close()
    assert owners(stack.runs) == {1000}

    # Evaluate, in the video container, from the run folder alone.
    stack.compose("exec", "-T", "video-vlm", "python", "-m", "image_vlm.evaluate", "--run", f"/app/runs/{run_id}", timeout=600)
    assert list((run_dir / "eval").glob("*.json")), "evaluation wrote no report"

    # Compare, in the image app: an uploaded picture, answered by the base model and by the run.
    from PIL import Image

    sample = tmp_path / "tile.png"
    picture = Image.new("RGB", (96, 96), (60, 110, 50))
    picture.paste((220, 30, 20), (30, 30, 62, 62))
    picture.save(sample)
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.set_default_timeout(90_000)
    try:
        page.goto(f"http://127.0.0.1:{stack.ports['image-vlm']}/image")
        page.get_by_role("button", name="Start training").wait_for()
        page.get_by_role("tab", name="Compare").click()
        page.get_by_text("Upload", exact=True).click()
        page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(sample))
        page.get_by_text(f"Uploaded {sample.name}").first.wait_for()
        page.get_by_role("button", name="Generate").click()
        for side in ("base", "tuned"):
            page.locator(f".st-key-image-answer-{side}").get_by_text("Raw output").wait_for(timeout=300_000)
        assert not page.get_by_text("Traceback").count(), "no traceback on the page"
    except Exception:
        page.screenshot(path=str(stack.base / "compare.png"), full_page=True)
        raise
    finally:
        page.close()
