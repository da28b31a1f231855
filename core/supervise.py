"""A container's main process: run the app, and on `docker compose down` stop this container's trainers cleanly.

    python -m core.supervise -- streamlit run ui/app.py ...

Trainers live in their own sessions (closing a tab must not stop them), so the SIGTERM that Docker sends
to the container's main process never reaches them, and the SIGKILL that follows the grace period would
kill them without a checkpoint. On SIGTERM or SIGINT this process writes a stop request into every active
run that this container owns (and signals it), passes the signal to the app, waits until those runs report
an end (up to VLM_STOP_TIMEOUT_S), and only then exits. Compose's `stop_grace_period` must be longer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from core.runs import stop_runs_here

STOP_TIMEOUT_S = float(os.environ.get("VLM_STOP_TIMEOUT_S", "240"))


def log(message: str) -> None:
    print(f"[vlm-playbook] {message}", file=sys.stderr, flush=True)


def supervise(command: list[str], stop_timeout_s: float = STOP_TIMEOUT_S) -> int:
    app = subprocess.Popen(command)
    stopping = threading.Event()

    def on_signal(signum, frame):
        if stopping.is_set():
            return
        stopping.set()
        log(f"{signal.Signals(signum).name}: stopping this container's training runs (up to {stop_timeout_s:.0f} s)")
        threading.Thread(target=shut_down, args=(signum,), daemon=True).start()

    def shut_down(signum: int) -> None:
        try:
            app.send_signal(signum)
        except ProcessLookupError:
            pass
        code = stop_runs_here(stop_timeout_s, log=log)
        if code:
            log("some runs did not stop in time; they will read as crashed and resume from their latest checkpoint")
        done.set()

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    code = app.wait()
    if stopping.is_set():
        done.wait()
    return code


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: python -m core.supervise -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
