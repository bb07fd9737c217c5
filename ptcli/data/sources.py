"""Read raw text documents from what the ``dataset`` config describes: files, HF or the embedded corpus."""

from __future__ import annotations

import codecs
import csv
import difflib
import glob
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ptcli.errors import PtcliError

CHUNK = 1 << 20  # decode 1 MiB at a time: memory stays flat however large a line- or paragraph-split file is
SUFFIXES = {"text": (".txt",), "jsonl": (".jsonl",), "csv": (".csv", ".tsv")}
ALL_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv")
# hf_name values that are `datasets` builders for local files: with these, dataset.files / val_files become
# data_files (hf_name=json dataset.files=[a.jsonl]); other hf_names are Hub names or local dataset folders.
HF_FILE_BUILDERS = {"json": (".json", ".jsonl"), "csv": (".csv",), "text": (".txt",),
                    "parquet": (".parquet",)}
HF_FIX = "set HF_DATASETS_OFFLINE=1 and use a local path, or check the name"
EMPTY_FIX = "check dataset.text_column / dataset.document / the files"
KEYS = {"train": ("files", "dataset.files"), "val": ("val_files", "dataset.val_files")}


def resolve_files(patterns: list[str], key: str = "dataset.files", suffixes=ALL_SUFFIXES) -> list[Path]:
    """Expand paths, globs and directories (recursive, ``suffixes`` only) in order, each pattern sorted.

    Raises PtcliError naming the pattern and ``key`` for a missing path, a glob or directory that matches
    nothing, or an unreadable file. Duplicates (overlapping globs) are read once.
    """
    if isinstance(patterns, str):  # a bare string from the command line would otherwise iterate by character
        patterns = [patterns]
    seen: dict[Path, None] = {}
    for pattern in patterns or []:
        for path in _expand(str(pattern), key, suffixes):
            seen.setdefault(path)
    return list(seen)


def _expand(pattern: str, key: str, suffixes) -> list[Path]:
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
        found = []
        for match in sorted(glob.glob(expanded, recursive=True)):
            found += _in_dir(Path(match), suffixes) if os.path.isdir(match) else [Path(match)]
        if not found:
            raise PtcliError(f"{key}: '{pattern}' matches no files", where=os.getcwd(),
                             fix="check the pattern (paths are relative to the current directory)")
    elif os.path.isdir(expanded):
        found = _in_dir(Path(expanded), suffixes)
        if not found:
            raise PtcliError(f"{key}: directory '{pattern}' has no {'/'.join(suffixes)} files",
                             fix="point it at the data files or a folder that holds them")
    elif os.path.exists(expanded):
        found = [Path(expanded)]
    else:
        raise PtcliError(f"{key}: '{pattern}' does not exist", where=os.getcwd(), fix=_missing_fix(expanded))
    for path in found:
        if not os.access(path, os.R_OK):
            raise PtcliError(f"{key}: cannot read '{path}'", where=str(path), fix="check its permissions")
    return found


def _in_dir(folder: Path, suffixes) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def _missing_fix(path: str) -> str:
    parent, name = os.path.split(path)
    parent = parent or "."
    if not os.path.isdir(parent):
        return f"check the path: the directory '{parent}' does not exist either"
    close = difflib.get_close_matches(name, sorted(os.listdir(parent)), n=1)
    hint = f"did you mean '{os.path.join(os.path.dirname(path), close[0])}'? Otherwise " if close else ""
    return f"{hint}check the path (relative to the current directory)"


def check_readable(cfg) -> list[PtcliError]:
    """Every problem with the files the config will read (missing, unreadable, empty folder), not raised.

    Looks at paths only, never contents, so validation stays fast. Empty for embedded and Hub datasets,
    which read no local files (unless dataset.val_files is set, or hf_name is a file builder such as json).
    """
    splits = ("val",) if cfg.source == "embedded" or (cfg.source == "hf" and not _hf_builder(cfg)) else KEYS
    problems = []
    for split in splits:
        name, key = KEYS[split]
        patterns = _list(cfg, name)
        if split == "train" and not patterns:
            problems.append(PtcliError(f"{key} lists no files", fix=f"set {key}=[path, ...]"))
        for pattern in patterns:
            try:
                _expand(str(pattern), key, _suffixes(cfg))
            except PtcliError as e:
                problems.append(e)
    return problems


