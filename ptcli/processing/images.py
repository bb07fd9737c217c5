"""Images for processors: opened as RGB (a path or a PIL image; grey and RGBA converted) and augmented with Pillow
in DataLoader workers (torchvision is not needed): a random resized crop and a horizontal flip, drawn from the
collate's generator so that a step's batch is the same after a resume."""

from __future__ import annotations

import math

from ptcli.errors import PtcliError


def rgb(image, where: str = ""):
    """An image as RGB: grey and RGBA images are converted; a path is opened (a file that is no image is an error
    naming it)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(image, Image.Image):
        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise PtcliError(f"cannot read the image '{image}': {e}", where=where,
                             fix="Remove or replace the file (it is not an image Pillow can read)") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def random_resized_crop(image, generator, min_scale: float, ratio=(3 / 4, 4 / 3)):
    """A crop covering U(min_scale, 1) of the area with an aspect ratio log-uniform in ``ratio`` (the Inception
    crop, as torchvision's RandomResizedCrop draws it: ten tries, then the largest centred crop that fits);
    the processor resizes it to the model's size."""
    import torch

    width, height = image.size
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (min_scale + (1 - min_scale) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(u[2] * (width - w + 1)), int(u[3] * (height - h + 1))
            return image.crop((left, top, left + w, top + h))
    side = min(width, height)  # fallback: a centred square
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def augment(image, generator, crop_scale: float | None = None, flip: bool = False):
    """``image`` cropped (when ``crop_scale`` is set) and flipped left-right with probability 1/2 (when ``flip``);
    unchanged when ``generator`` is None (validation)."""
    import torch
    from PIL import Image

    if generator is None:
        return image
    if crop_scale is not None:
        image = random_resized_crop(image, generator, crop_scale)
    if flip and float(torch.rand(1, generator=generator)) < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def pixel_values(processor, examples: list, generator, crop_scale: float | None = None, flip: bool = False):
    """The batch's images (``example["image"]``: a path or a PIL image) opened as RGB, augmented from ``generator``
    (none when it is None) and processed into one ``pixel_values`` tensor."""
    images = [augment(rgb(e["image"], e.get("where", "")), generator, crop_scale, flip) for e in examples]
    return processor(images, return_tensors="pt")["pixel_values"]


def vit_image_processor(size: int):
    """A ViT image processor for ``size`` x ``size`` images, normalised to [-1, 1], backed by Pillow (transformers
    processes images with torchvision when it is there and with Pillow otherwise; ask for Pillow by name)."""
    import transformers

    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    return cls(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def image_processor_for(model_cfg):
    """The image processor of ``model.path`` (a run directory or a model folder), or a new one at
    ``model.extra.image_size`` (224 when unset) for a model built from config."""
    from ptcli.processing.loading import load_image_processor

    if model_cfg.path:
        return load_image_processor(model_cfg.path)
    return vit_image_processor(int((model_cfg.extra or {}).get("image_size", 224)))
