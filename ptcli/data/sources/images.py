"""Images: scikit-learn's bundled 8x8 handwritten digits (no files needed), as records of a PIL image and a label."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ptcli.data.sources.base import Log, Source
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