def read_documents(cfg, split: str = "train", log: Callable[[str], None] = print) -> Iterator[str]:
    """Stream the documents of ``split`` (train: dataset.files, val: dataset.val_files), skipping empty ones.

    Files are read one after another, each decoded in 1 MiB chunks (``document=file`` reads a file whole).
    Validation files of embedded or Hub sources are read by extension (.jsonl, .csv/.tsv, else text).
    Raises PtcliError "dataset is empty" if the split yields nothing.
    """
    source = cfg.source
    if source == "embedded" and split == "train":
        docs, names = _embedded(cfg), "the embedded corpus"
    elif source == "hf" and (split == "train" or _hf_builder(cfg)):
        docs, names = _hf(cfg, split), f"dataset.hf_name={cfg.hf_name}"
    else:
        paths = _split_paths(cfg, split)
        docs = (doc for path in paths for doc in _read_file(path, cfg, log))
        names = ", ".join(map(str, paths[:5])) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    empty = True
    for doc in docs:
        if doc.strip():
            empty = False
            yield doc
    if empty:
        raise PtcliError(f"dataset is empty: the {split} split has no documents", where=names, fix=EMPTY_FIX)


def source_fingerprint(cfg, split: str = "train") -> str:
    """A stable string naming the inputs of ``split``, for cache keys: files by resolved path, size, mtime."""
    source = cfg.source
    spec: dict = {"source": source, "split": split}
    if source == "embedded" and split == "train":
        spec["embedded"] = [int(cfg.embedded_seed), int(cfg.embedded_bytes)]
    elif source == "hf" and split == "train" and not _hf_builder(cfg):
        spec["hf"] = [cfg.hf_name, getattr(cfg, "hf_config", None), getattr(cfg, "hf_split", None) or "train"]
    else:
        if source == "hf":
            spec["hf"] = [cfg.hf_name, getattr(cfg, "hf_config", None)]
        stats = [(str(p.resolve()), p.stat()) for p in _split_paths(cfg, split)]
        spec["files"] = [[name, st.st_size, st.st_mtime_ns] for name, st in stats]
    return json.dumps(spec, sort_keys=True)


def _list(cfg, name: str) -> list:
    value = getattr(cfg, name, None) or []
    return [value] if isinstance(value, str) else list(value)


def _split_paths(cfg, split: str) -> list[Path]:
    if split not in KEYS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    name, key = KEYS[split]
    paths = resolve_files(_list(cfg, name), key, _suffixes(cfg))
    if not paths:
        raise PtcliError(f"{key} lists no files", fix=f"set {key}=[path, ...]")
    return paths


def _suffixes(cfg) -> tuple:
    if cfg.source == "hf":
        return HF_FILE_BUILDERS.get(getattr(cfg, "hf_name", None), ALL_SUFFIXES)
    return SUFFIXES.get(cfg.source, ALL_SUFFIXES)


def _hf_builder(cfg) -> bool:
    return cfg.source == "hf" and getattr(cfg, "hf_name", None) in HF_FILE_BUILDERS


def _read_file(path: Path, cfg, log) -> Iterator[str]:
    suffix, stream = path.suffix.lower(), _decoded(path, cfg, log)
    # a file-less source (embedded, Hub) reads its val_files by extension
    by_suffix = next((kind for kind, ends in SUFFIXES.items() if suffix in ends), "text")
    fmt = cfg.source if cfg.source in SUFFIXES else by_suffix
    column = getattr(cfg, "text_column", None) or "text"
    if cfg.source == "conll":  # language modelling on NER files: each sentence's tokens as one line of text
        from ptcli.data.records import conll_records

        yield from (" ".join(r["tokens"]) for _, r in conll_records(path, _lines(stream)))
    elif fmt == "jsonl":
        yield from _jsonl(path, _lines(stream), column)
    elif fmt == "csv":
        yield from _csv(path, _lines(stream), column)
    else:
        yield from _text(stream, getattr(cfg, "document", None) or "file")


def _decoded(path: Path, cfg, log) -> Iterator[str]:
    """The file as text pieces: UTF-8 decoded incrementally, BOM stripped, CRLF turned into LF."""
    skip = getattr(cfg, "encoding_errors", "fail") == "skip"
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, dropped, first, carry = 0, 0, True, ""
    with open(path, "rb") as handle:  # readability was checked in resolve_files
        while True:
            chunk = handle.read(CHUNK)
            final = not chunk
            # Decode ourselves from a fresh decoder fed pending + chunk, so an error's position maps to a file
            # offset (data[0] sits at `start`) and skip mode can resume right after the bad bytes.
            pending = decoder.getstate()[0]
            data, start = pending + chunk, offset - len(pending)
            offset += len(chunk)
            pieces = []
            while True:
                decoder.reset()
                try:
                    pieces.append(decoder.decode(data, final))
                    break
                except UnicodeDecodeError as e:
                    if not skip:
                        raise PtcliError(
                            f"file is not valid UTF-8: invalid byte 0x{data[e.start]:02x} at byte offset "
                            f"{start + e.start}", where=str(path),
                            fix="convert it to UTF-8 (iconv -f latin1 -t utf-8) or set "
                                "dataset.encoding_errors=skip",
                        ) from None
                    pieces.append(data[:e.start].decode("utf-8"))
                    dropped += e.end - e.start
                    data, start = data[e.end:], start + e.end
            text = carry + "".join(pieces)
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            # hold back a trailing CR: its LF may start the next chunk
            carry = "\r" if text.endswith("\r") and not final else ""
            text = text[:-1] if carry else text
            if text:
                yield text.replace("\r\n", "\n")
            if final:
                break
    if dropped:
        log(f"warning: {path}: dropped {dropped} invalid UTF-8 byte(s) (dataset.encoding_errors=skip)")


