"""Turn documents into fixed-length token blocks and stream them to and from raw binary token files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

WRITE_CHUNK_BLOCKS = 4096  # blocks per write: bounded memory, few system calls


def tokenize_documents(tokenizer, texts: Iterable[str], batch_size: int = 1000) -> Iterator[list[int]]:
    """Token ids of each text (no special tokens added), in order, encoded ``batch_size`` texts at a time.

    Each batch is one call into the fast tokenizer's Rust backend, which encodes the texts in parallel.
    """
    encode = _batch_encoder(tokenizer)
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            yield from encode(batch)
            batch = []
    if batch:
        yield from encode(batch)


def _batch_encoder(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    """The fastest faithful way to encode a batch: the Rust backend directly, else ``tokenizer(batch)``.

    Going straight to the backend skips building attention masks and a BatchEncoding (about a third of
    the time). It is only faithful when the backend neither truncates nor pads, which ``tokenizer()``
    would switch off for the call, so otherwise the ordinary call is used.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if fast is not None and backend.truncation is None and backend.padding is None:
        return lambda batch: [encoding.ids for encoding in fast(batch, add_special_tokens=False)]
    return lambda batch: tokenizer(batch, add_special_tokens=False)["input_ids"]


def pack_into_blocks(docs: Iterable[list[int]], block_len: int, sep_id: int,
                     prefix_id: int | None = None, keep_tail: bool = False) -> Iterator[list[int]]:
    """Blocks of exactly ``block_len`` ids cut from the documents joined into one stream.

    ``sep_id`` follows every document, so a block that spans a document boundary shows where it is (HF's
    run_clm ``group_texts`` joins documents with nothing between them, transformers#23198). With
    ``prefix_id`` (BERT's [CLS]) each block is ``[prefix_id]`` plus the next ``block_len - 1`` stream ids.
    Empty documents are skipped; the final partial block is dropped (``keep_tail``: kept, shorter, as
    evaluation wants all of the text).
    """
    body = block_len - 1 if prefix_id is not None else block_len
    if body < 1:
        raise ValueError(f"block_len={block_len} leaves no room for tokens")
    head = [prefix_id] if prefix_id is not None else []
    buffer: list[int] = []
    for doc in docs:
        if len(doc) == 0:
            continue
        buffer.extend(doc)
        buffer.append(sep_id)
        # Walk an offset and trim once per document: deleting from the front per block would be quadratic
        # for one very long document.
        start = 0
        while len(buffer) - start >= body:
            yield head + buffer[start:start + body]
            start += body
        del buffer[:start]
    if keep_tail and len(buffer) > 1:
        yield head + buffer


def token_dtype(vocab_size: int):
    """The smallest unsigned dtype that holds every id: uint16 up to 65536 tokens, else uint32."""
    import numpy as np

    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_token_file(blocks: Iterable[list[int]], path: Path, block_len: int, dtype) -> int:
    """Stream ``blocks`` to ``path`` as raw ``dtype`` ids, row after row; returns the number of blocks.

    Writes in chunks, so memory stays bounded whatever the corpus size. The file is written as
    ``path.with_suffix('.tmp')`` and renamed at the end, so ``path`` is either complete or absent.
    Raises ``ValueError`` on a block of the wrong length or an id that does not fit ``dtype``.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    top = np.iinfo(dtype).max
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    n_blocks = 0
    chunk: list[list[int]] = []

    def flush(f) -> None:
        array = np.asarray(chunk, dtype=np.int64)
        if array.ndim != 2 or array.shape[1] != block_len:
            raise ValueError(f"blocks must all have {block_len} ids")
        if array.min() < 0 or array.max() > top:
            # Casting would wrap silently and corrupt the corpus.
            raise ValueError(f"token id out of range for {dtype.name} (found {array.min()}..{array.max()})")
        f.write(array.astype(dtype).tobytes())
        chunk.clear()

    try:
        with open(tmp, "wb") as f:
            for block in blocks:
                chunk.append(block)
                n_blocks += 1
                if len(chunk) >= WRITE_CHUNK_BLOCKS:
                    flush(f)
            if chunk:
                flush(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n_blocks


def open_token_file(path: Path, block_len: int, dtype):
    """The token file at ``path`` as a read-only memory map of shape ``(n_blocks, block_len)``."""
    import numpy as np

    dtype = np.dtype(dtype)
    size = Path(path).stat().st_size
    row = block_len * dtype.itemsize
    if size % row:
        raise ValueError(f"{path} holds {size} bytes, not a whole number of {block_len}-token blocks")
    if size == 0:
        # numpy cannot map an empty file; an empty read-only array behaves the same to callers.
        empty = np.zeros((0, block_len), dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode="r", shape=(size // row, block_len))
