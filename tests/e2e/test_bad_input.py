"""Bad input to `ptcli pretrain`: one screen, the right exit code, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import TINY_MODEL as TINY
from tests.support import run_cli

pytestmark = pytest.mark.slow


def assert_one_screen(proc, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 15
    for needle in needles:
        assert needle in proc.stderr


def text_args(path: Path) -> list[str]:
    return ["dataset=text", f"dataset.files=[{path}]"]


def test_missing_file_fails_before_any_run(tmp_path):
    proc = run_cli("pretrain", *TINY, *text_args(tmp_path / "nope.txt"), cwd=tmp_path)
    assert_one_screen(proc, 2, "nope.txt")
    assert not (tmp_path / "outputs").exists()


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    proc = run_cli("pretrain", *TINY, *text_args(tmp_path / "empty.txt"), cwd=tmp_path)
    assert_one_screen(proc, 2, "empty")


def test_non_utf8_names_file_and_offset(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"hello world\n" * 10 + b"caf\xe9\n")
    proc = run_cli("pretrain", *TINY, *text_args(tmp_path / "bad.txt"), cwd=tmp_path)
    assert_one_screen(proc, 2, "bad.txt", "byte offset 123", "encoding_errors=skip")


def test_corpus_shorter_than_one_block(tmp_path):
    (tmp_path / "short.txt").write_text("a tiny corpus with a few words in it\n" * 3)
    proc = run_cli("pretrain", *TINY, *text_args(tmp_path / "short.txt"), "dataset.seq_len=512",
                   "model.max_positions=512", "model.vocab_size=300", cwd=tmp_path)
    assert_one_screen(proc, 2, "fewer than one block", "dataset.seq_len")


def test_tokenizer_larger_than_model_vocab(tmp_path):
    first = run_cli("pretrain", *TINY, "train.max_steps=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    tokenizer = (tmp_path / "outputs" / "pretrain" / "latest" / "tokenizer").resolve()
    proc = run_cli("pretrain", *TINY, "train.max_steps=1", f"tokenizer.path={tokenizer}", "model.vocab_size=100",
                   cwd=tmp_path)
    assert_one_screen(proc, 2, "embeddings", "model.vocab_size")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = run_cli("pretrain", *TINY, "train.max_steps=20", "train.save_every=1", "optim.lr=1e30",
                   "train.max_grad_norm=null", "scheduler=constant", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)
    assert_one_screen(proc, 1, "NaN or infinite", "last good checkpoint")
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert checkpoints, "the checkpoint before the blow-up is kept"
    import torch
    from safetensors.torch import load_file

    weights = load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
