"""Images: scikit-learn's bundled 8x8 handwritten digits (no files needed), class folders, and image-caption listings,
as records of an image (a PIL image or a file path) and a label or caption. Images are decoded in DataLoader
workers by the objective's collate, never here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ptcli.data import records
from ptcli.data.sources.base import Log, Source
from ptcli.data.sources.files import FileSource
from ptcli.errors import PtcliError


@dataclass(eq=False)
class Digits(Source):
    """The 1,797 grey 8x8 digits of ``sklearn.datasets.load_digits`` (UCI, CC BY 4.0), a fifth held out."""

    val_fraction: float = 0.2
    label_column: str = "label"
    image_column: str = "image"  # the record field that holds the image

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        import numpy as np
        from PIL import Image

        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise PtcliError("dataset=digits needs scikit-learn", fix="pip install scikit-learn") from None
        digits = load_digits()
        for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
            image = Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), mode="L")
            yield f"digits[{i}]", {self.image_column: image, self.label_column: int(target)}

    def train_fingerprint(self) -> dict:
        return {"digits": "sklearn.datasets.load_digits"}

    def train_description(self) -> str:
        return "scikit-learn's 8x8 digits"


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
VAL_FOLDERS = ("validation", "val", "valid")


@dataclass(eq=False)
class ImageFolder(Source):
    """Class folders: ``<path>/<class>/*.png`` (the folder name is the label). When ``path`` holds ``train/``, that is
    the training data and ``validation/`` (or ``val/``, ``valid/``) the validation data; else ``val_dir``, else
    ``val_fraction`` held out with a fixed seed. Images are opened (headers only) when listed, so a file that is no
    image is named before training starts; files without an image suffix are skipped and counted."""

    path: str = "???"  # the folder of class folders, or of train/ (and validation/)
    val_dir: Optional[str] = None  # validation class folders (default: <path>/validation when it exists)
    val_fraction: float = 0.1
    label_column: str = "label"
    image_column: str = "image"
    bad_images: Literal["fail", "skip"] = "fail"  # an image file Pillow cannot read: an error, or skipped and counted

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
                raise PtcliError(f"'{self.path}' has no validation folder", fix="set dataset.val_dir=<folder>")
            yield from self.folder_records(folder, log, "dataset.val_dir")
        else:
            yield from self.train_records(log)

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        yield from self.folder_records(self.train_dir(), log, "dataset.path")

    def folder_records(self, folder: Path, log: Log, key: str) -> Iterator[tuple[str, dict]]:
        classes = class_folders(folder, key)
        found, other, bad = 0, [], []
        for name in classes:
            images = 0
            for file in sorted(p for p in (folder / name).rglob("*") if p.is_file()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    other.append(file)
                    continue
                problem = unreadable(file)
                if problem:
                    if self.bad_images == "fail":
                        raise PtcliError(f"'{file}' is not an image Pillow can read ({problem})", where=key,
                                         fix="Remove or replace the file, or set dataset.bad_images=skip to skip "
                                             "and count such files")
                    bad.append(file)
                    continue
                images += 1
                yield str(file), {self.image_column: str(file), self.label_column: name}
            if not images:
                log(f"warning: class folder '{folder / name}' holds no images; that class is left out")
            found += images
        if other:
            log(f"skipped {len(other)} file(s) without an image suffix in {folder} (first: {other[0]})")
        if bad:
            log(f"warning: skipped {len(bad)} unreadable image file(s) in {folder} (dataset.bad_images=skip; "
                f"first: {bad[0]})")
        if not found:
            raise PtcliError(f"no images in the class folders of '{folder}'", where=key,
                             fix=f"put images ({', '.join(IMAGE_SUFFIXES[:3])}, ...) in <folder>/<class>/")

    def fingerprint(self, split: str = "train") -> str:
        folder = self.validation_dir() if split == "val" else self.train_dir()
        return records.json_dumps({"source": "ImageFolder", "folder": str(folder), "stats": folder_stats(folder),
                                   "bad_images": self.bad_images})

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
        problems = []
        for key, folder in (("dataset.path", Path(self.path).expanduser()),
                            ("dataset.val_dir", Path(self.val_dir).expanduser() if self.val_dir else None)):
            if folder is not None and not folder.is_dir():
                problems.append(f"{key}: '{folder}' is not a folder (give a folder of class folders: "
                                f"<folder>/<class>/*.png)")
        if not problems:
            for key, folder in (("dataset.path", self.train_dir()), ("dataset.val_dir", self.validation_dir())):
                if folder is not None and not [p for p in folder.iterdir() if p.is_dir()]:
                    problems.append(f"{key}: '{folder}' holds no class folders (<folder>/<class>/*.png; the folder "
                                    "name is the label)")
        return problems


@dataclass(eq=False)
class ImageCaptions(FileSource):
    """JSON Lines or CSV rows naming an image file (relative to the listing's folder) and its caption (and, if
    given, a label): for image-text objectives."""

    image_column: str = "image"
    caption_column: Optional[str] = "caption"
    label_column: Optional[str] = None
    suffixes = (".jsonl", ".json", ".csv", ".tsv")

    def records(self, split: str = "train", log: Log = print) -> Iterator[tuple[str, dict]]:
        for where, record in super().records(split, log):
            yield where, self.resolved(where, record) if split == "val" else record

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        for where, record in super().train_records(log):
            yield where, self.resolved(where, record)

    def resolved(self, where: str, record: dict) -> dict:
        """The record with its image path made absolute (relative paths are relative to the listing file)."""
        value = records.column(record, self.image_column, "dataset.image_column", where)
        if not isinstance(value, str) or not value.strip():
            raise PtcliError(f"the image column '{self.image_column}' holds {records._kind(value)}, not a file path",
                             where=where, fix="give every row an image path")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = Path(re.sub(r"(:\d+|\[\d+\])$", "", where)).parent / path
        if not path.is_file():
            raise PtcliError(f"the image '{value}' does not exist (looked for {path})", where=where,
                             fix="fix the path; relative paths are relative to the file that lists them")
        return {**record, self.image_column: str(path)}


def class_folders(folder: Path, key: str) -> list[str]:
    if not folder.is_dir():
        raise PtcliError(f"'{folder}' is not a folder", where=key, fix="give a folder of class folders")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise PtcliError(f"'{folder}' holds no class folders", where=key,
                         fix="put images in <folder>/<class>/ (the folder name is the label)")
    return names


def unreadable(file: Path) -> str | None:
    """Why Pillow cannot open ``file`` (its header), or None when it can."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.size  # noqa: B018 - reading the header is the check
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return str(e).split("\n")[0] or type(e).__name__
    return None


def folder_stats(folder: Path | None) -> list:
    """File count, total size and newest change of a folder tree: a cheap cache key."""
    if folder is None or not folder.is_dir():
        return []
    files = [p.stat() for p in folder.rglob("*") if p.is_file()]
    return [len(files), sum(s.st_size for s in files), max((s.st_mtime_ns for s in files), default=0)]
