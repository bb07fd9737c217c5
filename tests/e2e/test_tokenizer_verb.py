"""`ptcli tokenizer`: a tokenizer trained alone, reused from the cache, and used by pretrain."""

import json

import pytest

from tests.support import TINY, run_cli

pytestmark = pytest.mark.slow


def test_tokenizer_verb_trains_saves_and_feeds_pretrain(tmp_path):
    env = {"PTCLI_CACHE_DIR": str(tmp_path / "cache")}
    args = ["dataset.embedded_bytes=100000", "tokenizer.kind=wordpiece", "tokenizer.vocab_size=400"]
    first = run_cli("tokenizer", *args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    run = (tmp_path / "outputs" / "tokenizer" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "wordpiece" and 100 < summary["vocab_size"] <= 400 and not summary["from_cache"]
    assert summary["chars_per_token"] > 1.5
    assert first.stdout == f"{run / 'tokenizer'}\n" and "characters per token" in first.stderr, "logs on stderr"

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    assert tokenizer("a cat").input_ids[0] == tokenizer.cls_token_id
    second = run_cli("tokenizer", *args, cwd=tmp_path, env=env)
    assert second.returncode == 0 and json.loads(
        ((tmp_path / "outputs" / "tokenizer" / "latest").resolve() / "summary.json").read_text())["from_cache"]

    pretrain = run_cli("pretrain", "+objective=mlm", *TINY, "train.max_steps=1", f"tokenizer.path={run / 'tokenizer'}",
                       "dataset.embedded_bytes=100000", cwd=tmp_path, env=env)
    assert pretrain.returncode == 0, pretrain.stderr
    model_dir = (tmp_path / "outputs" / "pretrain" / "latest").resolve() / "model"
    assert AutoTokenizer.from_pretrained(model_dir).get_vocab() == tokenizer.get_vocab()


def test_tokenizer_dry_run_and_bad_vocab(tmp_path):
    dry = run_cli("tokenizer", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "# tokenizer: bpe, 2048 tokens" in dry.stdout
    bad = run_cli("tokenizer", "tokenizer.vocab_size=10", "dataset.embedded_bytes=20000", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "vocab" in bad.stderr
