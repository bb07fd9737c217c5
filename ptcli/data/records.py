"""Labelled records (dicts) for fine-tuning: CSV/TSV, JSONL or a JSON array, CoNLL files, or a HF dataset.

Each record comes with ``where`` (``file:line``) so that a bad value is reported at its place. Text decoding
(UTF-8, BOM, CRLF, ``encoding_errors``) is shared with the pretraining reader in ``sources.py``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ptcli.data.sources import HF_FIX, KEYS, _decoded, _lines, _list, resolve_files
from ptcli.errors import PtcliError

RECORD_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt", ".conll")


def read_records(cfg, split: str = "train", log: Callable[[str], None] = print) -> Iterator[tuple[str, dict]]:
    """Stream ``(where, record)`` pairs of ``split`` (train: dataset.files, val: dataset.val_files)."""
    if cfg.source == "hf" and cfg.hf_name and not _list(cfg, KEYS[split][0]):
        yield from _hf_records(cfg, split)
        return
    name, key = KEYS[split]
    paths = resolve_files(_list(cfg, name), key, RECORD_SUFFIXES)
    if not paths:
        raise PtcliError(f"{key} lists no files", fix=f"set {key}=[path, ...]")
    for path in paths:
        yield from _file_records(path, cfg, log)


def _file_records(path: Path, cfg, log) -> Iterator[tuple[str, dict]]:
    suffix = path.suffix.lower()
    lines = _lines(_decoded(path, cfg, log))
    if cfg.source == "conll" or suffix == ".conll":
        yield from conll_records(path, lines, cfg.text_column or "tokens", cfg.label_column or "tags")
    elif suffix in (".csv", ".tsv"):
        yield from _csv_records(path, lines)
    elif suffix == ".json":
        yield from _json_array(path, "".join(lines))
    elif suffix == ".jsonl" or cfg.source == "jsonl":
        yield from jsonl_records(path, lines)
    else:
        raise PtcliError(f"cannot read labelled records from a {suffix or 'suffix-less'} file", where=str(path),
                         fix="use .csv/.tsv, .jsonl/.json, or dataset=conll for `token TAG` files")


def conll_records(path: Path, lines, tokens_key: str = "tokens", tags_key: str = "tags") -> Iterator[tuple[str, dict]]:
    """CoNLL: one ``token ... TAG`` per line (first column = token, last = tag), blank line between sentences.
    ``-DOCSTART-`` lines are skipped."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 1
    for number, line in enumerate(lines, 1):
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


def _csv_records(path: Path, lines) -> Iterator[tuple[str, dict]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(lines, delimiter="\t" if path.suffix.lower() == ".tsv" else ",",
                        quoting=csv.QUOTE_NONE if path.suffix.lower() == ".tsv" else csv.QUOTE_MINIMAL)
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
                         fix="check the quoting on that line") from None


def jsonl_records(path: Path, lines) -> Iterator[tuple[str, dict]]:
    """``(file:line, object)`` per non-blank line; invalid JSON or a non-object is an error at its line."""
    for number, line in enumerate(lines, 1):
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


def _json_array(path: Path, text: str) -> Iterator[tuple[str, dict]]:
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


def _hf_records(cfg, split: str) -> Iterator[tuple[str, dict]]:
    import datasets  # lazily: importing it costs seconds

    hf_split = cfg.hf_split or "train"
    if split == "val":
        hf_split = "validation"
    try:
        dataset = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=hf_split)
    except Exception as e:  # Hub, network and builder errors share no narrower base class
        detail = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        raise PtcliError(f"cannot load the Hugging Face dataset '{cfg.hf_name}': {type(e).__name__}: {detail}",
                         where=f"dataset.hf_name={cfg.hf_name} hf_split={hf_split}", fix=HF_FIX) from None
    for i, record in enumerate(dataset):
        yield f"{cfg.hf_name}[{hf_split}][{i}]", record


def missing_column(column: str, key: str, record: dict, where: str) -> PtcliError:
    """'column X is missing; the columns are: ...' with the closest one suggested."""
    import difflib

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
