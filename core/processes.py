"""This process and its place in a job: rank, world size, usable CPUs, and who owns a pid.

A run folder records its trainer's owner (pid, host, PID namespace); a reader in another container's namespace
must not signal that pid, so ownership is judged by `owned_here`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def is_main_process() -> bool:
    """Rank 0 owns the run folder; other ranks of a distributed job only train."""
    return int(os.environ.get("RANK", "0")) == 0


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def start_distributed() -> None:
    """Join the launcher's process group before anything is decided from local disk.

    On a machine without CUDA, accelerate forms the group only when told it runs on CPU; otherwise every
    process of `accelerate launch --num_processes N` trains alone and writes the run folder as rank 0.
    """
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def _machines_asked(value: str) -> int | None:
    """The fewest machines a torchrun `--nnodes` value (`N` or `MIN:MAX`) accepts, or None when unreadable."""
    try:
        return int(value.split(":")[0])
    except ValueError:
        return None


def job_size_problem(env: dict[str, str] | None = None) -> str | None:
    """Why this process must not train: its launcher asked for a bigger job than the one it joined. None when not.

    What was asked is read from the launcher's own environment:
    - `accelerate launch` with `--num_processes` or `--num_machines` above 1 sets MASTER_ADDR. Its process-group
      launch (torchrun underneath) also sets WORLD_SIZE; its single-process path (`--cpu`, which on more than one
      process or machine relies on mpirun) does not, and each machine then trains alone, on one run folder.
    - torchrun's own settings given as environment (PET_NNODES, as Kubeflow's PyTorchJob sets it): the machines
      found (WORLD_SIZE / LOCAL_WORLD_SIZE) must reach its minimum.

    >>> job_size_problem({}) is None, job_size_problem({"MASTER_ADDR": "10.0.0.1", "WORLD_SIZE": "2"}) is None
    (True, True)
    >>> job_size_problem({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "ACCELERATE_USE_CPU": "True"})[:87]
    'the launcher asked for a job of several processes (MASTER_ADDR=10.0.0.1:29500) but this'
    >>> job_size_problem({"PET_NNODES": "2", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})[:60]
    'the launcher asked for 2 machines (PET_NNODES=2) but the job'
    >>> job_size_problem({"PET_NNODES": "1:2", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}) is None
    True
    """
    env = os.environ if env is None else env
    processes = int(env.get("WORLD_SIZE") or env.get("PMI_SIZE") or env.get("OMPI_COMM_WORLD_SIZE") or 0)
    if env.get("MASTER_ADDR") and not processes:
        where = f"{env['MASTER_ADDR']}:{env.get('MASTER_PORT', '29500')}"
        alone = env.get("ACCELERATE_USE_CPU", "").lower() == "true"
        cpu = "; accelerate launch --cpu starts each machine's process alone" if alone else ""
        return (
            f"the launcher asked for a job of several processes (MASTER_ADDR={where}) but this process joined none: "
            f"it would train alone and share the run folder with the others{cpu}. Launch without --cpu (with "
            "--config_file configs/accelerate/ddp.yaml the job forms over gloo on CPU too) or with torchrun; "
            "docs/containers.md has the two-machine command"
        )
    asked = _machines_asked(env.get("PET_NNODES", ""))
    if asked and processes:
        found = processes // max(1, int(env.get("LOCAL_WORLD_SIZE") or processes))
        if found < asked:
            return (
                f"the launcher asked for {asked} machines (PET_NNODES={env['PET_NNODES']}) but the job has {found} "
                f"({processes} process{'es' if processes > 1 else ''}): start the same command on every machine, "
                "each with its own --node_rank / --machine_rank"
            )
    return None


def distributed_mode(cuda: bool | None = None) -> str:
    """What really runs, from the launcher's environment, for the first lines of `train.log`.

    accelerate shards with FSDP on GPUs only: on CPU the same launch is data-parallel over gloo, and says so.

    >>> import os; os.environ.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
    >>> distributed_mode(cuda=True)
    'FSDP2, 2 processes'
    >>> distributed_mode(cuda=False)
    'DDP over gloo on CPU, 2 processes (FSDP was asked for; accelerate runs it on GPUs only)'
    >>> os.environ.update(WORLD_SIZE="4", ACCELERATE_USE_FSDP="false"); distributed_mode(cuda=True)
    'DDP, 4 processes on 2 machines'
    >>> for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "ACCELERATE_USE_FSDP", "FSDP_VERSION"): del os.environ[key]
    >>> distributed_mode()
    'single process'
    """
    processes = world_size()
    if processes == 1:
        return "single process"
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    machines = processes // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", processes)))
    where = f"{processes} processes" + (f" on {machines} machines" if machines > 1 else "")
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    if not cuda:
        return f"DDP over gloo on CPU, {where}" + (" (FSDP was asked for; accelerate runs it on GPUs only)" if fsdp else "")
    if fsdp:
        return f"FSDP{os.environ.get('FSDP_VERSION', '1')}, {where}"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return f"DeepSpeed, {where}"
    return f"DDP, {where}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def namespace_id() -> str:
    """Identifies this machine boot and PID namespace: two processes with equal ids can signal each other's pids.

    Containers (and `unshare --pid`) have their own PID namespace, so a pid recorded in another one names a
    different process here, or none. The boot id keeps a reboot from matching the namespace it replaced.
    """
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = "?"
    return f"{_read('/proc/sys/kernel/random/boot_id') or socket.gethostname()}/{pidns}"


# A launcher (a page's Start, Resume or Evaluate) names itself to the job it starts under this variable, so the job's
# status.json and GPU lock say who started it rather than "command line".
LAUNCHED_BY_ENV = "VLM_LAUNCHED_BY"


def app_name() -> str:
    """Where this process runs, for messages: the page that launched it, the container's app (VLM_PAGE), else the
    command line."""
    launched_by = os.environ.get(LAUNCHED_BY_ENV, "").strip()
    if launched_by:
        return launched_by
    page = os.environ.get("VLM_PAGE")
    return f"{page}-vlm" if page else f"command line on {socket.gethostname()}"


def page_name(module: str) -> str:
    """The page that launches `python -m module`, as runs and the GPU lock name it.

    >>> page_name("image_vlm.train"), page_name("video_vlm.evaluate")
    ('Image VLM page', 'Video VLM page')
    """
    first, *rest = module.split(".")[0].split("_")
    return " ".join([first.capitalize(), *(word.upper() for word in rest)]) + " page"


def process_owner(app: str | None = None) -> dict[str, Any]:
    """Who this process is, as recorded in status.json, the GPU lock and stop requests; `app` names it otherwise
    (a launcher writing for the job it starts, a page asking a run to stop)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "namespace": namespace_id(), "app": app or app_name()}


def owned_here(owner: dict[str, Any] | None) -> bool:
    """True when `owner` runs in this reader's PID namespace, so its pid means the same process here."""
    return bool(owner) and owner.get("namespace") == namespace_id()


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists here (and is not a zombie we already reaped)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells the truth on Linux.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def agreed_by_all_ranks(value):
    """Rank 0's `value` on every rank of a distributed job; `value` itself in a single process.

    Resume and stage decisions are read from local disk, and two machines' disks can disagree (a save that
    finished on one node only). Ranks that take different paths hang in the first collective, so every such
    decision is rank 0's.
    """
    import torch.distributed as dist

    if world_size() == 1:
        return value
    start_distributed()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered_from_all_ranks(value) -> list:
    """Every rank's `value`, in rank order, on every rank; `[value]` in a single process.

    For a decision each rank sees part of (a skip that happened in rank 1's loader): all ranks then act on the
    same list at the same step, instead of one rank stopping while the others wait for it in a collective.
    """
    import torch.distributed as dist

    if world_size() == 1:
        return [value]
    start_distributed()
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
