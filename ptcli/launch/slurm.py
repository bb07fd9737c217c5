"""Slurm's environment as torch.distributed's: a task ``srun`` started without torchrun joins the job's process group.

Applied by the launch layer before anything else reads RANK/WORLD_SIZE (no torch here).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess

from ptcli.errors import PtcliError


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list as host names: ``"gpu[01-03,7],login"`` -> gpu01 gpu02 gpu03 gpu7 login.
    Asks ``scontrol show hostnames`` where it is installed (it knows every form), else parses the common ones:
    comma-separated names, each with any number of ``[a-b,c]`` ranges (zero padding kept)."""
    # Without a config file scontrol looks for a "configless" controller in DNS first (a minute where DNS is
    # unreachable), so only when one is there.
    conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    if shutil.which("scontrol") and os.path.isfile(conf):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                  timeout=10, check=True)
            hosts = done.stdout.split()
            if hosts:
                return hosts
    return parse_nodelist(nodelist)


def parse_nodelist(nodelist: str) -> list[str]:
    """The pure-Python reading of a Slurm host list (see ``expand_nodelist``)."""
    hosts: list[str] = []
    for item in _split_top_level(nodelist.strip()):
        expanded = [""]
        for text, ranges in re.findall(r"([^\[\]]*)(?:\[([^\]]*)\])?", item):
            if not text and not ranges:
                continue
            options = [text]
            if ranges:
                options = [text + n for part in ranges.split(",") for n in _expand_range(part, nodelist)]
            expanded = [head + tail for head in expanded for tail in options]
        hosts.extend(h for h in expanded if h)
    return hosts


def _split_top_level(nodelist: str) -> list[str]:
    """Split at commas outside brackets: ``"a[1,2],b"`` -> ``["a[1,2]", "b"]``."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    items.append(nodelist[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_range(part: str, nodelist: str) -> list[str]:
    lo, sep, hi = part.strip().partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        raise PtcliError(f"cannot read the Slurm node list {nodelist!r}",
                         fix="Set MASTER_ADDR to the host of task 0 (the first node of the job)")
    if not sep:
        return [lo]
    width = len(lo) if lo.startswith("0") else 0
    return [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]


def slurm_env(environ=None) -> dict[str, str]:
    """torch.distributed's variables for a task that ``srun`` started without torchrun, derived from Slurm's:
    RANK=SLURM_PROCID, WORLD_SIZE=SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), LOCAL_RANK=SLURM_LOCALID (the GPU
    index: modulo the visible GPUs when Slurm gave each task its own),
    MASTER_ADDR=the first host of the step's node list, MASTER_PORT=10000 + job id % 20000 (both kept when set).

    Empty (nothing to add) when torchrun or the user already set RANK/WORLD_SIZE, outside a job step (the
    batch script itself has SLURM_PROCID=0 and SLURM_NTASKS=N but is one process: only srun sets
    SLURM_STEP_ID), and for one-task steps."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "WORLD_SIZE" in env or "SLURM_PROCID" not in env or "SLURM_STEP_ID" not in env:
        return {}
    world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if world <= 1:
        return {}
    local = int(env.get("SLURM_LOCALID") or 0)
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible and local >= len(visible):  # Slurm bound this task's own GPUs (--gpus-per-task): index among them
        local %= len(visible)
    out = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(world), "LOCAL_RANK": str(local)}
    if not env.get("MASTER_ADDR"):
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise PtcliError("srun started this task but Slurm gave no node list (SLURM_STEP_NODELIST)",
                             fix="Set MASTER_ADDR to the host of task 0")
        out["MASTER_ADDR"] = expand_nodelist(nodelist)[0]
    if not env.get("MASTER_PORT"):
        out["MASTER_PORT"] = str(10000 + int(env.get("SLURM_JOB_ID") or 0) % 20000)
    return out


def apply_slurm_env() -> dict[str, str]:
    """Put ``slurm_env()`` into this process's environment (once; later calls find RANK set and add nothing),
    so that everything after it (run-dir agreement, rank checks, ``init_process_group``) sees one world."""
    found = slurm_env()
    os.environ.update(found)
    return found


def env_world_size() -> int:
    """The number of processes in this job: torchrun's WORLD_SIZE, or srun's task count (see ``slurm_env``)."""
    apply_slurm_env()
    return int(os.environ.get("WORLD_SIZE", "1"))
