"""The packed-corpus cache: reuse without rebuilding, fingerprints that notice edits, crash safety."""

import os

import numpy as np
import pytest

from ptcli.data.cache import file_fingerprint, load_or_build_packed, packed_cache_key
from ptcli.data.packing import pack_into_blocks, write_token_file
from ptcli.errors import PtcliError

DOCS = [[1, 2, 3], [4, 5, 6, 7], [8, 9]]


def make_build(calls, fail=False):
    def build(tmp):
        calls.append(tmp)
        n = write_token_file(pack_into_blocks(DOCS, 4, sep_id=0), tmp / "tokens.bin", 4, np.uint16)
        if fail:
            raise RuntimeError("tokenizer crashed half way")
        return {"n_blocks": n, "block_len": 4, "dtype": "uint16", "n_docs": 3, "n_tokens": 12}
    return build


def test_second_load_reuses_without_building(tmp_path):
    calls, logs = [], []
    first, cached = load_or_build_packed("k1", tmp_path, make_build(calls), log=logs.append)
    assert not cached and len(calls) == 1
    assert first.n_blocks == 3 and first.blocks().tolist() == [[1, 2, 3, 0], [4, 5, 6, 7], [0, 8, 9, 0]]
    second, cached = load_or_build_packed("k1", tmp_path, make_build(calls), log=logs.append)
    assert cached and len(calls) == 1
    assert "reusing" in logs[-1] and "3 blocks" in logs[-1]
    assert second == first and (tmp_path / "packed" / "k1" / "meta.json").is_file()


def test_crash_in_build_leaves_nothing_and_next_call_rebuilds(tmp_path):
    calls = []
    with pytest.raises(RuntimeError, match="crashed"):
        load_or_build_packed("k2", tmp_path, make_build(calls, fail=True), log=lambda _: None)
    assert list((tmp_path / "packed").iterdir()) == []  # neither the entry nor its temp folder
    corpus, cached = load_or_build_packed("k2", tmp_path, make_build(calls), log=lambda _: None)
    assert not cached and len(calls) == 2 and corpus.n_blocks == 3


def test_entry_without_meta_is_rebuilt(tmp_path):
    (tmp_path / "packed" / "k3").mkdir(parents=True)
    (tmp_path / "packed" / "k3" / "tokens.bin").write_bytes(b"partial")
    calls = []
    corpus, cached = load_or_build_packed("k3", tmp_path, make_build(calls), log=lambda _: None)
    assert not cached and len(calls) == 1 and corpus.blocks().shape == (3, 4)


def test_file_fingerprint_notices_edits_and_order(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("alpha")
    b.write_text("beta")
    before = file_fingerprint([a, b])
    assert file_fingerprint([a, b]) == before
    assert file_fingerprint([b, a]) != before
    a.write_text("alpha, longer")
    after_edit = file_fingerprint([a, b])
    assert after_edit != before
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same size, touched
    assert file_fingerprint([a, b]) != after_edit
    with pytest.raises(PtcliError, match="cannot read"):
        file_fingerprint([tmp_path / "missing.txt"])


def test_packed_cache_key_depends_on_every_input():
    base = ("src", "tok", 128, {"sep": 0})
    variants = [("src2", "tok", 128, {"sep": 0}), ("src", "tok2", 128, {"sep": 0}),
                ("src", "tok", 256, {"sep": 0}), ("src", "tok", 128, {"sep": 1})]
    keys = {packed_cache_key(*args) for args in [base, *variants]}
    assert len(keys) == 5 and packed_cache_key(*base) == packed_cache_key(*base)


def test_tokenizer_fingerprint_is_stable_across_save_and_load(tmp_path):
    from transformers import AutoTokenizer

    from ptcli.data.cache import tokenizer_fingerprint
    from ptcli.processing.tokenizers import train_tokenizer

    texts = ["one fish two fish", "red fish blue fish"] * 5
    tok = train_tokenizer(texts, "bpe", 300)
    tok.save_pretrained(tmp_path)
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(tmp_path)) == tokenizer_fingerprint(tok)
    other = train_tokenizer(texts + ["green eggs"], "bpe", 300)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
