"""Masked-autoencoder pretraining (He et al. 2021, ``ViTMAEForPreTraining``): hide ``mask_ratio`` of each image's
patches, encode the visible rest, reconstruct the hidden patches with a light decoder; the loss is the mean squared
error on the (per-patch normalised) pixels of the masked patches only.

Masks come from the collate ``generator`` (``noise`` handed to the model), so a resumed run draws the same masks;
evaluation without one (``evaluate``) seeds each image's mask by where the image is. ``model/`` is a plain
``ViTMAEForPreTraining`` folder with its image processor; ``ptcli finetune objective=image_classification
model.path=<run>`` fine-tunes its encoder as a ViT classifier (``ptcli.models.convert``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ptcli.data.records import column
from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, LossOutput
from ptcli.objectives.labelled import LabelledObjective
from ptcli.processing.images import image_processor_for, pixel_values

ARCHS = ("vit", "vit_mae")  # families whose sizes make a ViTMAEConfig
EVAL_SEED = 20211111  # masks without a generator (evaluate): fixed per image


@dataclass(eq=False)
class MaskedAutoencoder(LabelledObjective):
    """Reconstruct the hidden ``mask_ratio`` of every image's patches from the visible rest. The decoder's sizes
    apply to a model built from config (a ``model.path`` checkpoint keeps its own decoder); the defaults are light,
    for tiny encoders: the paper's ViT-L decoder is ``decoder_layers=8 decoder_hidden=512 decoder_heads=16
    decoder_intermediate=2048``."""

    mask_ratio: float = 0.75
    norm_pix_loss: bool = True  # targets: each patch's pixels normalised by their mean and variance
    decoder_layers: int = 2
    decoder_hidden: int = 64
    decoder_heads: int = 4
    decoder_intermediate: int = 256
    crop_scale: Optional[float] = None  # a random resized crop of at least this share of the area (the paper: 0.2)
    flip: bool = False  # flip images left-right with probability 1/2 (the paper does)

    name = "mae"
    auto_class = "AutoModelForPreTraining"
    inference = None
    unit = "images"
    metrics = (LOSS,)

    def __post_init__(self):
        if isinstance(self.mask_ratio, bool) or not 0 < self.mask_ratio < 1:
            raise PtcliError(f"objective.mask_ratio must be in (0, 1), got {self.mask_ratio}",
                             fix="Use e.g. objective.mask_ratio=0.75 (the fraction of patches hidden)")
        sizes = {k: getattr(self, k) for k in ("decoder_layers", "decoder_hidden", "decoder_heads",
                                               "decoder_intermediate")}
        bad = [f"objective.{k}={v}" for k, v in sizes.items() if isinstance(v, bool) or v < 1]
        if bad:
            raise PtcliError(f"the decoder's sizes must be positive: {', '.join(bad)}",
                             fix="Use e.g. objective.decoder_layers=2 objective.decoder_hidden=64")
        if self.decoder_hidden % 4:
            raise PtcliError(f"objective.decoder_hidden ({self.decoder_hidden}) must be divisible by 4 (its 2-D "
                             "sin-cos position embeddings)", fix="Use e.g. objective.decoder_hidden=64")
        if self.decoder_hidden % self.decoder_heads:
            raise PtcliError(f"objective.decoder_hidden ({self.decoder_hidden}) must be divisible by "
                             f"objective.decoder_heads ({self.decoder_heads})",
                             fix="Use e.g. objective.decoder_hidden=64 objective.decoder_heads=4")
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1:
            raise PtcliError(f"objective.crop_scale must be in (0, 1], got {self.crop_scale}",
                             fix="Use a share of the image's area, e.g. objective.crop_scale=0.2, or null (no crop)")
        self.patch_size: int | None = None  # set from the model (build_model, restore): masks need the patch count

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        model = cfg.get("model") or {}
        if model_config is not None:
            found = model_config.get("model_type")
            if found != "vit_mae":
                return [f"objective mae needs a masked autoencoder (model_type vit_mae) at model.path, but the model "
                        f"there is a '{found}'; leave model.path unset to build one from model=vit-tiny's sizes"]
            sizes = model_config
        elif model.get("path"):
            return []  # a Hub name: known once loaded
        else:
            arch = model.get("arch")
            if arch not in ARCHS:
                return [f"objective mae needs a ViT (model.arch vit or vit_mae), but model.arch is '{arch}'; use "
                        "model=vit-tiny"]
            sizes = {"image_size": 224, "patch_size": 16, **(model.get("extra") or {})}
            if isinstance(model.get("hidden"), int) and model["hidden"] % 4:
                return [f"objective mae needs model.hidden divisible by 4 (2-D sin-cos position embeddings), got "
                        f"{model['hidden']}"]
        image, patch = sizes.get("image_size"), sizes.get("patch_size")
        if not (isinstance(image, int) and isinstance(patch, int)) or patch < 1:
            return []
        if image % patch:
            return [f"model.extra.image_size ({image}) must be divisible by model.extra.patch_size ({patch})"]
        ratio = (cfg.get("objective") or {}).get("mask_ratio")
        patches = (image // patch) ** 2
        if isinstance(ratio, float) and 0 < ratio < 1 and int(patches * (1 - ratio)) < 1:
            return [f"objective.mask_ratio={ratio} hides every one of the {patches} patches of an image; lower it "
                    "or use smaller patches (model.extra.patch_size)"]
        return []

    @property
    def image_column(self) -> str:
        return getattr(self.data, "image_column", "image")

    def load_processors(self, ctx: Context):
        # model.path's own processor, or a Pillow-backed one at model.extra.image_size: the same one is saved in
        # model/ and reused when the encoder is fine-tuned
        from ptcli.processing.loading import Processors

        return Processors(image_processor=image_processor_for(ctx.cfg.model))

    def check_processors(self, processors) -> None:
        if processors.get("image_processor") is None:
            raise PtcliError("objective mae needs an image processor, and the model has none",
                             fix="Save the model's image processor (preprocessor_config.json) in its folder")

    def prepare(self, ctx: Context, processors):
        prepared = super().prepare(ctx, processors)
        prepared.units_per_example = 1  # an image each: the loop counts a step's images without asking the others
        return prepared

    def encode(self, records: list, wheres: list) -> list:
        images = (column(r, self.image_column, "dataset.image_column", w) for r, w in zip(records, wheres))
        return [None if image is None else {"image": image, "where": w} for image, w in zip(images, wheres)]

    def decoder_config(self) -> dict:
        return {"decoder_num_hidden_layers": self.decoder_layers, "decoder_hidden_size": self.decoder_hidden,
                "decoder_num_attention_heads": self.decoder_heads,
                "decoder_intermediate_size": self.decoder_intermediate}

    def build_model(self, ctx: Context, processors):
        """``ViTMAEForPreTraining`` from the model section's sizes, or the one at ``model.path`` (continued
        pretraining); either way with this objective's mask ratio and loss."""
        import transformers

        from ptcli.models.build import build_model, hf_config_kwargs

        model_cfg, settings = ctx.cfg.model, {"mask_ratio": self.mask_ratio, "norm_pix_loss": self.norm_pix_loss}
        if model_cfg.path:
            model = build_model(model_cfg, self.auto_class, None, log=ctx.log, **settings)
            if not isinstance(model, transformers.ViTMAEForPreTraining):
                raise PtcliError(f"objective mae trains a ViTMAEForPreTraining, but model.path holds a "
                                 f"{type(model).__name__}", fix="Point model.path at a vit_mae model or run")
            ours = self.decoder_config()
            if any(getattr(model.config, k) != v for k, v in ours.items()):
                ctx.log("note: the decoder comes from the checkpoint (objective.decoder_* size new models only)")
        else:
            config = transformers.ViTMAEConfig(**hf_config_kwargs(model_cfg, None), **self.decoder_config(),
                                               **settings)
            model = transformers.ViTMAEForPreTraining(config)
            initialise(model)
        for key, value in settings.items():
            setattr(model.config, key, value)
        self.restore(model.config)
        return model

    def restore(self, model_config) -> None:
        """The patch size from the model (for masks), and this objective's masking and loss in its config."""
        self.patch_size = int(model_config.patch_size)
        model_config.mask_ratio, model_config.norm_pix_loss = self.mask_ratio, self.norm_pix_loss

    # ---- every step
    def eval_collate(self, examples, generator=None) -> dict:
        return self.collate(examples, generator, augmented=False)

    def collate(self, examples, generator=None, augmented: bool = True) -> dict:
        pixels = pixel_values(self.processors["image_processor"], examples, generator if augmented else None,
                              self.crop_scale, self.flip)
        if self.patch_size is None:
            raise RuntimeError("MaskedAutoencoder.collate before build_model or restore: the patch size is unknown")
        patches = (pixels.shape[2] // self.patch_size) * (pixels.shape[3] // self.patch_size)
        return {"pixel_values": pixels, "noise": mask_noise(examples, patches, generator)}

    def units(self, batch: dict) -> int:
        return int(batch["pixel_values"].shape[0])

    def loss(self, model, batch) -> LossOutput:
        out = model(pixel_values=batch["pixel_values"], noise=batch["noise"])
        return masked_patch_mse(out.logits, batch["pixel_values"], out.mask, self.norm_pix_loss)

    def flops_per_unit(self, model, ctx_len: int) -> float | None:
        """Per image, forward and backward (6 FLOPs per weight per token, 12·L·H·T² for attention): the patch
        projection on every patch, the encoder on the visible patches + [CLS], the decoder on all of them + [CLS]."""
        from ptcli.models.modules import export_model_of

        mae = export_model_of(model)
        config = mae.config
        if not isinstance(config.image_size, int) or not isinstance(config.patch_size, int):
            return None
        patches = (config.image_size // config.patch_size) ** 2
        visible = int(patches * (1 - config.mask_ratio)) + 1
        everything = patches + 1

        def count(module) -> int:
            return sum(p.numel() for p in module.parameters() if p.requires_grad)

        projection = count(mae.vit.embeddings.patch_embeddings)
        encoder = count(mae.vit) - projection
        embed = count(mae.decoder.decoder_embed)  # runs on the encoder's tokens
        decoder = count(mae.decoder) - embed
        return (6 * (projection * patches + encoder * visible + embed * visible + decoder * everything)
                + 12 * config.num_hidden_layers * config.hidden_size * visible ** 2
                + 12 * config.decoder_num_hidden_layers * config.decoder_hidden_size * everything ** 2)


def initialise(model) -> None:
    """What ``ViTMAEEmbeddings``/``ViTMAEDecoder.initialize_weights`` mean to do, which a model built from a config
    in transformers 5 misses (its ``_init_weights`` runs after them, or they return early): the fixed 2-D sin-cos
    position embeddings of the encoder and the decoder (left at zero, the model could not tell patches apart), the
    patch projection initialised like a linear layer (Xavier) and [CLS] and the mask token ~ N(0, 0.02)."""
    import math

    import torch
    from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

    with torch.no_grad():
        for positions in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
            side = math.isqrt(positions.shape[1] - 1)
            table = build_2d_sinusoidal_position_embedding(side, side, positions.shape[-1], cls_token=True)
            half = table.shape[-1] // 2  # transformers' layout of the original MAE weights: the two halves swapped
            positions.copy_(torch.cat([table[..., half:], table[..., :half]], dim=-1).unsqueeze(0))
        weight = model.vit.embeddings.patch_embeddings.projection.weight
        torch.nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        std = model.config.initializer_range
        torch.nn.init.normal_(model.vit.embeddings.cls_token, std=std)
        torch.nn.init.normal_(model.decoder.mask_token, std=std)


def mask_noise(examples: list, patches: int, generator):
    """The noise whose argsort picks each image's visible patches (the lowest ``1 - mask_ratio``): drawn from the
    step's generator, or without one (evaluate) seeded per image by where it is, whatever the batch."""
    import zlib

    import torch

    from ptcli.data.loader import row_seed

    if generator is not None:
        return torch.rand(len(examples), patches, generator=generator)
    rows = []
    for i, example in enumerate(examples):
        seed = row_seed(EVAL_SEED, zlib.crc32(str(example.get("where", i)).encode()))
        rows.append(torch.rand(patches, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(rows)


def patchify(pixels, patch: int):
    """(B, C, H, W) -> (B, patches, patch² · C), patches row by row, each patch's pixels row by row with their
    channels innermost (the layout of ``ViTMAEForPreTraining.patchify`` and of its decoder's predictions)."""
    b, c, h, w = pixels.shape
    grid = pixels.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return grid.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def masked_patch_mse(predictions, pixels, mask, norm_pix_loss: bool) -> LossOutput:
    """The summed per-patch mean squared error over the masked patches (``mask`` 1), and how many there are: its
    ratio is ``ViTMAEForPreTraining``'s loss. ``norm_pix_loss``: each target patch normalised by its own mean and
    (unbiased) variance, + 1e-6."""
    channels = pixels.shape[1]
    patch = round((predictions.shape[-1] // channels) ** 0.5)
    target = patchify(pixels.float(), patch)
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((predictions.float() - target) ** 2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return LossOutput((per_patch * mask).sum(), mask.sum())
