"""The one record reader: files (text, JSONL, JSON arrays, CSV/TSV, CoNLL) and Hugging Face datasets as
``(where, record)`` pairs, each record a dict and ``where`` its place (``file:line``) for error messages.

Text is decoded in 1 MiB chunks (UTF-8, BOM stripped, CRLF -> LF, ``encoding_errors``), so memory stays flat
however large a file is. Data sources (``ptcli.data.sources``) choose what to read; objectives choose the fields.
"""

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

CHUNK = 1 << 20
FORMATS = {".txt": "text", ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv", ".conll": "conll"}
HF_FIX = "set HF_DATASETS_OFFLINE=1 and use a local path, or check the name"


def resolve_files(patterns, key: str = "dataset.files", suffixes=tuple(FORMATS)) -> list[Path]:
    """Expand paths, globs and directories (recursive, ``suffixes`` only) in order, each pattern sorted.

    Raises PtcliError naming the pattern and ``key`` for a missing path, a glob or directory that matches
    nothing, or an unreadable file. Duplicates (overlapping globs) are read once.
    """
    if isinstance(patterns, str):  # a bare string from the command line would otherwise iterate by character
        patterns = [patterns]
    seen: dict[Path, None] = {}
    for pattern in patterns or []:
        for path in expand(str(pattern), key, suffixes):
            seen.setdefault(path)
    return list(seen)


def expand(pattern: str, key: str, suffixes) -> list[Path]:
    """One pattern's files, or a PtcliError saying why there are none."""
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


def file_records(path: Path, fmt: str, *, text_column: str = "text", document: str = "file", exact: bool = False,
                 tokens_column: str = "tokens", tags_column: str = "tags", encoding_errors: str = "fail",
                 log: Callable[[str], None] = print) -> Iterator[tuple[str, dict]]:
    """The records of one file read as ``fmt`` (text, jsonl, json, csv or conll). Text files give one record
    ``{text_column: document}`` per document (``document``: file, line or paragraph; ``exact``: a whole file keeps
    its final newline, as evaluation counts every byte given)."""
    stream = decoded(path, encoding_errors, log)
    if fmt == "text":
        for i, doc in enumerate(text_documents(stream, document, exact)):
            yield f"{path}#{i + 1}", {text_column: doc}
    elif fmt == "jsonl":
        yield from jsonl_records(path, lines(stream))
    elif fmt == "json":
        yield from json_array(path, "".join(stream))
    elif fmt == "csv":
        yield from csv_records(path, lines(stream))
    elif fmt == "conll":
        yield from conll_records(path, lines(stream), tokens_column, tags_column)
    else:
        raise PtcliError(f"cannot read records from a {path.suffix or 'suffix-less'} file", where=str(path),
                         fix="use .txt, .csv/.tsv, .jsonl/.json, or dataset=conll for `token TAG` files")


def decoded(path: Path, encoding_errors: str = "fail", log: Callable[[str], None] = print) -> Iterator[str]:
    """The file as text pieces: UTF-8 decoded incrementally, BOM stripped, CRLF turned into LF."""
    from ptcli.data.binary import sniff

    skip = encoding_errors == "skip"
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, dropped, first, carry = 0, 0, True, ""
    with open(path, "rb") as handle:  # readability was checked in resolve_files
        while True:
            chunk = handle.read(CHUNK)
            final = not chunk
            binary = sniff(chunk) if offset == 0 else None
            if binary:  # not text at all: say what it is rather than suggest a re-encoding
                raise PtcliError(f"the file is {binary[0]}, not UTF-8 text", where=str(path), fix=binary[1])
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


def lines(pieces: Iterable[str]) -> Iterator[str]:
    """Lines with their trailing newline kept (csv needs it inside quoted fields)."""
    rest: list[str] = []  # a list, not a growing string: one huge line must not cost quadratic copying
    for piece in pieces:
        if "\n" not in piece:
            rest.append(piece)
            continue
        split = piece.split("\n")
        split[0] = "".join(rest) + split[0]
        rest = [split.pop()]
        for line in split:
            yield line + "\n"
    if "".join(rest):
        yield "".join(rest)


def text_documents(pieces: Iterator[str], document: str, exact: bool = False) -> Iterator[str]:
    """A text file's documents: the whole file, each non-blank line, or each blank-line-separated paragraph."""
    if document == "file":
        text = "".join(pieces)
        yield text if exact else text.rstrip("\n")  # training: the packer adds its own separator after a document
    elif document == "line":
        yield from (line.rstrip("\n") for line in lines(pieces) if line.strip())
    elif document == "paragraph":
        paragraph: list[str] = []
        for line in lines(pieces):
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


def jsonl_records(path: Path, lines_: Iterable[str]) -> Iterator[tuple[str, dict]]:
    """``(file:line, object)`` per non-blank line; invalid JSON or a non-object is an error at its line."""
    for number, line in enumerate(lines_, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PtcliError(f"invalid JSON: {e.msg} at column {e.colno}", where=where,
                             fix="make every line one JSON object (JSON Lines)") from None
        if not isinstance(record, dict):
            raise PtcliError(f"line holds a JSON {type(record).__name__}, not an object", where=where,
                             fix="make every line one JSON object (JSON Lines)")
        yield where, record


def json_array(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    """A ``.json`` file holding one array of objects (Alpaca's format)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PtcliError(f"invalid JSON: {e.msg}", where=f"{path}:{e.lineno}",
                         fix="a .json file must hold one JSON array of objects (use .jsonl for JSON Lines)") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise PtcliError("a .json file must hold one JSON array of objects", where=str(path),
                         fix="write [{...}, {...}] or use JSON Lines (.jsonl)")
    for i, record in enumerate(data):
        yield f"{path}[{i}]", record


def csv_records(path: Path, lines_: Iterable[str]) -> Iterator[tuple[str, dict]]:
    """A header row, then one record per row; a .tsv file is read tab-separated and unquoted (GLUE's files)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a whole document can be one field; the default is 128 KiB
    tsv = path.suffix.lower() == ".tsv"
    reader = csv.reader(lines_, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    try:
        header = next(reader, None)
        if not header:
            return
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise PtcliError(f"row has {len(row)} fields but the header has {len(header)}",
                                 where=f"{path}:{reader.line_num}",
                                 fix="check the separators on that line (a .tsv file is read tab-separated)")
            yield f"{path}:{reader.line_num}", dict(zip(header, row))
    except csv.Error as e:
        raise PtcliError(f"malformed CSV: {e}", where=f"{path}:{reader.line_num}",
                         fix="check the quoting on that line (a .tsv file is read tab-separated)") from None


def conll_records(path: Path, lines_, tokens_key: str = "tokens", tags_key: str = "tags") -> Iterator[tuple[str, dict]]:
    """CoNLL: one ``token ... TAG`` per line (first column = token, last = tag), blank line between sentences.
    ``-DOCSTART-`` lines are skipped."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 1
    for number, line in enumerate(lines_, 1):
        fields = line.split()
        if not fields:
            if tokens:
                yield f"{path}:{start}", {tokens_key: tokens, tags_key: tags}
            tokens, tags, start = [], [], number + 1
            continue
        if fields[0] == "-DOCSTART-":
            start = number + 1
            continue
        if len(fields) < 2:
            raise PtcliError(f"malformed CoNLL line {line.strip()!r}: expected `token TAG`", where=f"{path}:{number}",
                             fix="each line needs a token and a tag separated by whitespace, with a blank line "
                                 "between sentences")
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        yield f"{path}:{start}", {tokens_key: tokens, tags_key: tags}


def hf_records(name: str, config: str | None, split: str, data_files: list[str] | None = None,
               columns: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """A Hugging Face dataset split (a Hub name, a local dataset folder, or a file builder such as ``json`` with
    ``data_files``), streamed a thousand rows at a time; ``columns`` limits what is decoded."""
    import datasets  # lazily: importing it costs seconds

    kwargs: dict = {"split": split}
    if data_files is not None:
        kwargs = {"split": "train", "data_files": data_files}  # local files land in the builder's "train" split
    try:
        dataset = datasets.load_dataset(name, config, **kwargs)
    except Exception as e:  # Hub, network and builder errors share no base class narrower than this
        detail = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        raise PtcliError(f"cannot load the Hugging Face dataset '{name}': {type(e).__name__}: {detail}",
                         where=f"dataset.hf_name={name} hf_config={config} hf_split={kwargs['split']}",
                         fix=HF_FIX) from None
    if columns:
        missing = [c for c in columns if c not in (dataset.column_names or [])]
        if missing:
            raise missing_column(missing[0], "dataset.text_column", dict.fromkeys(dataset.column_names or []),
                                 f"dataset.hf_name={name}")
        dataset = dataset.select_columns(columns)
    index = 0
    for batch in dataset.iter(batch_size=1000):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys)):
            yield f"{name}[{kwargs['split']}][{index}]", dict(zip(keys, values))
            index += 1


def hf_split_names(name: str, config: str | None) -> list[str]:
    """The splits a Hugging Face dataset has ([] when that cannot be told, e.g. offline)."""
    try:
        import datasets

        return list(datasets.get_dataset_split_names(name, config))
    except Exception:
        return []


def missing_column(column: str, key: str, record: dict, where: str) -> PtcliError:
    """'column X is missing; the columns are: ...' with the closest one suggested."""
    available = [str(k) for k in record]
    close = difflib.get_close_matches(column, available, n=1)
    hint = f"did you mean {key}={close[0]}? Otherwise " if close else ""
    return PtcliError(f"column '{column}' ({key}) is missing; the columns are: {', '.join(available)}",
                      where=where, fix=f"{hint}set {key} to one of them")


def column(record: dict, name: str, key: str, where: str):
    """``record[name]`` or a clear error naming the columns that exist."""
    if name not in record:
        raise missing_column(name, key, record, where)
    return record[name]


def text_field(record: dict, name: str, key: str, where: str) -> str:
    """The text in ``record[name]`` ('' for null), or a clear error for a missing or non-text column."""
    value = column(record, name, key, where)
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):  # CoNLL tokens: one line of text
        return " ".join(value)
    if not isinstance(value, str):
        raise PtcliError(f"column '{name}' holds {_kind(value)}, not text", where=where,
                         fix=f"point {key} at a column of strings")
    return value


def file_stats(paths: list[Path]) -> list:
    """Each file's resolved path, size and modification time (a fingerprint: any edit changes size or mtime)."""
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value or [])


def read_by_suffix(paths: list[Path], options: dict, log, fmt: str | None = None) -> Iterator[tuple[str, dict]]:
    """Records of files in ``fmt``, or in the format their suffix tells (.txt text, .jsonl, .json, .csv/.tsv)."""
    for path in paths:
        yield from file_records(path, fmt or FORMATS.get(path.suffix.lower(), "text"), log=log, **options)


def json_dumps(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _kind(value) -> str:
    """'a number', 'a list', ... for a JSON value in a message."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return {list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")
