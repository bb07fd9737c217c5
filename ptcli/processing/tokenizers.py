"""Train byte-level BPE or WordPiece tokenizers, cached on disk as ordinary Hugging Face tokenizer folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ptcli.errors import PtcliError

KINDS = ("bpe", "wordpiece")
BPE_SPECIALS = {"eos": "<|endoftext|>", "pad": "<|pad|>"}
WORDPIECE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
BYTE_ALPHABET = 256  # byte-level BPE always holds every byte as a token
WORDPIECE_ALPHABET_LIMIT = 1000  # rarer characters become [UNK], as in BERT's recipe
_RECIPE_VERSION = 1  # bump when the training recipe changes, so cached tokenizers are retrained


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int, lowercase: bool = False):
    """Train a ``kind`` ('bpe' or 'wordpiece') tokenizer of at most ``vocab_size`` tokens on ``texts``.

    'bpe' is GPT-2 style byte-level BPE: ``<|endoftext|>`` is bos, eos and unk, ``<|pad|>`` is pad, and
    nothing is added around encoded text. 'wordpiece' is BERT style: a BERT normaliser and pre-tokenizer,
    '##' continuation pieces, [PAD] [UNK] [CLS] [SEP] [MASK], and ``tokenizer('a b')`` gives [CLS] ... [SEP].
    Returns a ``transformers.PreTrainedTokenizerFast``. Same texts and settings give the same vocabulary.
    WordPiece reads ``texts`` twice: pass a re-iterable (not a one-shot generator, which is then held in
    memory) for large corpora.
    """
    from transformers import PreTrainedTokenizerFast

    check_settings(kind, vocab_size)
    if kind == "bpe":
        backend = _train_bpe(texts, vocab_size, lowercase)
        eos = BPE_SPECIALS["eos"]
        return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=eos, eos_token=eos, unk_token=eos,
                                       pad_token=BPE_SPECIALS["pad"])
    backend = _train_wordpiece(texts, vocab_size, lowercase)
    roles = {f"{name}_token": token for name, token in WORDPIECE_SPECIALS.items()}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **roles)


def _train_bpe(texts: Iterable[str], vocab_size: int, lowercase: bool):
    """GPT-2 style byte-level BPE; deterministic as is, since the byte alphabet fixes every base id."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps offsets GPT-2-like; the post-processor adds no tokens.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    counted = _Counted(texts)
    backend.train_from_iterator(counted, trainer=trainer)
    _check_trained(backend, counted.chars, vocab_size)
    return backend


