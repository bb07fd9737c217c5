"""`ptcli push` from the command line: --dry-run writes the card and says so on stdout; an unreachable Hub fails at
once, on one screen, naming --dry-run."""

from __future__ import annotations

import json
import time

from tests.support import assert_one_screen, fake_run, run_cli


def test_push_dry_run_and_an_unreachable_hub(tmp_path):
    run = fake_run(tmp_path)
    proc = run_cli("push", "--dry-run", str(run), "me/bert-sst2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["card"] == str((run / "model" / "README.md").resolve())
    assert "would upload 3 files" in proc.stderr
    start = time.time()
    proc = run_cli("push", str(run), "me/bert-sst2", cwd=tmp_path,
                   env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_token", "HF_HUB_OFFLINE": "0"})
    assert time.time() - start < 30, "offline, it fails at once"
    assert_one_screen(proc, 1, "cannot reach the Hugging Face Hub", "--dry-run")
    assert proc.stdout == ""
