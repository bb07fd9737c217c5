"""Audio classification (wav2vec2 and any ``AutoModelForAudioClassification``): cross-entropy over a label per clip.

WAV files are read, mixed down to mono, resampled to the feature extractor's rate and cropped to
``objective.max_seconds`` in DataLoader workers (collate; ``objectives.audio``); training clips may be delayed,
noised and masked from the step's generator, validation clips never. The feature extractor is saved with the model,
so ``transformers.pipeline("audio-classification", model=<run>/model)`` works without ptcli.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.data.records import column
from ptcli.data.wav import seconds
from ptcli.objectives.audio import AudioObjective
from ptcli.objectives.base import LOSS, Context, Evaluator, LossOutput, Metric
from ptcli.objectives.image_classification import ImageEvaluator, _summed
from ptcli.objectives.labels import LabelMap, OneLabelEach

__all__ = ["AudioClassification"]


@dataclass(eq=False)
class AudioClassification(OneLabelEach, AudioObjective):
    """One label per clip; accuracy, top-5 accuracy and macro-F1; label names become the model's id2label. Clips
    longer than ``objective.max_seconds`` are cropped: a random window in training, their start at validation."""

    name = "audio_classification"
    auto_class = "AutoModelForAudioClassification"
    inference = "classify"
    metrics = (LOSS, Metric("accuracy"), Metric("top5"), Metric("f1_macro"), Metric("f1", shown=False),
               Metric("mcc", shown=False))
    model_hint = "an audio classifier's model.path"

    def __post_init__(self):
        super().__post_init__()
        self.labels: LabelMap | None = None

    @property
    def label_column(self) -> str:
        return self.data.label_column or "label"

    def encode(self, records: list, wheres: list) -> list:
        out = []
        for record, where in zip(records, wheres):
            audio = column(record, self.audio_column, "dataset.audio_column", where)
            label = self.labels.id_of(column(record, self.label_column, "dataset.label_column", where), where)
            out.append(None if audio is None else {"audio": audio, "label": label, "where": where,
                                                   "seconds": seconds(audio)})
        return out

    def prepare(self, ctx: Context, processors):
        prepared = super().prepare(ctx, processors)
        for name, examples in (("training", prepared.train), ("validation", prepared.val)):
            long = sum(1 for e in examples if e["seconds"] > self.max_seconds)
            if long:
                how = "a random window each step" if name == "training" else "their start"
                ctx.log(f"note: {long} of {len(examples)} {name} clips are longer than objective.max_seconds="
                        f"{self.max_seconds:g} and are cropped to {self.max_seconds:g} s ({how})")
        return prepared

    def collate(self, examples, generator=None, augmented: bool = True) -> dict:
        import torch

        from ptcli.processing.audio import features

        clips = self.clips(examples, generator if augmented else None, crop=True)
        batch = features(self.processors["feature_extractor"], clips, self.rate)
        batch["labels"] = torch.tensor([e["label"] for e in examples])
        batch["seconds"] = sum(len(c) for c in clips) / self.rate
        return batch

    def logits(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "seconds")}
        return model(**inputs).logits.float()

    def loss(self, model, batch) -> LossOutput:
        return _summed(self.logits(model, batch), batch["labels"])

    def evaluator(self) -> Evaluator:
        return ImageEvaluator(self)
