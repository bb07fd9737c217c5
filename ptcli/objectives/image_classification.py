"""Image classification (ViT and any ``AutoModelForImageClassification``): cross-entropy over a label per image.

Images are decoded and processed in DataLoader workers (collate); the image processor is saved with the model, so
``transformers.pipeline("image-classification", model=<run>/model)`` works without ptcli.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ptcli.data.records import column
from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, Evaluator, LossOutput, Metric, MetricEvaluator
from ptcli.objectives.labelled import LabelledObjective
from ptcli.objectives.labels import LabelMap, OneLabelEach
from ptcli.processing.images import image_processor_for, pixel_values, rgb

__all__ = ["ImageClassification", "rgb"]


@dataclass(eq=False)
class ImageClassification(OneLabelEach, LabelledObjective):
    """One label per image; accuracy, top-5 accuracy and macro-F1; label names become the model's id2label."""

    name = "image_classification"
    auto_class = "AutoModelForImageClassification"
    inference = "classify"
    unit = "images"
    metrics = (LOSS, Metric("accuracy"), Metric("top5"), Metric("f1_macro"), Metric("f1", shown=False),
               Metric("mcc", shown=False))

    crop_scale: Optional[float] = None  # training: a random resized crop of at least this share of the area
    flip: bool = False  # training: flip images left-right with probability 1/2

    def __post_init__(self):
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1:
            raise PtcliError(f"objective.crop_scale must be in (0, 1], got {self.crop_scale}",
                             fix="Use a share of the image's area, e.g. objective.crop_scale=0.35, or null (no crop)")
        self.labels: LabelMap | None = None

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        from ptcli.models.families import shape

        arch = (model_config or {}).get("model_type") or (cfg.get("model") or {}).get("arch")
        if arch and shape(arch) != "vision":
            return [f"objective image_classification needs a vision model, but model.arch is '{arch}'; use "
                    "model=vit-tiny or an image classifier's model.path"]
        return []

    @property
    def image_column(self) -> str:
        return getattr(self.data, "image_column", "image")

    @property
    def label_column(self) -> str:
        return self.data.label_column or "label"

    def load_processors(self, ctx: Context):
        from ptcli.processing.loading import Processors

        return Processors(image_processor=image_processor_for(ctx.cfg.model))

    def encode(self, records: list, wheres: list) -> list:
        out = []
        for record, where in zip(records, wheres):
            image = column(record, self.image_column, "dataset.image_column", where)
            label = self.labels.id_of(column(record, self.label_column, "dataset.label_column", where), where)
            out.append(None if image is None else {"image": image, "label": label, "where": where})
        return out

    def eval_collate(self, examples, generator=None) -> dict:
        return self.collate(examples, generator, augmented=False)

    def collate(self, examples, generator=None, augmented: bool = True) -> dict:
        import torch

        pixels = pixel_values(self.processors["image_processor"], examples, generator if augmented else None,
                              self.crop_scale, self.flip)
        return {"pixel_values": pixels, "labels": torch.tensor([e["label"] for e in examples])}

    def units(self, batch: dict) -> int:
        return int(batch["pixel_values"].shape[0])

    def logits(self, model, batch):
        """The model's class scores for a batch (float32)."""
        return model(pixel_values=batch["pixel_values"]).logits.float()

    def loss(self, model, batch) -> LossOutput:
        return _summed(self.logits(model, batch), batch["labels"])

    def evaluator(self) -> Evaluator:
        return ImageEvaluator(self)

    def flops_per_unit(self, model, ctx_len: int) -> float | None:
        """Per image: 6N·T + 12·L·H·T² for its T = patches + 1 tokens."""
        from ptcli.models.export import transformer_shape
        from ptcli.models.modules import export_model_of

        shape, config = transformer_shape(model), export_model_of(model).config
        if shape is None or not getattr(config, "patch_size", None):
            return None
        n, layers, hidden = shape
        tokens = (config.image_size // config.patch_size) ** 2 + 1
        return 6 * n * tokens + 12 * layers * hidden * tokens * tokens


class ImageEvaluator(MetricEvaluator):
    """Loss, accuracy, macro-F1 (and MCC) from the streamed confusion counts, and top-5 accuracy (of any objective
    with ``logits(model, batch)`` and ``labels``: audio classification shares it)."""

    def __init__(self, objective):
        from ptcli.metrics import ClassificationMetrics

        super().__init__(objective, ClassificationMetrics(len(objective.labels)))
        self.top5 = 0

    def update(self, model, batch) -> None:
        logits = self.objective.logits(model, batch)
        labels = batch["labels"]
        self.add_loss(_summed(logits, labels))
        k = min(5, logits.shape[-1])
        self.top5 += int((logits.topk(k, dim=-1).indices == labels[:, None]).any(-1).sum())
        self.metric.update(logits.argmax(-1).cpu().numpy(), labels.cpu().numpy())

    def state(self) -> dict:
        return super().state() | {"top5": self.top5}

    def merge(self, state: dict) -> None:
        super().merge(state)
        self.top5 += state["top5"]

    def compute(self) -> dict:
        return super().compute() | {"top5": self.top5 / max(self.count, 1)}


def _summed(logits, labels) -> LossOutput:
    import torch.nn.functional as F

    total = F.cross_entropy(logits, labels, reduction="sum")
    return LossOutput(total, labels.new_tensor(labels.numel(), dtype=total.dtype))
