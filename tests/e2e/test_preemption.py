"""SIGTERM / SIGUSR1: every process finishes its step, a checkpoint is written, exit code 3; resume is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import TINY, losses_by_step, run_cli

pytestmark = pytest.mark.slow
ARGS = [*TINY, "train.max_steps=40", "train.save_every=1000", "train.eval_every=1000",
        "dataset.embedded_bytes=60000"]


def wait_for_step(run: Path, step: int, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while True:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if any(json.loads(line)["step"] >= step for line in lines if line.strip()):
            return
        assert proc.poll() is None and time.time() < deadline, "the run ended before it was signalled"
        time.sleep(0.02)


def test_sigterm_checkpoints_exits_3_and_resumes_exactly(tmp_path):
    straight = run_cli("pretrain", *ARGS, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "ptcli", "pretrain", *ARGS, f"hydra.run.dir={run}"], cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_step(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "ptcli: stopped: SIGTERM received: stopped after step" in err and "train.resume=auto" in err
    assert "Traceback" not in err
    stopped_at = max(losses_by_step(run))
    assert stopped_at < 40 and (run / "checkpoints" / f"step-{stopped_at:08d}" / "state.json").is_file()
    assert not (run / "summary.json").exists() and not (run / "model").exists()
    resumed = run_cli("pretrain", *ARGS, f"hydra.run.dir={run}", "train.resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {stopped_at}" in resumed.stderr
    assert losses_by_step(run) == losses_by_step(tmp_path / "straight")  # bitwise


@pytest.mark.distributed
def test_sigusr1_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """Slurm may signal one task first: the processes agree, write one checkpoint, and a 2-process resume
    continues to the losses of an uninterrupted single-process run with the same global batch."""
    import psutil

    args = [*ARGS, "train.batch_size=8"]
    single = run_cli("pretrain", *args, "train.grad_accum=2", f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "ptcli",
                "pretrain", *args, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(torchrun, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(run, 3, proc)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "ptcli" in " ".join(c.cmdline())]
    rank1 = next(w for w in workers if w.environ().get("RANK") == "1")
    rank1.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert "SIGUSR1 received: stopped after step" in err, err[-3000:]  # rank 1
    assert "another process received a signal: stopped after step" in err  # rank 0 agreed
    # torchrun reports the first worker to exit (it then stops the other, which has already passed the
    # checkpoint barrier): its code is EXIT_PREEMPTED
    assert "exitcode  : 3" in err
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    assert len(checkpoints) == 1
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert f"stopped after step {stopped_at} " in err
    resumed = subprocess.run(torchrun + ["train.resume=auto"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = losses_by_step(tmp_path / "single"), losses_by_step(run)
    assert sorted(got) == list(range(1, 41))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6)


def test_resume_auto_inside_a_slurm_job_names_the_run_directory_after_the_job(tmp_path):
    """A requeued Slurm job (same SLURM_JOB_ID) must find its own checkpoints: with train.resume=auto the run
    directory is outputs/<verb>/slurm-<job id> instead of a timestamp."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
    first = run_cli("pretrain", *TINY, "train.max_steps=2", "train.save_every=2", "train.resume=auto", cwd=tmp_path,
                    env=env)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "outputs" / "pretrain" / "slurm-4242"
    assert (run / "checkpoints" / "step-00000002").is_dir()
    again = run_cli("pretrain", *TINY, "train.max_steps=3", "train.save_every=2", "train.resume=auto", cwd=tmp_path,
                    env=env)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stderr and max(losses_by_step(run)) == 3
