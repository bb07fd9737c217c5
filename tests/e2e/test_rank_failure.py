"""A process of a 2-process job dies (kill -9) or hangs (SIGSTOP): the other exits with a clear error within a
bounded time, and the last checkpoint stays intact and resumable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import TINY, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
# Runs "forever" unless something stops it; checkpoints every 10 steps.
ARGS = [*TINY, "train.batch_size=8", "train.max_steps=100000", "train.save_every=10", "train.eval_every=100000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(run: Path, *extra: str) -> list[subprocess.Popen]:
    """Two ranks started by hand, as srun (or any launcher without a watchdog) would: nobody kills the survivor."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        env.pop("PTCLI_DEBUG", None)
        procs.append(subprocess.Popen([sys.executable, "-m", "ptcli", "pretrain", *ARGS, *extra,
                                       f"hydra.run.dir={run}"], cwd=run.parent, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def wait_for_checkpoint(run: Path, procs, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not list((run / "checkpoints").glob("step-*/state.json")):
        assert all(p.poll() is None for p in procs), "a rank ended before the first checkpoint"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    time.sleep(1.0)  # a few more steps: the kill lands between checkpoints


def ended_within(proc: subprocess.Popen, seconds: float) -> tuple[float, str]:
    start = time.time()
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the surviving process hung for more than {seconds} s")
    return time.time() - start, err


def assert_resumable(run: Path, tmp_path: Path) -> None:
    """The newest checkpoint is complete: one process continues from it for two more steps."""
    latest = sorted((run / "checkpoints").glob("step-*"))[-1]
    assert (latest / "state.json").is_file()
    step = int(latest.name.split("-")[1])
    args = [a for a in ARGS if not a.startswith("train.max_steps")]
    proc = run_cli("pretrain", *args, f"train.max_steps={step + 2}", "train.grad_accum=2", f"train.resume={latest}",
                   f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from {latest} at step {step}" in proc.stderr + proc.stdout


def test_kill_9_of_one_rank_stops_the_other_with_a_clear_error(tmp_path):
    run = tmp_path / "run"
    procs = start_ranks(run)
    try:
        wait_for_checkpoint(run, procs)
        procs[1].send_signal(signal.SIGKILL)
        took, err = ended_within(procs[0], 60)
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 1, err
    assert "ptcli: error: process 0 of 2: another process of this job died" in err
    assert "Connection closed by peer" in err or "Connection reset" in err, err
    assert "is intact" in err and f"train.resume=auto hydra.run.dir={run}" in err
    report = err[err.index("ptcli: error:"):]  # what follows the run's own progress lines (stderr too)
    assert "Traceback" not in err and len(report.splitlines()) <= 12, report
    assert took < 60
    assert_resumable(run, tmp_path)


def test_a_hung_rank_fails_the_other_after_device_timeout(tmp_path):
    """SIGSTOP keeps rank 1's connections open: only the collective timeout (device.timeout_s) ends the wait."""
    run = tmp_path / "run"
    procs = start_ranks(run, "device.timeout_s=5")
    try:
        wait_for_checkpoint(run, procs)
        procs[1].send_signal(signal.SIGSTOP)
        took, err = ended_within(procs[0], 90)
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.kill()
    assert procs[0].returncode == 1, err
    assert "another process of this job died, hung or became unreachable (Timed out waiting 5000ms" in err
    assert "Traceback" not in err


def test_torchrun_fsdp_job_with_a_killed_worker_ends(tmp_path):
    """Under torchrun (which SIGTERMs the survivors) with FSDP: the job ends quickly, the survivor says why, and
    the last (sharded) checkpoint resumes in one process."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PTCLI_DEBUG", None)
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                            "-m", "ptcli", "pretrain", *ARGS, "device.strategy=fsdp", f"hydra.run.dir={run}"],
                           cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_checkpoint(run, [job])
        import psutil

        workers = psutil.Process(job.pid).children()
        victim = next(w for w in workers if w.environ().get("RANK") == "1")
        victim.kill()
        took, err = ended_within(job, 90)
    finally:
        job.kill()
    assert job.returncode != 0
    assert "ptcli: error: process 0 of 2: another process of this job died" in err, err[-3000:]
    assert (sorted((run / "checkpoints").glob("step-*"))[-1] / "sharded").is_dir()
    assert_resumable(run, tmp_path)


def test_world_size_that_does_not_divide_the_batch_fails_before_training(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PTCLI_DEBUG", None)
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          "-m", "ptcli", "pretrain", *TINY, "train.batch_size=5", "train.max_steps=3"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode != 0
    message = "ptcli: error: train.batch_size (5) must be divisible by train.grad_accum x processes (1 x 2 = 2)"
    # one line from each process that got to print before torchrun stopped the other; then torchrun's own report
    assert message in job.stderr.split("Traceback")[0], job.stderr[-3000:]
    assert not (tmp_path / "outputs").exists(), "nothing ran: no run directory"
