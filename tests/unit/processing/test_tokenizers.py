"""Tokenizer training: determinism, plain-HF loading, special tokens, caching and continuation pieces."""

import pytest

from ptcli.errors import PtcliError
from ptcli.processing.tokenizers import continuation_mask, load_or_train_tokenizer, tokenizer_cache_key, train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "How vexingly quick daft zebras jump; the five boxing wizards jump quickly.",
    "Tokenizers split words into pieces: tokenization, tokenizing, tokenized.",
    "Überraschung: naïve café owners serve crème brûlée.",
] * 8
SAMPLE = "the quick tokenizers jump over lazy boxing wizards"


def vocab_of(tokenizer):
    return sorted(tokenizer.get_vocab().items())


@pytest.mark.parametrize("kind,size", [("bpe", 320), ("wordpiece", 200)])
def test_training_is_deterministic(kind, size):
    first = train_tokenizer(TEXTS, kind, size)
    second = train_tokenizer(iter(TEXTS), kind, size)  # a one-shot iterator works too
    assert vocab_of(first) == vocab_of(second)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert len(first) <= size


@pytest.mark.parametrize("kind,size", [("bpe", 320), ("wordpiece", 200)])
def test_saved_folder_loads_with_plain_auto_tokenizer(tmp_path, kind, size):
    from transformers import AutoTokenizer

    trained = train_tokenizer(TEXTS, kind, size)
    trained.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(SAMPLE)["input_ids"] == trained(SAMPLE)["input_ids"]
    assert loaded.convert_ids_to_tokens([0, 1]) == trained.convert_ids_to_tokens([0, 1])
    assert loaded.all_special_tokens == trained.all_special_tokens
    assert loaded.model_max_length > 10**9


def test_bpe_special_tokens():
    tok = train_tokenizer(TEXTS, "bpe", 320)
    assert tok.eos_token == tok.bos_token == tok.unk_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1)
    ids = tok("hello world")["input_ids"]
    assert 0 not in ids and 1 not in ids  # nothing added around text
    assert tok.decode(ids) == "hello world"
    assert tok("<|endoftext|>")["input_ids"] == [0]


def test_wordpiece_special_tokens_and_template():
    tok = train_tokenizer(TEXTS, "wordpiece", 200, lowercase=True)
    ids = {name: getattr(tok, f"{name}_token_id") for name in ("pad", "unk", "cls", "sep", "mask")}
    assert ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    encoded = tok("a b")["input_ids"]
    assert encoded[0] == ids["cls"] and encoded[-1] == ids["sep"] and len(encoded) == 4
    plain = tok("the quick", add_special_tokens=False)["input_ids"]
    assert tok("THE Quick", add_special_tokens=False)["input_ids"] == plain
    assert any(t.startswith("##") for t in tok.get_vocab())


def test_continuation_mask_marks_word_pieces():
    wp = train_tokenizer(TEXTS, "wordpiece", 200)
    mask, vocab = continuation_mask(wp), wp.get_vocab()
    assert mask.dtype == bool and len(mask) == len(wp)
    assert all(mask[i] == t.startswith("##") for t, i in vocab.items() if t not in wp.all_special_tokens)
    assert not mask[[wp.cls_token_id, wp.sep_token_id, wp.mask_token_id]].any()
    bpe = train_tokenizer(TEXTS, "bpe", 320)
    mask, vocab = continuation_mask(bpe), bpe.get_vocab()
    assert all(mask[i] != t.startswith("Ġ") for t, i in vocab.items() if t not in bpe.all_special_tokens)
    assert mask[vocab["x"]] and not mask[vocab["Ġ"]] and not mask[bpe.eos_token_id]
    assert 0 < mask.sum() < len(mask) - 2


def test_bad_settings_are_user_errors():
    with pytest.raises(PtcliError, match="unknown tokenizer kind"):
        train_tokenizer(TEXTS, "unigram", 300)
    with pytest.raises(PtcliError, match="at least 258"):
        train_tokenizer(TEXTS, "bpe", 100)
    with pytest.raises(PtcliError, match="no text"):
        train_tokenizer(["", ""], "wordpiece", 100)


def test_cache_reuses_without_training(tmp_path):
    logs = []
    first, cached = load_or_train_tokenizer(lambda: TEXTS, "src-1", "wordpiece", 200, tmp_path,
                                            log=logs.append)
    assert not cached and "trained" in logs[-1]
    folder = tmp_path / "tokenizers" / tokenizer_cache_key("src-1", "wordpiece", 200, False)
    assert (folder / "tokenizer.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folder left behind

    def must_not_train():
        raise AssertionError("texts_factory was called although the tokenizer is cached")

    again, cached = load_or_train_tokenizer(must_not_train, "src-1", "wordpiece", 200, tmp_path,
                                            log=logs.append)
    assert cached and "reusing" in logs[-1]
    assert again(SAMPLE)["input_ids"] == first(SAMPLE)["input_ids"]
    settings = [("src-1", "wordpiece", 200, False), ("src-2", "wordpiece", 200, False),
                ("src-1", "bpe", 200, False), ("src-1", "wordpiece", 300, False),
                ("src-1", "wordpiece", 200, True)]
    keys = {tokenizer_cache_key(*args) for args in settings}
    assert len(keys) == 5
