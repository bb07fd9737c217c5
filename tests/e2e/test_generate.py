"""`ptcli generate` as a pipeline stage: stdin in, JSON Lines out on stdout, logs on stderr, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO, run_cli

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]


def test_stdin_to_jsonl_on_stdout_and_logs_on_stderr(models, tmp_path):
    stdin = "Once upon a time\n\nThe cat sat\n   \nA bird\n"
    proc = run_cli("generate", f"model.path={models['gpt2']}", "max_new_tokens=5", "batch_size=2", *CPU,
                   cwd=tmp_path, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # nothing but JSON on stdout
    assert [r["prompt"] for r in records] == ["Once upon a time", "The cat sat", "A bird"]
    assert all(set(r) == {"prompt", "completion", "new_tokens", "finish_reason"} for r in records)
    assert "run directory" in proc.stderr and "skipped 2 empty prompt(s) (first at stdin:2)" in proc.stderr
    summary = json.loads(next((tmp_path / "outputs" / "generate").glob("2*/summary.json")).read_text())
    assert summary["prompts"] == 3 and summary["skipped_empty"] == 2 and summary["failed"] == 0


def test_head_closing_the_pipe_stops_quietly(models, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PTCLI_DEBUG", None)
    script = (f"seq 1 60 | {sys.executable} -m ptcli generate model.path={models['gpt2']} max_new_tokens=4 "
              f"batch_size=1 {' '.join(CPU)} 2> err.txt | head -1; echo \"${{PIPESTATUS[1]}}\" > rc.txt")
    subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, timeout=600, check=True, capture_output=True)
    err = (tmp_path / "err.txt").read_text()
    assert (tmp_path / "rc.txt").read_text().strip() == "0", err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert "stdout was closed by its reader" in err


def test_bad_jsonl_line_is_reported_and_the_rest_still_runs(models, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Once upon a time", "id": "a"}\n{"prompt": "broken\n'
                       '{"prompt": "The cat", "id": "b", "meta": {"k": 1}}\n')
    proc = run_cli("generate", f"model.path={models['gpt2']}", f"prompts_file={prompts}", "max_new_tokens=3",
                   "output=jsonl", *CPU, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert f"invalid JSON: Unterminated string starting at column 12 ({prompts}:2)" in proc.stderr
    assert "1 prompt(s) failed" in proc.stderr and "Traceback" not in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["id"], r["prompt"]) for r in records] == [("a", "Once upon a time"), ("b", "The cat")]
    assert records[1]["meta"] == {"k": 1}


def test_model_folder_without_tokenizer_exits_2_on_one_screen(models, tmp_path):
    proc = run_cli("generate", f"model.path={models['no-tokenizer']}", "prompt=hi", *CPU, cwd=tmp_path)
    assert proc.returncode == 2
    assert "no tokenizer in the model folder" in proc.stderr and "tokenizer.save_pretrained" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 6
    assert proc.stdout == ""


def test_generate_help_names_the_decoding_presets():
    proc = run_cli("generate", "--help", cwd=REPO)
    assert proc.returncode == 0 and "decoding: gpt2" in proc.stdout
