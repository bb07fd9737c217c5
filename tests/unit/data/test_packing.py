"""Packing documents into blocks, the token-file round trip, and batched tokenisation."""

import numpy as np
import pytest

from ptcli.data.packing import (
    open_token_file,
    pack_into_blocks,
    token_dtype,
    tokenize_documents,
    write_token_file,
)

SEP, CLS = 99, 98


def test_separator_follows_every_document_and_blocks_are_exact():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    blocks = list(pack_into_blocks(docs, block_len=4, sep_id=SEP))
    # stream: 1 2 3 S 4 5 S 6 7 8 9 S -> three full blocks, nothing left over
    assert blocks == [[1, 2, 3, SEP], [4, 5, SEP, 6], [7, 8, 9, SEP]]
    assert all(len(b) == 4 for b in blocks)


def test_partial_tail_is_dropped():
    blocks = list(pack_into_blocks([[1, 2, 3, 4, 5]], block_len=4, sep_id=SEP))
    assert blocks == [[1, 2, 3, 4]]  # "5 SEP" is too short for a block


def test_prefix_starts_every_block_and_takes_one_slot():
    docs = [[1, 2, 3], [4, 5, 6, 7]]
    blocks = list(pack_into_blocks(docs, block_len=4, sep_id=SEP, prefix_id=CLS))
    # stream: 1 2 3 S 4 5 6 7 S -> [CLS]+3 ids per block
    assert blocks == [[CLS, 1, 2, 3], [CLS, SEP, 4, 5], [CLS, 6, 7, SEP]]


def test_long_document_spans_many_blocks():
    doc = list(range(1, 1001))
    blocks = list(pack_into_blocks([doc], block_len=10, sep_id=0))
    assert len(blocks) == 100
    assert [t for b in blocks for t in b] == doc  # the trailing separator alone is a dropped partial block


def test_empty_input_and_empty_documents():
    assert list(pack_into_blocks([], block_len=4, sep_id=SEP)) == []
    assert list(pack_into_blocks([[], [1], []], block_len=2, sep_id=SEP)) == [[1, SEP]]
    with pytest.raises(ValueError):
        list(pack_into_blocks([[1]], block_len=1, sep_id=SEP, prefix_id=CLS))


def test_token_dtype_switches_above_65536():
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


@pytest.mark.parametrize("vocab", [1000, 100_000])
def test_token_file_round_trip(tmp_path, vocab):
    rng = np.random.default_rng(0)
    expected = rng.integers(0, vocab, size=(9, 16)).tolist()
    path = tmp_path / "tokens.bin"
    n = write_token_file(iter(expected), path, 16, token_dtype(vocab))
    assert n == 9 and not path.with_suffix(".tmp").exists()
    assert path.stat().st_size == 9 * 16 * token_dtype(vocab).itemsize
    blocks = open_token_file(path, 16, token_dtype(vocab))
    assert blocks.shape == (9, 16) and blocks.tolist() == expected
    with pytest.raises(ValueError):  # read-only
        blocks[0, 0] = 1


def test_empty_token_file_and_bad_input(tmp_path):
    path = tmp_path / "tokens.bin"
    assert write_token_file([], path, 8, np.uint16) == 0
    assert open_token_file(path, 8, np.uint16).shape == (0, 8)
    with pytest.raises(ValueError, match="out of range"):
        write_token_file([[70_000] * 8], tmp_path / "big.bin", 8, np.uint16)
    assert not (tmp_path / "big.bin").exists() and not (tmp_path / "big.tmp").exists()
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"123")  # not a whole number of blocks: a damaged file
    with pytest.raises(ValueError, match="whole number"):
        open_token_file(odd, 8, np.uint16)


def test_tokenize_documents_batches_without_special_tokens():
    calls = []

    def fake_tokenizer(batch, add_special_tokens):
        calls.append((len(batch), add_special_tokens))
        return {"input_ids": [[len(text)] for text in batch]}

    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    assert list(tokenize_documents(fake_tokenizer, texts, batch_size=2)) == [[1], [2], [3], [4], [5]]
    assert calls == [(2, False), (2, False), (1, False)]


def test_tokenize_documents_matches_the_tokenizer_and_never_truncates():
    from ptcli.processing.tokenizers import train_tokenizer

    texts = ["the cat sat on the mat", "", "a much longer document about cats and mats " * 20]
    tok = train_tokenizer(texts * 3, "bpe", 300)
    expected = tok(texts, add_special_tokens=False)["input_ids"]
    assert list(tokenize_documents(tok, texts, batch_size=2)) == expected
    tok.backend_tokenizer.enable_truncation(max_length=8)  # as some saved tokenizer.json files have
    assert list(tokenize_documents(tok, texts, batch_size=2)) == expected
