"""A real Slurm job: sbatch + srun start two `ptcli pretrain` processes that form the process group themselves.

Needs a cluster that answers `sinfo` (on one machine: `bash scripts/slurm/local-cluster.sh start`). Skipped
when there is none; fails instead under PTCLI_REQUIRE_SLURM=1 (CI starts the local cluster).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from tests.support import DONE_STATES, JOB_TIMEOUT, REPO, TINY, job_state, wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]
TEMPLATE = REPO / "scripts" / "slurm" / "pretrain-single-node.sbatch"
def test_srun_two_tasks_train_as_one_job_with_one_run_directory(slurm, tmp_path):
    out = tmp_path / "outputs"
    overrides = [*TINY, "train.max_steps=4", "train.save_every=2", f"run.out_dir={out}"]
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT"} and not k.startswith("SLURM_JOB")}
    # The same interpreter as the tests; PTCLI_CACHE_DIR (conftest's) and SLURM_CONF travel with the job.
    env.update(PTCLI=f"{shlex.quote(sys.executable)} -m ptcli", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    started = time.time()
    submit = subprocess.run(["sbatch", "--parsable", "--job-name=ptcli-test", "--nodes=1", "--ntasks-per-node=2",
                             "--cpus-per-task=1", "--time=00:15:00", f"--chdir={tmp_path}",
                             f"--output={tmp_path}/slurm-%j.out", str(TEMPLATE), *overrides],
                            env=env, capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    state = wait_for_job(job, JOB_TIMEOUT)
    log_file = tmp_path / f"slurm-{job}.out"
    log = log_file.read_text() if log_file.exists() else "(no job output)"
    print(f"Slurm job {job}: {state} after {time.time() - started:.1f} s")
    assert state in {"COMPLETED", "GONE"}, f"job {job} ended {state}:\n{log[-4000:]}"
    assert "2 tasks" in log, log[-4000:]
    runs = [p for p in (out / "pretrain").iterdir() if p.name != "latest"]
    assert len(runs) == 1, f"one run directory for the whole job, got {[p.name for p in runs]}:\n{log[-4000:]}"
    run = runs[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert re.search(r"^model: .*, 2 processes$", log, re.M), f"ptcli did not form a 2-process group:\n{log[-4000:]}"
    assert len(re.findall(r"^step 4/4", log, re.M)) == 1, "only rank 0 logs"


def test_usr1_to_a_running_job_checkpoints_requeues_and_completes(slurm, tmp_path):
    """`scancel --signal=USR1` (what `--signal=USR1@120` sends before the time limit): both tasks stop after the
    same step with a checkpoint, rank 0 requeues the job, and the requeued job resumes in slurm-<job id>."""
    out = tmp_path / "outputs"
    # 900 steps: the tiny model runs ~100 steps a second, and 120 could finish before the signal arrived (seen in CI);
    # below device.compile=auto's 1,000 steps, so the job trains eager as before
    overrides = [*TINY, "train.max_steps=900", "train.save_every=1000", "train.eval_every=1000",
                 "train.requeue=true", "train.resume=auto", f"run.out_dir={out}"]
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT"} and not k.startswith("SLURM_JOB")}
    env.update(PTCLI=f"{shlex.quote(sys.executable)} -m ptcli", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    submit = subprocess.run(["sbatch", "--parsable", "--requeue", "--job-name=ptcli-requeue", "--nodes=1",
                             "--ntasks-per-node=2", "--cpus-per-task=1", "--time=00:15:00", f"--chdir={tmp_path}",
                             f"--output={tmp_path}/slurm-%j.out", "--open-mode=append", str(TEMPLATE), *overrides],
                            env=env, capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    run = out / "pretrain" / f"slurm-{job}"
    deadline = time.time() + JOB_TIMEOUT
    while True:  # signal once training is under way
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if any(json.loads(line)["step"] >= 5 for line in lines if line.strip()):
            break
        assert job_state(job) not in DONE_STATES and time.time() < deadline, "the job ended before the signal"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, capture_output=True, timeout=30)
    state = wait_for_requeue_and_end(job, deadline)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert state in {"COMPLETED", "GONE"}, f"job {job} ended {state}:\n{log[-4000:]}"
    assert "SIGUSR1 received: stopped after step" in log and f"requeued Slurm job {job}" in log, log[-4000:]
    assert "resumed from" in log, log[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 900


def wait_for_requeue_and_end(job: str, deadline: float) -> str:
    """Poll until the job has restarted at least once and ended. Slurm holds a requeued job for its requeue delay
    (``AuthInfo=cred_expire``, 120 s by default) before it may start again; the test lifts that hold once it has
    seen the requeue, since the delay is Slurm's, not ptcli's."""
    restarted, released, state = False, False, None
    while time.time() < deadline:
        proc = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30)
        found = re.search(r"\bJobState=(\S+)", proc.stdout)
        state = found.group(1) if found else "GONE"
        restarts = re.search(r"\bRestarts=(\d+)", proc.stdout)
        restarted = restarted or bool(restarts and int(restarts.group(1)) >= 1)
        if restarted and state == "PENDING" and not released:
            released = subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True,
                                      timeout=30).returncode == 0
        if restarted and state in DONE_STATES | {"GONE"}:
            return state
        if not restarted and state in DONE_STATES - {"PREEMPTED"}:
            pytest.fail(f"job {job} ended {state} without being requeued")
        time.sleep(1)
    subprocess.run(["scancel", job], capture_output=True, timeout=30)
    pytest.fail(f"Slurm job {job} did not finish after its requeue (last state {state}); cancelled")
