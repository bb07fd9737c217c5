"""The one place that formats and reports ptcli's user-facing errors and exit codes."""

from __future__ import annotations

import os
import sys

EXIT_OK = 0
EXIT_RUNTIME = 1  # the run started and failed; the last good checkpoint is intact
EXIT_USAGE = 2  # bad command line, bad config or bad input data: nothing was run
EXIT_PREEMPTED = 3  # stopped by SIGTERM/SIGUSR1 after writing a checkpoint; resume with train.resume=auto


class PtcliError(Exception):
    """An error the user can fix: says what went wrong, where, and how to fix it.

    Printed as one line, ``ptcli: error: <what> (<where>). <fix>``, with exit code 2
    (config and input errors). Subclass :class:`RunFailure` for exit code 1.
    """

    exit_code = EXIT_USAGE

    def __init__(self, what: str, fix: str | None = None, where: str | None = None):
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.where = where

    def message(self) -> str:
        text = f"ptcli: error: {self.what}"
        if self.where:
            text += f" ({self.where})"
        text = text.rstrip(".") + "."
        if self.fix:
            fix = self.fix.rstrip(".")
            text += f" {fix[:1].upper()}{fix[1:]}."
        return text


class RunFailure(PtcliError):
    """A failure after the run started (exit code 1); the run directory is named in ``where``."""

    exit_code = EXIT_RUNTIME


class Preempted(PtcliError):
    """The run stopped on a signal after writing a checkpoint (exit code 3): not a failure, resumable."""

    exit_code = EXIT_PREEMPTED

    def message(self) -> str:
        return super().message().replace("ptcli: error:", "ptcli: stopped:", 1)


def debug_enabled() -> bool:
    """True when the user asked for full tracebacks (``--debug`` or ``PTCLI_DEBUG=1``)."""
    return os.environ.get("PTCLI_DEBUG", "") not in ("", "0", "false", "no")


def report(error: BaseException, stream=None) -> int:
    """Print ``error`` for a person (one screen, or the traceback under --debug); return its exit code."""
    stream = stream or sys.stderr
    if debug_enabled():
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__, file=stream)
    if isinstance(error, PtcliError):
        print(error.message(), file=stream)
        return error.exit_code
    name = type(error).__name__
    print(f"ptcli: error: {name}: {error}. Rerun with --debug for the full traceback.", file=stream)
    return EXIT_RUNTIME
