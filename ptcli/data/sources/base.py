"""What every data source is: records for the training and validation splits, a fingerprint for caches, and its own
checks. A new source is a subclass in its own file plus a YAML in configs/dataset/ (see docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ptcli.data import records
from ptcli.errors import PtcliError

Log = Callable[[str], None]


@dataclass(eq=False)
class Source:
    """Settings every source has: how long the training sequences are, where validation comes from, and which
    fields of a record the objective reads."""

    ptcli_kind = "dataset"
    abstract = True

    seq_len: int = 128  # tokens per training sequence (a packed block, or the longest example)
    val_files: list[str] = field(default_factory=list)  # validation files (read by their suffix); else val_fraction
    val_fraction: float = 0.02  # held out of the training data when there is no validation split
    text_column: str = "text"  # the record field with the text (the tokens, for token classification)
    text_pair_column: Optional[str] = None  # a second text (sentence pairs)
    label_column: Optional[str] = None  # fine-tuning: the label, tag list (NER), target text or response
    empty_rows: Literal["skip", "fail"] = "skip"  # fine-tuning rows with empty text: skipped and counted
    encoding_errors: Literal["fail", "skip"] = "fail"  # invalid UTF-8 in a file: an error, or dropped with a warning

    def __post_init__(self) -> None:
        self.val_files = records.as_list(self.val_files)

    # ---- what objectives call
    def records(self, split: str = "train", log: Log = print) -> Iterator[tuple[str, dict]]:
        """``(where, record)`` pairs of ``split`` ('train' or 'val')."""
        if split == "val":
            yield from records.read_by_suffix(self.val_paths(), self.read_options(), log, self.val_format())
        else:
            yield from self.train_records(log)

    def val_format(self) -> str | None:
        """How validation files are read: by their suffix, unless the source reads one format only."""
        return None

    def has_split(self, split: str) -> bool:
        """True when the source has its own validation data (else objectives hold out ``val_fraction``)."""
        return split == "train" or bool(self.val_files)

    def fingerprint(self, split: str = "train") -> str:
        """A stable string naming the inputs of ``split``, for cache keys."""
        if split == "val":
            return records.json_dumps({"val": records.file_stats(self.val_paths()), "options": self.read_options()})
        return records.json_dumps({"source": type(self).__name__, **self.train_fingerprint()})

    def describe(self, split: str = "train") -> str:
        """Where ``split`` comes from, in words (for logs and errors)."""
        if split == "val":
            return ", ".join(self.val_files)
        return self.train_description()

    def problems(self, check_files: bool = True) -> list[str]:
        """Every problem pre-flight can see without reading contents (files missing, names unset), not raised."""
        problems = []
        if not 0 <= self.val_fraction < 1:
            problems.append(f"dataset.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.seq_len < 2:
            problems.append(f"dataset.seq_len must be at least 2 tokens, got {self.seq_len}")
        if check_files:
            for pattern in self.val_files:
                try:
                    records.expand(str(pattern), "dataset.val_files", tuple(records.FORMATS))
                except PtcliError as e:
                    problems.append(e.message().removeprefix("ptcli: error: "))
        return problems + self.own_problems(check_files)

    # ---- what each source says for itself
    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        raise NotImplementedError

    def train_fingerprint(self) -> dict:
        raise NotImplementedError

    def train_description(self) -> str:
        return type(self).__name__

    def own_problems(self, check_files: bool) -> list[str]:
        return []

    def read_options(self) -> dict:
        """How files are read (text column, document split, tag columns, decoding)."""
        return {"text_column": self.text_column, "encoding_errors": self.encoding_errors}

    def val_paths(self) -> list[Path]:
        found = records.resolve_files(self.val_files, "dataset.val_files")
        if not found:
            raise PtcliError("dataset.val_files lists no files", fix="set dataset.val_files=[path, ...]")
        return found