def _lines(pieces: Iterable[str]) -> Iterator[str]:
    """Lines with their trailing newline kept (csv needs it inside quoted fields)."""
    rest: list[str] = []  # a list, not a growing string: one huge line must not cost quadratic copying
    for piece in pieces:
        if "\n" not in piece:
            rest.append(piece)
            continue
        lines = piece.split("\n")
        lines[0] = "".join(rest) + lines[0]
        rest = [lines.pop()]
        for line in lines:
            yield line + "\n"
    if "".join(rest):
        yield "".join(rest)


def _text(pieces: Iterator[str], document: str) -> Iterator[str]:
    if document == "file":
        yield "".join(pieces).rstrip("\n")  # the packer adds its own separator between documents
    elif document == "line":
        yield from (line.rstrip("\n") for line in _lines(pieces) if line.strip())
    elif document == "paragraph":
        paragraph: list[str] = []
        for line in _lines(pieces):
            if line.strip():
                paragraph.append(line.rstrip("\n"))
            elif paragraph:
                yield "\n".join(paragraph)
                paragraph = []
        if paragraph:
            yield "\n".join(paragraph)
    else:
        raise PtcliError(f"dataset.document must be file, line or paragraph, got '{document}'",
                         fix="set dataset.document=file, line or paragraph")


def _missing_column(column: str, available, where: str) -> PtcliError:
    close = difflib.get_close_matches(column, [str(a) for a in available], n=1)
    hint = f"did you mean dataset.text_column={close[0]}? Otherwise " if close else ""
    return PtcliError(f"column '{column}' is missing; the columns are: {', '.join(map(str, available))}",
                      where=where, fix=f"{hint}set dataset.text_column to one of them")


def _text_value(value, column: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PtcliError(f"column '{column}' holds a {type(value).__name__}, not text", where=where,
                         fix="point dataset.text_column at a column of strings")
    return value


def _jsonl(path: Path, lines: Iterator[str], column: str) -> Iterator[str]:
    from ptcli.data.records import jsonl_records  # records builds on this module: import at use

    for where, record in jsonl_records(path, lines):
        if column not in record:
            raise _missing_column(column, list(record), where)
        yield _text_value(record[column], column, where)


def _csv(path: Path, lines: Iterator[str], column: str) -> Iterator[str]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a whole document is one field; the default is 128 KiB
    reader = csv.reader(lines, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = next(reader, None)
        if not header:
            return  # an empty file: read_documents reports the split empty if nothing else is there
        if column not in header:
            raise _missing_column(column, header, f"{path}:1")
        index = header.index(column)
        for row in reader:
            if len(row) > index:
                yield row[index]
    except csv.Error as e:
        raise PtcliError(f"malformed CSV: {e}", where=f"{path}:{reader.line_num}",
                         fix="check the quoting on that line (a .tsv file is read tab-separated)") from None


def _embedded(cfg) -> Iterator[str]:
    from ptcli.data.corpus import generate_corpus  # lazily: the generator is only needed for this source

    yield from generate_corpus(int(cfg.embedded_seed), int(cfg.embedded_bytes)).documents


def _hf(cfg, split: str) -> Iterator[str]:
    import datasets  # lazily: importing it costs seconds, and only this source needs it

    name, config = cfg.hf_name, getattr(cfg, "hf_config", None)
    kwargs: dict = {"split": getattr(cfg, "hf_split", None) or "train"}
    if name in HF_FILE_BUILDERS:  # local files land in the builder's "train" split whatever hf_split says
        kwargs = {"split": "train", "data_files": [str(p) for p in _split_paths(cfg, split)]}
    try:
        dataset = datasets.load_dataset(name, config, **kwargs)
    except Exception as e:  # Hub, network and builder errors share no base class narrower than this
        detail = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        raise PtcliError(f"cannot load the Hugging Face dataset '{name}': {type(e).__name__}: {detail}",
                         where=f"dataset.hf_name={name} hf_config={config} hf_split={kwargs['split']}",
                         fix=HF_FIX) from None
    column = getattr(cfg, "text_column", None) or "text"
    columns = dataset.column_names or []
    if column not in columns:
        raise _missing_column(column, columns, f"dataset.hf_name={name}")
    for batch in dataset.select_columns([column]).iter(batch_size=1000):
        for value in batch[column]:
            yield _text_value(value, column, f"dataset.hf_name={name}")
