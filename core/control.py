"""Run control inside the trainer: stop requests, signals, the heartbeat, and a truthful status to the end.

Stopping, end to end: whoever wants a run to stop writes `stop.json` into its folder (`RunDir.request_stop`,
through `core.runs.stop_run` from the UI, the CLI and the container supervisor), and signals its pid when it runs
in the same PID namespace. Here `RunControl` turns a signal or that file into one flag (`poll`), and
`stop_at_step_boundary` decides, with every rank, to save and stop; the Trainer hears it through the thin
callback `core.callbacks.GracefulStop`.

This module imports neither torch nor transformers at import time, so the CLI can hold the GPU lock, install
its signal handlers and start beating within a second of launch, long before the model libraries load.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from core.config import HEARTBEAT_TIMEOUT_S
from core.processes import distributed_mode, is_main_process, process_owner, world_size
from core.runs import LAUNCH_TIME_ENV, RunDir, error_line, heartbeat_interval


def launch_time() -> float:
    """When this launch was asked for: the launcher's clock when it started us, else now."""
    try:
        return float(os.environ[LAUNCH_TIME_ENV])
    except (KeyError, ValueError):
        return time.time()


class RunControl:
    """The trainer's side of the control channel: one stop flag, set by SIGTERM/SIGINT or a stop request.

    Signal handlers only set the flag; the trainer acts on it where stopping is safe (a step boundary, or
    between start-up phases). In a command-line process the handlers stay installed until exit, so a
    second SIGTERM during the final save cannot kill it; in-process callers (tests) get theirs back.
    """

    def __init__(self, launched: float | None = None, keep_handlers: bool = False):
        self.requested = False
        self.reason = ""
        self.launched = launch_time() if launched is None else launched
        self.run: RunDir | None = None
        self.keep_handlers = keep_handlers
        self.previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._state_guard = threading.Lock()  # "stopping" from the heartbeat thread never lands after the end state
        self._marked_stopping = self._ended = False

    def _on_signal(self, signum, frame):
        self.request(f"received {signal.Signals(signum).name}")

    def request(self, reason: str) -> None:
        if not self.requested:
            self.requested, self.reason = True, reason
            print(f"{reason}: saving a checkpoint (if a step was trained) and stopping", file=sys.stderr, flush=True)

    def poll(self) -> bool:
        """Check the run folder for a stop request made since this launch; True once a stop is requested."""
        if not self.requested and self.run is not None:
            request = self.run.stop_request(self.launched)
            if request is not None:
                self.request(stop_request_reason(request, self.run))
        return self.requested

    def who_asked(self) -> str:
        """The stop's reason as recorded: who asked, when the run folder holds their request, else how it came.

        A Stop from a page (or `python -m core.runs stop`) writes its request and then signals a trainer in its
        namespace; the signal lands first, but the request says who asked, so "received SIGTERM" stays for a
        signal that came alone (docker stop, kill).
        """
        request = self.run.stop_request(self.launched) if self.run is not None else None
        return stop_request_reason(request, self.run) if request is not None else self.reason

    def stop_at_step_boundary(self) -> bool:
        """Whether training stops at this step boundary, where saving is safe: a stop was requested on any rank.

        Under several processes the ranks agree on the flag (all-reduce MAX), so they stop at the same step;
        only rank 0 reads the run folder. Called by the trainer callback `core.callbacks.GracefulStop`.
        """
        local = self.poll() if is_main_process() else self.requested
        import torch.distributed as dist  # the trainer has loaded torch by now; this module stays light at launch

        if dist.is_available() and dist.is_initialized():
            import torch

            flag = torch.tensor([1.0 if local else 0.0], device="cuda" if torch.cuda.is_available() else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = bool(flag.item())
        if local:
            self.request("another rank was asked to stop")  # no-op where the flag is already set
            self.mark_stopping()
        return local

    def mark_stopping(self) -> None:
        """Show `stopping` in status.json once a stop is requested (not from a signal handler: it may interrupt a write)."""
        if not self.requested or self.run is None or not is_main_process():
            return
        with self._state_guard:
            if not (self._marked_stopping or self._ended):
                reason = self.who_asked()
                if reason != self.reason:
                    print(f"{reason} ({self.reason})", file=sys.stderr, flush=True)
                    self.reason = reason
                self._marked_stopping = record_state(self.run, "stopping", stop_reason=reason)

    def end(self, state: str, **fields) -> None:
        with self._state_guard:
            self._ended = True
            record_state(self.run, state, **fields)

    def start_heartbeat(self, run: RunDir, timeout_s: float) -> None:
        """Beat from a background thread: one 7B GRPO step can take minutes, and loading the model longer."""
        self.run = run
        interval = heartbeat_interval(timeout_s)

        def beat() -> None:
            while not self._beat_stop.is_set():
                try:
                    run.beat()
                    if self.poll():
                        self.mark_stopping()
                except OSError as err:  # a full disk must not kill the trainer from this thread
                    print(f"heartbeat: cannot write {run.heartbeat_path}: {err}", file=sys.stderr, flush=True)
                self._beat_stop.wait(interval)

        run.beat()
        self._beat_thread = threading.Thread(target=beat, name="run-heartbeat", daemon=True)
        self._beat_thread.start()

    def stop_heartbeat(self) -> None:
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(timeout=5)
            self._beat_thread = None

    def close(self) -> None:
        """Stop beating and, unless this is a command-line process, give the signal handlers back."""
        self.stop_heartbeat()
        for sig, handler in self.previous.items():
            # A command-line process is about to exit with its end state written: a late SIGTERM (docker stop
            # sent twice) is ignored, since Python restores the default, fatal action while it shuts down.
            signal.signal(sig, signal.SIG_IGN if self.keep_handlers else handler)


def stop_request_reason(request: dict, run: RunDir) -> str:
    """A stop request in words: who asked, as the request records it.

    >>> stop_request_reason({"time": 1.0, "by": {"app": "Image VLM page"}}, RunDir("runs/r"))
    'stop requested from the Image VLM page'
    >>> stop_request_reason({"time": 1.0, "by": {"app": "command line on vm"}}, RunDir("runs/r"))
    'stop requested from the command line on vm'
    >>> stop_request_reason({"time": 1.0}, RunDir("runs/r"))
    'stop requested in runs/r/stop.json'
    """
    by = request.get("by")
    app = by.get("app") if isinstance(by, dict) else None
    if isinstance(app, str) and app.strip():
        return f"stop requested from the {app}"
    return f"stop requested in {run.stop_path}"


def record_state(run: RunDir, state: str, **fields) -> bool:
    """Write an end state; when even that fails (full disk), say so on stderr instead of raising."""
    try:
        run.write_status(state, **fields)
        return True
    except OSError as err:
        print(f"could not record state {state!r} in {run.status_path}: {err}", file=sys.stderr, flush=True)
        return False


@contextmanager
def run_lifecycle(run: RunDir, control: RunControl, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S) -> Iterator[RunControl]:
    """Keep `status.json` and the heartbeat truthful from start to end of a training job (rank 0 writes).

    After the body: `stopped` if a stop was requested, else `finished`; any exception becomes `failed` with
    its message, then re-raises. The caller holds the GPU lock.
    """
    main = is_main_process()
    if main:
        distributed = distributed_mode() if world_size() > 1 else None  # e.g. "DDP over gloo on CPU, 2 processes on 2 machines"
        run.write_status(
            "starting",
            pid=os.getpid(),
            pgid=os.getpgid(0),
            owner=process_owner(),
            launched=control.launched,
            heartbeat_timeout_s=heartbeat_timeout_s,
            distributed=distributed,
        )
        control.start_heartbeat(run, heartbeat_timeout_s)
    else:
        control.run = run
    try:
        yield control
    except BaseException as err:
        if main:
            message = f"{type(err).__name__}: {error_line(err)}".strip()
            control.end("failed", error=message, traceback=traceback.format_exc(limit=8))
        raise
    else:
        if main:
            control.end("stopped" if control.requested else "finished")
    finally:
        control.stop_heartbeat()
