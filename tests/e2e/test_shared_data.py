"""Real data from ../shared/data (skipped when absent; CI sets PTCLI_REQUIRE_SHARED=1 so it fails instead)."""

from __future__ import annotations

import json
import math

import pytest

from tests.support import TINY_MODEL, run_cli, shared_data

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_pretrain_on_tiny_shakespeare_beats_the_uniform_baseline(tmp_path):
    train, val = shared_data("tinyshakespeare/train.txt"), shared_data("tinyshakespeare/validation.txt")
    proc = run_cli("pretrain", *TINY_MODEL, "dataset=text", f"dataset.files=[{train}]",
                   f"dataset.val_files=[{val}]",
                   "dataset.document=paragraph", "train.max_steps=60", "train.log_every=20", "train.eval_every=60",
                   "train.eval_batches=5", "optim.lr=3e-3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(((tmp_path / "outputs" / "pretrain" / "latest").resolve() / "summary.json").read_text())
    assert summary["final_val_loss"] < math.log(512) - 0.7  # clearly below guessing among the 512 tokens
    assert summary["val_blocks"] > 100  # validation.txt (0.1 MB) in blocks of 32 tokens


def test_wikitext_lines_are_documents():
    from ptcli.data.sources.files import TextFiles
    from ptcli.objectives.lm import documents

    path = shared_data("wikitext2/validation.txt")
    docs = list(documents(TextFiles(files=[str(path)], document="line"), "train", log=lambda m: None))
    assert 2000 < len(docs) <= 3760  # 3,760 lines, blank ones skipped
    assert any(d.strip().startswith("= ") for d in docs), "article headings survive as documents"
