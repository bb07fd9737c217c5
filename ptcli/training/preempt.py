"""Preemption: SIGTERM or SIGUSR1 (Slurm sends one before the time limit with ``--signal``), or a first Ctrl-C
(SIGINT), asks the run to stop; a second Ctrl-C stops it at once.

The handler only sets a flag. The loop checks it after every optimizer step; the processes agree (a run stops
when any of them was signalled), write a checkpoint together and exit with ``EXIT_PREEMPTED``. Under Slurm,
``train.requeue=true`` puts the job back in the queue; with ``train.resume=auto`` it continues from that
checkpoint in the same run directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class Preemption:
    """Installs the handlers for the duration of a run (main thread only) and remembers the first signal."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT":  # Ctrl-C: the first stops after this step with a checkpoint, a second stops at once
            if self.signal_name == "SIGINT":
                raise KeyboardInterrupt
            import sys

            print("\nptcli: Ctrl-C: stopping after this step with a checkpoint (press Ctrl-C again to stop at once, "
                  "without one)", file=sys.stderr, flush=True)
        if self.signal_name is None:
            self.signal_name = name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def requeue(log) -> bool:
    """``scontrol requeue $SLURM_JOB_ID`` (array tasks by their own id); True when Slurm accepted it."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        log("train.requeue=true but this is not a Slurm job (no SLURM_JOB_ID): not requeued")
        return False
    try:
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"warning: could not requeue Slurm job {job}: {e}")
        return False
    if proc.returncode:
        log(f"warning: scontrol requeue {job} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return False
    log(f"requeued Slurm job {job}")
    return True
