"""Shell completion through the installed `ptcli` script, as bash calls it (Typer's completion protocol)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


def complete(line: str) -> list[str]:
    script = Path(sys.executable).parent / "ptcli"
    if not script.is_file():
        pytest.skip("the ptcli console script is not installed beside this Python")
    words = line.split(" ")
    env = {**os.environ, "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1), "_PTCLI_COMPLETE": "complete_bash",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_verbs_groups_options_keys_and_values_complete():
    assert {"pretrain", "predict"} <= set(complete("ptcli pre"))
    assert complete("ptcli pretrain model=gpt2-t") == ["model=gpt2-tiny"]
    assert "train.max_steps=" in complete("ptcli pretrain train.max")
    assert complete("ptcli generate do_sample=") == ["do_sample=true", "do_sample=false"]


def test_the_completion_script_is_printed_for_bash():
    script = Path(sys.executable).parent / "ptcli"
    if not script.is_file():
        pytest.skip("the ptcli console script is not installed beside this Python")
    proc = subprocess.run([str(script), "--show-completion", "bash"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and "_PTCLI_COMPLETE=complete_bash" in proc.stdout
