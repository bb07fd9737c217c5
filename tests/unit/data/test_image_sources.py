"""Image data: class folders and caption listings as records, the checks pre-flight makes, unreadable files, and
seeded augmentation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from PIL import Image

from ptcli.data.sources.images import ImageCaptions, ImageFolder
from ptcli.errors import PtcliError
from ptcli.objectives.image_classification import ImageClassification
from ptcli.processing.images import augment, random_resized_crop, rgb


def image(path, size=(12, 10), mode="RGB", color=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = color if color is not None else (0 if mode == "L" else (200, 10, 10) if mode == "RGB" else (1, 2, 3, 4))
    Image.new(mode, size, color).save(path)
    return path


def folders(root, classes=("cat", "dog"), per_class=3, split="train"):
    for name in classes:
        for i in range(per_class):
            image(root / split / name / f"{i}.png")
    return root


def read(source, split="train"):
    lines = []
    rows = list(source.records(split, lines.append))
    return rows, lines


def test_class_folders_are_labels_and_train_validation_are_the_splits(tmp_path):
    folders(tmp_path)
    folders(tmp_path, classes=("cat",), per_class=2, split="validation")  # a class missing in validation is fine
    source = ImageFolder(path=str(tmp_path))
    rows, _ = read(source)
    assert [r["label"] for _, r in rows] == ["cat"] * 3 + ["dog"] * 3
    assert all(r["image"].endswith(".png") and where == r["image"] for where, r in rows)
    assert source.has_split("val") and len(read(source, "val")[0]) == 2
    assert source.problems() == []


def test_a_folder_of_class_folders_without_train_has_no_split(tmp_path):
    for name in ("a", "b"):
        image(tmp_path / name / "x.png")
    source = ImageFolder(path=str(tmp_path))
    assert not source.has_split("val") and len(read(source)[0]) == 2
    assert ImageFolder(path=str(tmp_path), val_dir=str(tmp_path)).has_split("val")


def test_files_that_are_not_images_by_name_are_skipped_and_counted(tmp_path):
    folders(tmp_path, per_class=1)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("hello")
    (tmp_path / "train" / "empty").mkdir()
    rows, lines = read(ImageFolder(path=str(tmp_path)))
    assert len(rows) == 2
    assert any("skipped 1 file(s) without an image suffix" in line and "notes.txt" in line for line in lines)
    assert any("'" + str(tmp_path / "train" / "empty") + "' holds no images" in line for line in lines)


def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    folders(tmp_path, per_class=2)
    bad = tmp_path / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(PtcliError) as e:
        read(ImageFolder(path=str(tmp_path)))
    assert "broken.jpg" in e.value.message() and "dataset.bad_images=skip" in e.value.message()
    rows, lines = read(ImageFolder(path=str(tmp_path), bad_images="skip"))
    assert len(rows) == 4 and any("skipped 1 unreadable image file(s)" in line for line in lines)


def test_preflight_names_a_missing_folder_and_one_without_class_folders(tmp_path):
    assert "dataset.path" in ImageFolder().problems()[0]
    missing = ImageFolder(path=str(tmp_path / "nope")).problems()
    assert len(missing) == 1 and "is not a folder" in missing[0]
    (tmp_path / "flat").mkdir()
    image(tmp_path / "flat" / "x.png")
    flat = ImageFolder(path=str(tmp_path / "flat")).problems()
    assert len(flat) == 1 and "holds no class folders" in flat[0]


def test_the_fingerprint_changes_when_an_image_is_added(tmp_path):
    folders(tmp_path, per_class=1)
    before = ImageFolder(path=str(tmp_path)).fingerprint()
    image(tmp_path / "train" / "cat" / "new.png")
    assert ImageFolder(path=str(tmp_path)).fingerprint() != before


def test_caption_listings_resolve_image_paths_relative_to_the_listing(tmp_path):
    image(tmp_path / "imgs" / "a.png")
    listing = tmp_path / "caps.jsonl"
    listing.write_text(json.dumps({"image": "imgs/a.png", "caption": "a red square"}) + "\n")
    source = ImageCaptions(files=[str(listing)])
    (where, record), = read(source)[0]
    assert record["image"] == str(tmp_path / "imgs" / "a.png") and record["caption"] == "a red square"
    listing.write_text(json.dumps({"image": "imgs/missing.png", "caption": "x"}) + "\n")
    with pytest.raises(PtcliError) as e:
        read(source)
    assert "missing.png" in e.value.message() and f"{listing}:1" in e.value.message()


def test_grey_rgba_and_differently_sized_images_make_one_batch(tmp_path):
    import transformers

    paths = [image(tmp_path / "g.png", (5, 7), "L"), image(tmp_path / "a.png", (20, 9), "RGBA"),
             image(tmp_path / "c.png", (16, 16))]
    objective = ImageClassification()
    objective.processors = {"image_processor": transformers.ViTImageProcessor(size={"height": 8, "width": 8})}
    objective.labels = SimpleNamespace()
    batch = objective.collate([{"image": str(p), "label": i} for i, p in enumerate(paths)], None)
    assert tuple(batch["pixel_values"].shape) == (3, 3, 8, 8) and batch["labels"].tolist() == [0, 1, 2]


def test_an_unreadable_image_at_collation_names_the_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(PtcliError) as e:
        rgb(str(bad), where="train")
    assert "x.png" in e.value.message()


def test_augmentation_is_a_function_of_the_generator_and_off_in_validation():
    import numpy as np
    import torch

    picture = Image.fromarray(np.arange(32 * 24 * 3, dtype=np.uint8).reshape(24, 32, 3))

    def draw(seed):
        return np.asarray(augment(picture, torch.Generator().manual_seed(seed), crop_scale=0.3, flip=True))

    assert np.array_equal(draw(1), draw(1))
    assert any(draw(1).shape != draw(s).shape or not np.array_equal(draw(1), draw(s)) for s in range(2, 6))
    assert augment(picture, None, crop_scale=0.3, flip=True) is picture
    for seed in range(50):
        crop = random_resized_crop(picture, torch.Generator().manual_seed(seed), 0.3)
        w, h = crop.size
        assert 0 < w <= 32 and 0 < h <= 24 and w * h >= 0.3 * 32 * 24 * 0.8  # rounding of the sides


def test_crop_scale_out_of_range_is_refused():
    with pytest.raises(PtcliError, match="crop_scale"):
        ImageClassification(crop_scale=1.5)


def test_validation_batches_are_never_augmented(tmp_path):
    import numpy as np
    import torch
    import transformers

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(((np.arange(16 * 12 * 3) * (i + 3)) % 251).astype(np.uint8).reshape(12, 16, 3)).save(paths[-1])
    examples = [{"image": str(p), "label": 0} for p in paths]
    objective = ImageClassification(crop_scale=0.2, flip=True)
    objective.processors = {"image_processor": transformers.ViTImageProcessor(size={"height": 8, "width": 8})}
    plain = objective.collate(examples, None)["pixel_values"]
    validation = objective.eval_collate(examples, torch.Generator().manual_seed(3))["pixel_values"]
    training = objective.collate(examples, torch.Generator().manual_seed(3))["pixel_values"]
    assert torch.equal(plain, validation) and not torch.equal(plain, training)
