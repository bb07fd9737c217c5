"""Hydra's submitit launchers under ptcli (``-m hydra/launcher=submitit_slurm`` / ``submitit_local``).

ptcli's defaults for them live in ``configs/hydra/launcher/submitit_{slurm,local}.yaml``. This module holds what a
config file cannot: the pre-flight check that Slurm's ``sbatch`` is there, the preemption signal the jobs get, and
how a failed sweep point reports back to the process that waits for it. No torch here.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from ptcli.errors import EXIT_PREEMPTED, PtcliError
from ptcli.launch.compose import compose, quiet_schema_matching

PLUGIN = "hydra_plugins.hydra_submitit_launcher."
SLURM_TARGET = PLUGIN + "submitit_launcher.SlurmLauncher"


quiet_schema_matching()  # on import too: a submitit job composes its point's config before ptcli code runs


def launcher_on_command_line(args: list[str]) -> str | None:
    """The option of the last ``hydra/launcher=X`` override (``+``/``++`` forms too), else None."""
    for arg in reversed(args):
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "hydra/launcher":
            return value
    return None


def launcher_target(verb: str, args: list[str], config_dirs=()) -> tuple[str | None, str, str]:
    """The ``_target_`` of the launcher a ``-m`` run will use, its option name and how it was chosen ("set on the
    command line" or "selected by the config"). ``hydra/launcher=submitit_slurm`` on the command line is answered
    without composing; otherwise the config (an experiment may select a launcher) is composed with Hydra's node.
    None when that fails: Hydra reports it when the run starts, as before."""
    named = launcher_on_command_line(args)
    if named == "submitit_slurm":
        return SLURM_TARGET, named, "set on the command line"
    try:
        cfg = compose(verb, args, config_dirs, with_hydra=True)
        target = cfg.hydra.launcher.get("_target_")
        name = named or cfg.hydra.runtime.choices.get("hydra/launcher") or "?"
    except Exception:
        return None, "", ""
    return (str(target) if target else None), name, ("set on the command line" if named else "selected by the config")


def check_launcher(verb: str, args: list[str], config_dirs=()) -> str | None:
    """Before a ``-m`` run: fail (exit 2, nothing submitted) when the Slurm launcher is chosen and ``sbatch`` is
    not on PATH; returns the launcher's ``_target_``."""
    target, name, where = launcher_target(verb, args, config_dirs)
    if target == SLURM_TARGET and not shutil.which("sbatch"):
        raise PtcliError(
            f"hydra/launcher={name} submits each sweep point with Slurm's sbatch, and sbatch was not found on PATH",
            where=f"launcher {where}",
            fix="Nothing was submitted. Run this on a Slurm login node (or put Slurm's bin folder on PATH), or sweep "
                "on this machine with hydra/launcher=submitit_local (points in parallel) or hydra/launcher=basic "
                "(one after another)")
    return target


def is_submitit(target: str | None) -> bool:
    """True for the ``_target_`` of either submitit launcher."""
    return bool(target) and target.startswith(PLUGIN)


@contextlib.contextmanager
def errors_reach_ptcli(enabled: bool = True):
    """While a submitit sweep runs: Hydra hands exceptions on (HYDRA_FULL_ERROR=1) instead of printing a trimmed
    traceback and a hint about that variable, so ptcli reports a failed point (or a refused submission) itself,
    on one screen."""
    if not enabled:
        yield
        return
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def prepare_submitit_env() -> None:
    """Slurm (``--signal``) and submitit_local warn a job ``signal_delay_s`` before its time limit with submitit's
    preemption signal, USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise. ptcli checkpoints on SIGUSR1 (as with
    ``--signal=USR1@120`` in scripts/slurm/), so ask for that; the jobs inherit the variable (sbatch exports the
    environment), so submitit inside them listens for the same signal. A value the user set is kept."""
    os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")


def is_submitit_point(hydra_cfg) -> bool:
    """True inside a sweep point that one of the submitit launchers started (its own process or Slurm job)."""
    from hydra.types import RunMode

    target = str((hydra_cfg.get("launcher") or {}).get("_target_") or "")
    return hydra_cfg.mode == RunMode.MULTIRUN and is_submitit(target)


def point_outcome(code: int, run_dir, data: dict | None, error: BaseException | None = None) -> BaseException:
    """What a failed submitit sweep point raises. A point that ptcli requeued (train.requeue=true under Slurm,
    after a checkpoint) exits as usual: the job runs again and its result comes later. Any other failure raises
    :class:`SweepPointFailed`, which Hydra's job runner catches, so submitit stores it as the point's result: the
    waiting ``ptcli -m`` sees it at once (it would otherwise wait on a job that never writes one) and prints it."""
    requeued = (code == EXIT_PREEMPTED and os.environ.get("SLURM_JOB_ID")
                and bool(((data or {}).get("train") or {}).get("requeue")))
    if requeued:
        return SystemExit(code)
    if isinstance(error, PtcliError):  # what went wrong; the whole message (with its fix) is in the job's log
        detail = error.what
    elif error is not None:
        detail = f"{type(error).__name__}: {error}"
    else:
        detail = None
    return SweepPointFailed(code, str(run_dir), job_log(), detail)


def job_log() -> str | None:
    """This submitit job's stderr log (where ptcli's message went), or None outside one."""
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:
        return None


def _compact_hydra_exception():
    from hydra.errors import CompactHydraException

    return CompactHydraException


class SweepPointFailed(PtcliError, _compact_hydra_exception()):
    """A submitit sweep point that stopped with a non-zero exit code, re-raised by Hydra in the waiting process and
    reported there by ptcli (a CompactHydraException too: where Hydra prints it itself, it prints only this message).
    Picklable: it travels back from the job."""

    def __init__(self, code: int, run_dir: str, log: str | None = None, detail: str | None = None):
        self.code, self.run_dir, self.log, self.detail = code, run_dir, log, detail
        stopped = code == EXIT_PREEMPTED
        what = f"sweep point {os.path.basename(run_dir)} {'stopped' if stopped else 'failed'} (exit code {code})"
        if detail:
            what += f": {detail.rstrip('.')}"
        fix = f"The other points ran to their end. Its log: {log or 'the job log under .submitit/'}"
        PtcliError.__init__(self, what, fix=fix, where=run_dir)
        self.exit_code = code if isinstance(code, int) and code > 0 else 1

    def __reduce__(self):
        return (type(self), (self.code, self.run_dir, self.log, self.detail))

    def __str__(self) -> str:
        return self.message()
