"""The on-disk cache of packed corpora: keys from input fingerprints, atomic builds, reuse across runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptcli.errors import PtcliError

_FORMAT_VERSION = 2  # bump when the packed layout changes, so old entries are not reused (2: digests)
META_KEYS = ("n_blocks", "block_len", "dtype", "n_docs", "n_tokens")
_SPECIAL_NAMES = ("bos", "eos", "unk", "pad", "cls", "sep", "mask")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _plain(value):
    """numpy scalars (e.g. a block count) as plain JSON numbers."""
    return value.item() if hasattr(value, "item") else str(value)


def file_fingerprint(paths: list[Path]) -> str:
    """A hex digest over each file's resolved path, size and modification time, in the given order.

    Order matters because it is the packing order. Statting instead of hashing contents keeps this instant
    for large corpora; any edit changes the size or mtime.
    """
    entries = []
    for path in paths:
        try:
            resolved = Path(path).expanduser().resolve()
            stat = resolved.stat()
        except OSError as e:
            raise PtcliError(f"cannot read data file '{path}': {e.strerror}", where="dataset.files",
                             fix="Check the path; relative paths start at the current folder") from None
        entries.append([str(resolved), stat.st_size, stat.st_mtime_ns])
    return _digest(entries)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hex digest of the tokenizer's full serialized form plus its special-token roles.

    The roles matter on their own: packing uses e.g. the eos or sep id, which the JSON alone may not say.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    roles = {name: [getattr(tokenizer, f"{name}_token", None), getattr(tokenizer, f"{name}_token_id", None)]
             for name in _SPECIAL_NAMES}
    return _digest([body, roles])


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packed_cache_key(source_fingerprint: str, tokenizer_fingerprint: str, block_len: int, extra: dict) -> str:
    """A short hex digest naming the packed corpus built from these inputs and settings (``extra``)."""
    spec = {"format": _FORMAT_VERSION, "source": source_fingerprint, "tokenizer": tokenizer_fingerprint,
            "block_len": int(block_len), "extra": extra}
    return _digest(spec)[:20]


@dataclass
class PackedCorpus:
    """A packed corpus directory, ``<cache_dir>/packed/<key>/``, holding ``tokens.bin`` and ``meta.json``."""

    path: Path
    n_blocks: int
    block_len: int
    dtype: str
    n_docs: int
    n_tokens: int

    @classmethod
    def from_dir(cls, path: Path, verify: bool = False) -> PackedCorpus:
        """Read ``meta.json`` of a finished entry (raises OSError, ValueError or KeyError if damaged). ``verify``:
        also check that ``tokens.bin`` has the size and digest recorded when it was written (ValueError if not)."""
        meta = json.loads((path / "meta.json").read_text())
        corpus = cls(path=path, **{key: meta[key] for key in META_KEYS})
        if verify:
            import numpy as np

            tokens = path / "tokens.bin"
            expected = corpus.n_blocks * corpus.block_len * np.dtype(corpus.dtype).itemsize
            if tokens.stat().st_size != expected:
                raise ValueError(f"tokens.bin is {tokens.stat().st_size} bytes, {expected} were written")
            if meta.get("digest") != file_digest(tokens):
                raise ValueError("tokens.bin does not match the digest recorded when it was written")
        return corpus

    def blocks(self):
        """The blocks as a read-only numpy memmap of shape ``(n_blocks, block_len)``."""
        from ptcli.data.packing import open_token_file

        return open_token_file(self.path / "tokens.bin", self.block_len, self.dtype)


def load_or_build_packed(key: str, cache_dir: Path, build: Callable[[Path], dict],
                         log: Callable[[str], None] = print) -> tuple[PackedCorpus, bool]:
    """The packed corpus cached as ``<cache_dir>/packed/<key>/``, built first if missing.

    ``build(tmpdir)`` writes ``tokens.bin`` into a fresh temp folder and returns the meta dict
    (``n_blocks, block_len, dtype, n_docs, n_tokens``). ``meta.json`` is written last and the folder is
    renamed into place in one step, so an entry with ``meta.json`` is always complete; a failed build leaves
    nothing behind. If another process finishes the same entry first, its copy is used.
    Returns ``(corpus, was_cached)``.
    """
    root = Path(cache_dir).expanduser() / "packed"
    final = root / key
    if (final / "meta.json").is_file():
        try:
            corpus = PackedCorpus.from_dir(final, verify=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log(f"warning: the packed corpus at {final} is damaged ({e}); rebuilding it")
            shutil.rmtree(final, ignore_errors=True)
        else:
            log(f"data: reusing packed corpus {final} ({corpus.n_blocks} blocks)")
            return corpus, True

    root.mkdir(parents=True, exist_ok=True)
    log(f"data: tokenizing and packing into {final}")
    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
        meta = dict(build(tmp))
        missing = [k for k in META_KEYS if k not in meta]
        if missing or not (tmp / "tokens.bin").is_file():
            raise RuntimeError(f"packed-corpus build wrote no tokens.bin or left out {missing}")
        meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        meta["digest"] = file_digest(tmp / "tokens.bin")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_plain))
        if final.exists() and not (final / "meta.json").is_file():
            shutil.rmtree(final, ignore_errors=True)  # debris from a damaged entry, never a build in progress
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            log(f"data: another process packed {final} first; using it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    corpus = PackedCorpus.from_dir(final)
    log(f"data: packed {corpus.n_docs} documents into {corpus.n_blocks} blocks of {corpus.block_len} tokens "
        f"in {time.monotonic() - start:.1f}s")
    return corpus, False
