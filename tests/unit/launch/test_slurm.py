"""srun without torchrun: Slurm's host lists and variables become torch.distributed's (no cluster needed)."""

import os

import pytest

from ptcli.errors import PtcliError
from ptcli.launch import slurm
from ptcli.launch.slurm import apply_slurm_env, env_world_size, parse_nodelist, slurm_env
from ptcli.training.parallel import Dist, init_from_env

# What srun gives task 1 of a 4-task step on two nodes (from a real job's `env`, trimmed).
SRUN_TASK = {"SLURM_JOB_ID": "31337", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
             "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NODELIST": "gpu[07-08]",
             "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_STEP_NODELIST": "gpu[07-08]"}


@pytest.mark.parametrize(("nodelist", "hosts"), [
    ("vm", ["vm"]),
    ("node[01-03,7]", ["node01", "node02", "node03", "node7"]),
    ("node[08-10]", ["node08", "node09", "node10"]),
    ("gpu-[8-10].cluster,login01", ["gpu-8.cluster", "gpu-9.cluster", "gpu-10.cluster", "login01"]),
    ("a[1-2]b[01-02],c", ["a1b01", "a1b02", "a2b01", "a2b02", "c"]),
    ("n[1-2],m[009-011]", ["n1", "n2", "m009", "m010", "m011"]),
    (" x , y ", ["x", "y"]),
])
def test_nodelist_parser_expands_slurm_ranges_like_scontrol(nodelist, hosts):
    assert parse_nodelist(nodelist) == hosts


def test_an_unreadable_nodelist_is_a_clear_error():
    with pytest.raises(PtcliError, match="cannot read the Slurm node list"):
        parse_nodelist("node[a-c]")


@pytest.fixture
def no_scontrol(monkeypatch):
    """The pure-Python parser, whatever this machine has installed."""
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)


@pytest.fixture
def clean_env(monkeypatch):
    """No Slurm or torchrun variables; the whole environment is restored afterwards (apply_slurm_env writes
    RANK, WORLD_SIZE, ... itself: left behind, they would make later tests' subprocesses wait for 4 ranks)."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("SLURM_") or key in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}:
            del os.environ[key]
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def test_an_srun_task_gets_rank_world_and_rendezvous(no_scontrol):
    assert slurm_env(SRUN_TASK) == {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07",
                                    "MASTER_PORT": str(10000 + 31337 % 20000)}


def test_the_step_task_count_wins_and_users_rendezvous_is_kept(no_scontrol):
    env = {**SRUN_TASK, "SLURM_STEP_NUM_TASKS": "2", "MASTER_ADDR": "head", "MASTER_PORT": "29500"}
    assert slurm_env(env) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}


@pytest.mark.parametrize(("visible", "local_rank"), [("0,1,2,3", "3"), ("2", "0"), ("", "3")])
def test_local_rank_indexes_the_gpus_slurm_left_visible(no_scontrol, visible, local_rank):
    """--gres=gpu:4 shows every task all four GPUs; --gpus-per-task=1 shows each task only its own."""
    env = {**SRUN_TASK, "SLURM_LOCALID": "3", "CUDA_VISIBLE_DEVICES": visible}
    assert slurm_env(env)["LOCAL_RANK"] == local_rank


@pytest.mark.parametrize("change", [
    {"RANK": "0"},                     # torchrun (or the user) already described the world
    {"WORLD_SIZE": "8"},
    {"SLURM_STEP_ID": None},           # the batch script itself: SLURM_PROCID=0, SLURM_NTASKS=4, one process
    {"SLURM_PROCID": None},
    {"SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"},   # a one-task job stays single-process
])
def test_no_world_outside_a_multi_task_srun_step(change):
    env = {k: v for k, v in {**SRUN_TASK, **change}.items() if v is not None}
    assert slurm_env(env) == {}


def test_applying_it_sets_the_environment_once(clean_env, no_scontrol):
    for key, value in {**SRUN_TASK, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        clean_env.setenv(key, value)
    assert env_world_size() == 4
    assert (os.environ["RANK"], os.environ["LOCAL_RANK"], os.environ["MASTER_ADDR"]) == ("0", "0", "gpu07")
    assert apply_slurm_env() == {}, "RANK is set now: nothing more to derive"


def test_a_single_task_batch_job_is_one_process(clean_env):
    for key, value in {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_NODELIST": "vm"}.items():
        clean_env.setenv(key, value)
    assert env_world_size() == 1 and "RANK" not in os.environ
    assert init_from_env("auto") == Dist()

