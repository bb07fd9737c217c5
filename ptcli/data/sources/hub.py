"""Hugging Face datasets: a Hub name (online), a local dataset folder or cached name, or a file builder (``json``,
``csv``, ``text``, ``parquet``) over ``dataset.files``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

from ptcli.data import records
from ptcli.data.sources.base import Log, Source

FILE_BUILDERS = {"json": (".json", ".jsonl"), "csv": (".csv",), "text": (".txt",), "parquet": (".parquet",)}


@dataclass(eq=False)
class HFDataset(Source):
    """One split rule: training is ``hf_split``; validation is ``dataset.val_files`` if set, else the dataset's
    ``hf_val_split`` when it has one, else ``val_fraction`` held out of training."""

    hf_name: str = "???"  # a Hub name, a local dataset folder, or a builder: json, csv, text, parquet
    hf_config: Optional[str] = None
    hf_split: str = "train"
    hf_val_split: Optional[str] = "validation"  # used when the dataset has it; null: never
    files: list[str] = field(default_factory=list)  # the data files of a builder (hf_name=json ...)
    image_column: str = "image"  # image objectives: the column with an Image feature (decoded to PIL) or a path

    def __post_init__(self) -> None:
        super().__post_init__()
        self.files = records.as_list(self.files)

    @property
    def builder(self) -> bool:
        return self.hf_name in FILE_BUILDERS

    def data_files(self, patterns, key: str) -> list[str]:
        return [str(p) for p in records.resolve_files(patterns, key, FILE_BUILDERS[self.hf_name])]

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        files = self.data_files(self.files, "dataset.files") if self.builder else None
        yield from records.hf_records(self.hf_name, self.hf_config, self.hf_split, files)

    def records(self, split: str = "train", log: Log = print) -> Iterator[tuple[str, dict]]:
        if split == "val" and self.builder and self.val_files:
            yield from records.hf_records(self.hf_name, self.hf_config, "train",
                                          self.data_files(self.val_files, "dataset.val_files"))
        elif split == "val" and not self.val_files:
            yield from records.hf_records(self.hf_name, self.hf_config, self.hf_val_split)
        else:
            yield from super().records(split, log)

    def has_split(self, split: str) -> bool:
        if split == "train" or self.val_files:
            return True
        if self.builder or not self.hf_val_split:
            return False
        return self.hf_val_split in records.hf_split_names(self.hf_name, self.hf_config)

    def train_fingerprint(self) -> dict:
        if self.builder:
            return {"hf": self.hf_name, "files": records.file_stats(records.resolve_files(
                self.files, "dataset.files", FILE_BUILDERS[self.hf_name]))}
        return {"hf": [self.hf_name, self.hf_config, self.hf_split]}

    def train_description(self) -> str:
        return f"hf:{self.hf_name}"

    def own_problems(self, check_files: bool) -> list[str]:
        if self.hf_name in ("???", "", None):
            return ["missing required value 'dataset.hf_name' (set it: dataset.hf_name=...)"]
        if self.builder and not self.files:
            return [f"dataset.hf_name={self.hf_name} reads local files: set dataset.files=[path, ...]"]
        return []
