"""`ptcli models` from the command line (JSON Lines when piped, one-screen errors), and the memory estimate held
against the peak RSS of real short runs (scripts/check_memory_estimates.py) for tiny shipped configs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO, assert_one_screen, run_cli

pytestmark = pytest.mark.slow


def test_models_lists_and_recommends_as_json_lines(tmp_path):
    proc = run_cli("models", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = [json.loads(line)["name"] for line in proc.stdout.splitlines()]
    assert "bert-tiny" in names and "minilm" in names
    proc = run_cli("models", "recommend", "task=seq2seq", "rows=5000", "memory=2GiB", "seq_len=64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["model"] for r in rows} == {"t5-tiny", "bart-tiny"} and rows[0]["strategy"] == "pretrain-first"
    assert "objective=seq2seq" in rows[0]["command"] and "task=seq2seq" in proc.stderr
    assert_one_screen(run_cli("models", "recommend", "task=classification", cwd=tmp_path), 2, "rows=")
    assert_one_screen(run_cli("models", "suggest", cwd=tmp_path), 2, "unknown `ptcli models` command")


def test_the_estimate_is_within_30_percent_of_a_real_runs_peak_memory(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_memory_estimates.py"), "bert-tiny",
                           "llama-tiny", "--batch", "8", "--seq", "64", "--steps", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["bert-tiny", "llama-tiny"]
    for r in rows:
        assert 0.7 <= r["ratio"] <= 1.3, r
