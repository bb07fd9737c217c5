"""Local files: plain text, JSON Lines (or JSON arrays), CSV/TSV and CoNLL, given as paths, globs or folders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ptcli.data import records
from ptcli.data.sources.base import Log, Source
from ptcli.errors import PtcliError


@dataclass(eq=False)
class FileSource(Source):
    """Files given as paths, globs or folders (read recursively), in the order given."""

    abstract = True
    files: list[str] = field(default_factory=list)  # paths, globs or folders
    format = ""  # how the training files are read (records.FORMATS values)
    suffixes = tuple(records.FORMATS)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.files = records.as_list(self.files)

    def paths(self) -> list[Path]:
        found = records.resolve_files(self.files, "dataset.files", self.suffixes)
        if not found:
            raise PtcliError("dataset.files lists no files", fix="set dataset.files=[path, ...]")
        return found

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        for path in self.paths():
            fmt = self.format or records.FORMATS.get(path.suffix.lower(), "text")
            yield from records.file_records(path, fmt, log=log, **self.read_options())

    def val_format(self) -> str | None:
        return self.format or None

    def train_fingerprint(self) -> dict:
        return {"files": records.file_stats(self.paths()), "options": self.read_options()}

    def train_description(self) -> str:
        shown = self.files[:5]
        return ", ".join(map(str, shown)) + (f" and {len(self.files) - 5} more" if len(self.files) > 5 else "")

    def own_problems(self, check_files: bool) -> list[str]:
        if not self.files:
            return ["dataset.files lists no files (set dataset.files=[path, ...])"]
        problems = []
        if check_files:
            joined = comma_names(self.files)
            if joined:
                return [f"dataset.files: the file '{joined}' has a comma in its name, which splits a list in Hydra's "
                        f"grammar; quote it: \"dataset.files=['{joined}']\""]
            for pattern in self.files:
                try:
                    records.expand(str(pattern), "dataset.files", self.suffixes)
                except PtcliError as e:
                    problems.append(e.message().removeprefix("ptcli: error: "))
        return problems


def comma_names(patterns: list) -> str | None:
    """A file that exists when neighbouring list items are joined with commas (the list split its name), else None."""
    import os

    items = [str(p) for p in patterns]
    for start in range(len(items)):
        for end in range(start + 2, len(items) + 1):
            name = ",".join(items[start:end])
            if not os.path.exists(items[start]) and os.path.exists(os.path.expanduser(name)):
                return name
    return None


@dataclass(eq=False)
class TextFiles(FileSource):
    """Plain UTF-8 text; one document per file, line or paragraph."""

    document: Literal["file", "line", "paragraph"] = "file"
    format = "text"
    suffixes = (".txt",)
    exact = False  # evaluation sets it: a whole-file document keeps its final newline (every byte given counts)

    def read_options(self) -> dict:
        return super().read_options() | {"document": self.document} | ({"exact": True} if self.exact else {})


@dataclass(eq=False)
class JsonlFiles(FileSource):
    """JSON Lines (``.jsonl``, one object per line) or a JSON array of objects (``.json``)."""

    suffixes = (".jsonl", ".json")


@dataclass(eq=False)
class CsvFiles(FileSource):
    """CSV or TSV (by suffix) with a header row."""

    suffixes = (".csv", ".tsv")


@dataclass(eq=False)
class ConllFiles(FileSource):
    """CoNLL NER files: ``token ... TAG`` per line, a blank line between sentences."""

    text_column: str = "tokens"
    label_column: str = "tags"
    format = "conll"
    suffixes = (".txt", ".conll")

    def read_options(self) -> dict:
        return super().read_options() | {"tokens_column": self.text_column, "tags_column": self.label_column}
