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
from ptcli.data.sources.folders import ClassFolders, class_folders
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
@dataclass(eq=False)
class ImageFolder(ClassFolders):
    """Class folders of images: ``<path>/<class>/*.png`` (the splits as ``ClassFolders`` says). Images are opened
    (headers only) when listed, so a file that is no image is named before training starts; files without an image
    suffix are skipped and counted."""

    image_column: str = "image"
    bad_images: Literal["fail", "skip"] = "fail"  # an image file Pillow cannot read: an error, or skipped and counted

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

    def reading_options(self) -> dict:
        return {"bad_images": self.bad_images}


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


def unreadable(file: Path) -> str | None:
    """Why Pillow cannot open ``file`` (its header), or None when it can."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.size  # noqa: B018 - reading the header is the check
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return str(e).split("\n")[0] or type(e).__name__
    return None
