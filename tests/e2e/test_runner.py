"""The tests' CLI runner (tests/support.run_cli): its experimental fork mode (PTCLI_TEST_FORK=1) gives what a fresh
interpreter gives."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.support import run_cli


@pytest.mark.parametrize("args", [("--version",), ("pretrain", "model=gpt2-tny"),
                                  ("config", "finetune", "model=minilm")])
def test_a_forked_command_prints_and_exits_as_a_fresh_interpreter_does(args, tmp_path, monkeypatch):
    monkeypatch.setenv("PTCLI_TEST_FORK", "1")
    forked = run_cli(*args, cwd=tmp_path)
    monkeypatch.setenv("PTCLI_TEST_FORK", "0")
    fresh = run_cli(*args, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode in (0, 2) and (forked.stdout or forked.stderr)


def test_a_forked_command_past_its_timeout_is_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("PTCLI_TEST_FORK", "1")
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("pretrain", "device=cpu", "train.max_steps=100000", cwd=tmp_path, timeout=3)
    assert time.monotonic() - start < 30