def _train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool):
    """BERT style WordPiece, made deterministic by fixing the alphabet and every '##' id before training.

    Left alone, the trainer numbers '##x' pieces in hash-map order, which differs between processes, and
    merge ties are broken by id, so two trainings would give different vocabularies. Counting characters
    in a first pass and declaring the alphabet (and its '##' forms, in sorted order) up front fixes that.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    texts = texts if iter(texts) is not texts else list(texts)  # two passes need a re-iterable
    counts: Counter = Counter()
    for text in texts:
        counts.update(normalizer.normalize_str(text))
    specials = list(WORDPIECE_SPECIALS.values())
    # Rarest characters (ties by code point) beyond the limit become [UNK]; each kept one costs two ids.
    limit = min(WORDPIECE_ALPHABET_LIMIT, (vocab_size - len(specials)) // 2)
    ranked = sorted((c for c in counts if not c.isspace()), key=lambda c: (-counts[c], c))
    alphabet = sorted(ranked[:limit])
    pinned = specials + ["##" + c for c in alphabet]  # special tokens get the first ids, in this order
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=pinned, initial_alphabet=alphabet, limit_alphabet=len(alphabet),
        continuing_subword_prefix="##", show_progress=False)
    trained = Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIALS["unk"]))
    trained.normalizer = normalizer
    trained.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counted = _Counted(texts)
    trained.train_from_iterator(counted, trainer=trainer)
    _check_trained(trained, counted.chars, vocab_size)
    # Rebuild from the vocabulary so the '##x' helpers are ordinary pieces, not special added tokens.
    vocab = trained.get_vocab(with_added_tokens=False)
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token=WORDPIECE_SPECIALS["unk"],
                                         continuing_subword_prefix="##"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens(specials)
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[(t, vocab[t]) for t in ("[CLS]", "[SEP]")])
    return backend


def _check_trained(backend, chars: int, vocab_size: int) -> None:
    """Fail clearly on an empty corpus or an alphabet that alone overflows the vocabulary."""
    if chars == 0:
        raise PtcliError("there is no text to train the tokenizer on", where="the training data",
                         fix="Check dataset.files / dataset.text_column, or set tokenizer.path")
    if backend.get_vocab_size() > vocab_size:
        raise PtcliError(f"the training text needs {backend.get_vocab_size()} base tokens, more than "
                         f"tokenizer.vocab_size={vocab_size}", fix="Raise tokenizer.vocab_size")


def check_settings(kind: str, vocab_size: int) -> None:
    """Reject an unknown kind or a vocabulary too small to hold the specials and the base alphabet."""
    if kind not in KINDS:
        raise PtcliError(f"unknown tokenizer kind '{kind}'", where="tokenizer.kind",
                         fix=f"Use one of: auto, {', '.join(KINDS)}")
    smallest = BYTE_ALPHABET + len(BPE_SPECIALS) if kind == "bpe" else len(WORDPIECE_SPECIALS) + 1
    if vocab_size is None or vocab_size < smallest:
        raise PtcliError(f"a {kind} tokenizer needs at least {smallest} tokens, got {vocab_size}",
                         where="tokenizer.vocab_size", fix=f"Set tokenizer.vocab_size to {smallest} or more")


class _Counted:
    """Passes texts through to the trainer while counting characters, to catch an empty corpus."""

    def __init__(self, texts: Iterable[str]):
        self.texts, self.chars = texts, 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.chars += len(text)
            yield text


class _Replayable:
    """Texts that can be read more than once (WordPiece makes two passes) without holding them in memory."""

    def __init__(self, factory: Callable[[], Iterable[str]]):
        self.factory = factory

    def __iter__(self) -> Iterator[str]:
        return iter(self.factory())


def tokenizer_cache_key(source_fingerprint: str, kind: str, vocab_size: int, lowercase: bool) -> str:
    """A short hex digest naming the cached tokenizer trained from this source with these settings."""
    spec = {"recipe": _RECIPE_VERSION, "source": source_fingerprint, "kind": kind,
            "vocab_size": int(vocab_size), "lowercase": bool(lowercase)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _is_complete(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()


def load_or_train_tokenizer(texts_factory: Callable[[], Iterable[str]], source_fingerprint: str, kind: str,
                            vocab_size: int, cache_dir: Path, lowercase: bool = False,
                            log: Callable[[str], None] = print):
    """The tokenizer cached under ``<cache_dir>/tokenizers/<key>/``, trained and saved there first if missing.

    ``texts_factory`` is called only when training is needed (twice for WordPiece). The folder appears
    atomically (saved to a temp folder, then renamed), so a crash never leaves a half-written tokenizer
    that later runs would trust.
    Returns ``(tokenizer, was_cached)``; both paths return the tokenizer as loaded from the folder.
    """
    from transformers import AutoTokenizer

    check_settings(kind, vocab_size)
    root = Path(cache_dir).expanduser() / "tokenizers"
    folder = root / tokenizer_cache_key(source_fingerprint, kind, vocab_size, lowercase)
    if _is_complete(folder):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError, TypeError) as e:  # a damaged cache entry: retrain rather than fail
            log(f"tokenizer: cached tokenizer at {folder} is unreadable ({e}); retraining")
            shutil.rmtree(folder, ignore_errors=True)
        else:
            log(f"tokenizer: reusing cached {kind} tokenizer ({len(tokenizer)} tokens) from {folder}")
            return tokenizer, True

    start = time.monotonic()
    tokenizer = train_tokenizer(_Replayable(texts_factory), kind, vocab_size, lowercase=lowercase)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=root))
    try:
        tokenizer.save_pretrained(str(tmp))
        if folder.exists() and not _is_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)  # debris, not another process's finished work
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _is_complete(folder):
                raise
            # Another process finished the same tokenizer first; training is deterministic, so use theirs.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    log(f"tokenizer: trained {kind} tokenizer ({len(tokenizer)} tokens) in {time.monotonic() - start:.1f}s, "
        f"saved to {folder}")
    return tokenizer, False


def continuation_mask(tokenizer):
    """A bool array over token ids: True where the token continues a word rather than starting one.

    For WordPiece that is a '##' piece. For byte-level BPE it is a token without the 'Ġ' space marker
    (SentencePiece-style vocabularies use '▁'). Special tokens are never continuations. Used for whole-word
    masking, where every piece of a word shares one masking decision.
    """
    import numpy as np

    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values(), default=-1) + 1)
    mask = np.zeros(size, dtype=bool)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    prefix = getattr(getattr(backend, "model", None), "continuing_subword_prefix", None)
    if prefix:
        def continues(token):
            return token.startswith(prefix) and len(token) > len(prefix)
    else:
        # Byte-level BPE marks word starts with 'Ġ', SentencePiece with '▁': use whichever the vocabulary has.
        marker = "▁" if sum(t.startswith("▁") for t in vocab) > sum(t.startswith("Ġ") for t in vocab) else "Ġ"

        def continues(token):
            return not token.startswith(marker)
    for token, token_id in vocab.items():
        mask[token_id] = continues(token)
    mask[[i for i in tokenizer.all_special_ids if 0 <= i < size]] = False
    return mask
