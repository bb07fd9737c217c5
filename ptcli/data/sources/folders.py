"""What image and audio class folders share: ``<path>/<class>/<file>`` (the folder name is the label), the splits
(``train/`` and ``validation/``, ``val_dir``, or a seeded ``val_fraction``), cheap fingerprints and pre-flight checks.
A subclass says how one folder's files become records (``folder_records``) and what its files look like."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ptcli.data import records
from ptcli.data.sources.base import Log, Source
from ptcli.errors import PtcliError

VAL_FOLDERS = ("validation", "val", "valid")


@dataclass(eq=False)
class ClassFolders(Source):
    """Class folders. When ``path`` holds ``train/``, that is the training data and ``validation/`` (or ``val/``,
    ``valid/``) the validation data; else ``val_dir``, else ``val_fraction`` held out with a fixed seed."""

    abstract = True
    path: str = "???"  # the folder of class folders, or of train/ (and validation/)
    val_dir: Optional[str] = None  # validation class folders (default: <path>/validation when it exists)
    val_fraction: float = 0.1
    label_column: str = "label"
    example = "*.png"  # what a class folder holds, for messages

    def train_dir(self) -> Path:
        root = Path(self.path).expanduser()
        return root / "train" if (root / "train").is_dir() else root

    def validation_dir(self) -> Path | None:
        if self.val_dir:
            return Path(self.val_dir).expanduser()
        root = Path(self.path).expanduser()
        if (root / "train").is_dir():
            return next((root / n for n in VAL_FOLDERS if (root / n).is_dir()), None)
        return None

    def has_split(self, split: str) -> bool:
        return split == "train" or self.validation_dir() is not None

    def records(self, split: str = "train", log: Log = print) -> Iterator[tuple[str, dict]]:
        if split == "val":
            folder = self.validation_dir()
            if folder is None:
                raise PtcliError(f"'{self.path}' has no validation folder", fix="Set dataset.val_dir=<folder>")
            yield from self.folder_records(folder, log, "dataset.val_dir")
        else:
            yield from self.train_records(log)

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        yield from self.folder_records(self.train_dir(), log, "dataset.path")

    def folder_records(self, folder: Path, log: Log, key: str) -> Iterator[tuple[str, dict]]:
        raise NotImplementedError

    def reading_options(self) -> dict:
        """Settings that change which files are read (they enter the fingerprint)."""
        return {}

    def fingerprint(self, split: str = "train") -> str:
        folder = self.validation_dir() if split == "val" else self.train_dir()
        return records.json_dumps({"source": type(self).__name__, "folder": str(folder),
                                   "stats": folder_stats(folder), **self.reading_options()})

    def train_fingerprint(self) -> dict:
        return {"folder": str(self.train_dir()), "stats": folder_stats(self.train_dir())}

    def describe(self, split: str = "train") -> str:
        return str(self.validation_dir() if split == "val" else self.train_dir())

    def train_description(self) -> str:
        return str(self.train_dir())

    def own_problems(self, check_files: bool) -> list[str]:
        if self.path in ("???", "", None):
            return ["missing required value 'dataset.path' (set it: dataset.path=<folder of class folders>)"]
        if not check_files:
            return []
        for key, folder in (("dataset.path", Path(self.path).expanduser()),
                            ("dataset.val_dir", Path(self.val_dir).expanduser() if self.val_dir else None)):
            if folder is not None and not folder.is_dir():
                return [f"{key}: '{folder}' is not a folder (give a folder of class folders: "
                        f"<folder>/<class>/{self.example})"]
        for key, folder in (("dataset.path", self.train_dir()), ("dataset.val_dir", self.validation_dir())):
            if folder is not None and not [p for p in folder.iterdir() if p.is_dir()]:
                return [f"{key}: '{folder}' holds no class folders (<folder>/<class>/{self.example}; the folder "
                        "name is the label)"]
        return []


def class_folders(folder: Path, key: str) -> list[str]:
    if not folder.is_dir():
        raise PtcliError(f"'{folder}' is not a folder", where=key, fix="Give a folder of class folders")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise PtcliError(f"'{folder}' holds no class folders", where=key,
                         fix="Put the files in <folder>/<class>/ (the folder name is the label)")
    return names


def folder_stats(folder: Path | None) -> list:
    """File count, total size and newest change of a folder tree: a cheap cache key."""
    if folder is None or not folder.is_dir():
        return []
    files = [p.stat() for p in folder.rglob("*") if p.is_file()]
    return [len(files), sum(s.st_size for s in files), max((s.st_mtime_ns for s in files), default=0)]
