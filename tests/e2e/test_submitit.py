"""Sweeps through Hydra's submitit launcher: `-m hydra/launcher=submitit_local` (one local process per point),
`-m hydra/launcher=submitit_slurm` (one real Slurm job per point; needs a cluster, see tests/e2e/test_slurm.py)
and the one-screen error when sbatch is missing (runs everywhere)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import JOB_TIMEOUT, REPO, TINY, run_cli, wait_for_job

SWEEP = [*TINY, "train.max_steps=2", "train.eval_every=2", "optim.lr=1e-3,2e-3"]


def the_sweep(out: Path) -> Path:
    sweeps = list((out / "pretrain" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def assert_two_done_points(sweep: Path) -> list[Path]:
    """Both points trained to the end and the sweep summary lists both, with their learning rates."""
    points = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in points] == ["0", "1"]
    for point in points:
        assert json.loads((point / "summary.json").read_text())["steps"] == 2, point
    rows = list(csv.DictReader((sweep / "sweep_summary.csv").open()))
    assert [float(r["optim.lr"]) for r in rows] == [1e-3, 2e-3]
    assert [r["status"] for r in rows] == ["done", "done"]
    return points


def job_id(point: Path) -> str:
    """The submitit job id Hydra recorded for a sweep point (hydra.job.id in .hydra/hydra.yaml)."""
    return str(yaml.safe_load((point / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


@pytest.mark.slow
def test_submitit_local_runs_each_point_as_its_own_process(tmp_path):
    proc = run_cli("pretrain", "-m", "hydra/launcher=submitit_local", *SWEEP, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "each point runs as a local process (hydra/launcher=submitit_local)" in proc.stderr
    assert "ConfigStore schema" not in proc.stderr, "Hydra's schema-matching notice is ptcli's business"
    sweep = the_sweep(tmp_path / "outputs")
    points = assert_two_done_points(sweep)
    ids = [job_id(p) for p in points]
    assert all(i.isdigit() for i in ids) and len(set(ids)) == 2, f"a local job's id is its process id: {ids}"
    for i in ids:  # the point's output went to its job log, not to this process
        log = "".join((sweep / ".submitit" / i / f"{i}_0_log.{k}").read_text() for k in ("out", "err"))
        assert "done: 2 steps" in log and "Job completed successfully" in log, log[-2000:]
    assert "step 2/2" not in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.usefixtures("slurm")
def test_submitit_slurm_submits_one_slurm_job_per_point(tmp_path):
    out = tmp_path / "outputs"
    # This process submits (sbatch) and waits; the jobs start the same interpreter (sys.executable) and inherit this
    # environment (sbatch exports it): PTCLI_CACHE_DIR (conftest's), SLURM_CONF, and ptcli on PYTHONPATH.
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "PTCLI_DEBUG"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_JOB")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    # 1 CPU per job: both jobs fit the 2-CPU local cluster at once.
    args = ["pretrain", "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=15", *SWEEP, f"run.out_dir={out}"]
    try:
        proc = subprocess.run([sys.executable, "-m", "ptcli", *args], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        cancel_sweep_jobs(out)
        pytest.fail(f"the Slurm sweep did not finish within {JOB_TIMEOUT} s; its jobs were cancelled")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "each point runs as a Slurm job (hydra/launcher=submitit_slurm)" in proc.stderr
    sweep = the_sweep(out)
    points = assert_two_done_points(sweep)
    ids = [job_id(p) for p in points]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"], f"one Slurm array job, one task per point: {ids}"
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    for flag in ("--array=0-1", "--cpus-per-task=1", "--nodes=1", "--ntasks-per-node=1", "--time=15",
                 "--job-name=ptcli-pretrain", "--signal=USR1@120"):  # USR1: what ptcli checkpoints on
        assert f"#SBATCH {flag}" in script, script
    for i in ids:
        log = "".join((sweep / ".submitit" / i / f"{i}_0_log.{k}").read_text() for k in ("out", "err"))
        assert f"JobEnvironment(job_id={i}," in log and "done: 2 steps" in log, log[-2000:]
        # The result is written just before the job ends; GONE: Slurm already forgot it.
        assert wait_for_job(i, 60) in {"COMPLETED", "GONE"}, f"Slurm job {i} did not complete"


def cancel_sweep_jobs(out: Path) -> None:
    """scancel the jobs of a sweep that ran out of time (ids from the .submitit folders)."""
    for folder in out.glob("pretrain/multirun/*/.submitit/*_*"):
        subprocess.run(["scancel", folder.name], capture_output=True, timeout=30)


@pytest.mark.parametrize("how", ["command line", "experiment"])
def test_missing_sbatch_is_a_one_screen_error_naming_the_launcher(how, tmp_path):
    """No Slurm on PATH: exit 2 before anything is launched, the message names the launcher and the ways out, and
    torch is never imported."""
    if how == "command line":
        args = ["pretrain", "-m", "hydra/launcher=submitit_slurm", "optim.lr=1e-3,2e-3"]
    else:  # an experiment that selects the launcher itself
        (tmp_path / "cfg" / "experiment").mkdir(parents=True)
        (tmp_path / "cfg" / "experiment" / "on-slurm.yaml").write_text(
            "# @package _global_\ndefaults:\n  - override /hydra/launcher: submitit_slurm\n")
        args = ["pretrain", "--config-dir", str(tmp_path / "cfg"), "-m", "experiment=on-slurm", "optim.lr=1e-3,2e-3"]
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "PTCLI_DEBUG": ""}  # the venv only: no sbatch
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptcli", *args], cwd=tmp_path, env=env,
                          text=True, capture_output=True, timeout=120)
    messages = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert re.fullmatch(r"ptcli: error: hydra/launcher=submitit_slurm .*sbatch was not found on PATH .*", messages), \
        messages
    assert ("set on the command line" if how == "command line" else "selected by the config") in messages
    assert "Slurm login node" in messages and "hydra/launcher=submitit_local" in messages
    assert "Traceback" not in messages
    assert not (tmp_path / "outputs").exists(), "nothing was launched"
    modules = {m.group(1).split(".")[0] for m in re.finditer(r"\|\s+([\w.]+)\s*$", proc.stderr, re.M)}
    assert "ptcli" in modules and not {"torch", "transformers", "submitit"} & modules
