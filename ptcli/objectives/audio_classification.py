"""Audio classification (wav2vec2 and any ``AutoModelForAudioClassification``): cross-entropy over a label per clip.

WAV files are read, mixed down to mono, resampled to the feature extractor's rate and cropped to
``objective.max_seconds`` in DataLoader workers (collate); training clips may be delayed, noised and masked from the
step's generator, validation clips never. The feature extractor is saved with the model, so
``transformers.pipeline("audio-classification", model=<run>/model)`` works without ptcli.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ptcli.data.records import column
from ptcli.data.wav import seconds
from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, Evaluator, LossOutput, Metric
from ptcli.objectives.image_classification import ImageEvaluator, _summed
from ptcli.objectives.labelled import LabelledObjective
from ptcli.objectives.labels import LabelMap, OneLabelEach
from ptcli.processing.audio import DEFAULT_RATE

__all__ = ["AudioClassification"]


@dataclass(eq=False)
class AudioClassification(OneLabelEach, LabelledObjective):
    """One label per clip; accuracy, top-5 accuracy and macro-F1; label names become the model's id2label."""

    name = "audio_classification"
    auto_class = "AutoModelForAudioClassification"
    inference = "classify"
    unit = "seconds"
    metrics = (LOSS, Metric("accuracy"), Metric("top5"), Metric("f1_macro"), Metric("f1", shown=False),
               Metric("mcc", shown=False))

    max_seconds: float = 2.0  # longer clips are cropped: a random window in training, their start at validation
    sampling_rate: int = DEFAULT_RATE  # a model built from config; model.path's feature extractor keeps its own
    shift_seconds: float = 0.0  # training: delay each clip by up to this much (leading zeros; within max_seconds)
    noise_snr: Optional[float] = None  # training: add Gaussian noise this many dB below the clip's power
    time_masks: int = 0  # training: spans set to zero per clip (SpecAugment-style time masking on the waveform)
    mask_seconds: float = 0.05  # the longest of those spans

    def __post_init__(self):
        for key in ("max_seconds", "mask_seconds"):
            if not getattr(self, key) > 0:
                raise PtcliError(f"objective.{key} must be positive, got {getattr(self, key)}",
                                 fix=f"e.g. objective.{key}={1.0 if key == 'max_seconds' else 0.05}")
        if self.shift_seconds < 0 or self.time_masks < 0:
            raise PtcliError("objective.shift_seconds and objective.time_masks must not be negative",
                             fix="use 0 to switch them off")
        if self.sampling_rate < 1000:
            raise PtcliError(f"objective.sampling_rate must be a rate in Hz (e.g. 16000), got {self.sampling_rate}",
                             fix="objective.sampling_rate=16000")
        self.labels: LabelMap | None = None

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        from ptcli.models.families import shape

        model = cfg.get("model") or {}
        arch = (model_config or {}).get("model_type") or model.get("arch")
        if arch and shape(arch) != "audio":
            where = "the model at model.path is a" if model.get("path") else "model.arch is"
            return [f"objective audio_classification needs an audio model, but {where} '{arch}' "
                    f"({shape(arch)}); use model=wav2vec2-tiny or an audio classifier's model.path"]
        return []

    @property
    def audio_column(self) -> str:
        return getattr(self.data, "audio_column", "audio")

    @property
    def label_column(self) -> str:
        return self.data.label_column or "label"

    def load_processors(self, ctx: Context):
        from ptcli.processing.audio import feature_extractor_for
        from ptcli.processing.loading import Processors

        extractor = feature_extractor_for(ctx.cfg.model, self.sampling_rate)
        if ctx.cfg.model.path and extractor.sampling_rate != self.sampling_rate:
            ctx.log(f"audio at {extractor.sampling_rate} Hz, the rate of model.path's feature extractor "
                    f"(objective.sampling_rate={self.sampling_rate} applies to models built from config)")
        return Processors(feature_extractor=extractor)

    @property
    def rate(self) -> int:
        return int(self.processors["feature_extractor"].sampling_rate)

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

    def check_processors(self, processors) -> None:
        if "feature_extractor" not in processors:
            raise PtcliError("the model has no audio feature extractor (preprocessor_config.json)",
                             fix="Evaluate an audio classifier saved by ptcli, or save its feature extractor with it")

    def eval_collate(self, examples, generator=None) -> dict:
        return self.collate(examples, generator, augmented=False)

    def collate(self, examples, generator=None, augmented: bool = True) -> dict:
        import torch

        from ptcli.processing.audio import augment_audio, features, window

        rate, length = self.rate, int(round(self.max_seconds * self.rate))
        generator = generator if augmented else None
        clips = []
        for e in examples:
            clip = window(load_audio(e["audio"], rate, e.get("where", "")), length, generator)
            clips.append(augment_audio(clip, generator, rate, self.shift_seconds, self.noise_snr, self.time_masks,
                                       self.mask_seconds)[:length])
        batch = features(self.processors["feature_extractor"], clips, rate)
        batch["labels"] = torch.tensor([e["label"] for e in examples])
        batch["seconds"] = sum(len(c) for c in clips) / rate
        return batch

    def units(self, batch: dict) -> float:
        return float(batch["seconds"])

    def logits(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "seconds")}
        return model(**inputs).logits.float()

    def loss(self, model, batch) -> LossOutput:
        return _summed(self.logits(model, batch), batch["labels"])

    def evaluator(self) -> Evaluator:
        return ImageEvaluator(self)

    def flops_per_unit(self, model, ctx_len: int) -> float | None:
        """Per second of audio: the feature encoder's convolutions (2·k·c_in·c_out per output frame) and the
        transformer's 2N·T + 4·L·H·T² for its T frames a second (as the whole clip attends), tripled for the
        backward pass."""
        from ptcli.models.modules import export_model_of

        config = export_model_of(model).config
        dims, strides, kernels = (list(getattr(config, k, []) or []) for k in ("conv_dim", "conv_stride",
                                                                                "conv_kernel"))
        if not dims or len(dims) != len(strides) or len(dims) != len(kernels):
            return None
        rate, flops, channels = float(self.rate), 0.0, 1
        for dim, stride, kernel in zip(dims, strides, kernels):
            rate /= stride
            flops += 2 * kernel * channels * dim * rate
            channels = dim
        layers, hidden = config.num_hidden_layers, config.hidden_size
        per_layer = 2 * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)
        flops += layers * (per_layer * rate + 4 * hidden * rate * rate * self.max_seconds)
        return 3 * flops



def load_audio(audio, rate: int, where: str = ""):
    """Mono float32 samples at ``rate`` Hz from a WAV path or a ``{"array", "sampling_rate"}`` dict."""
    from ptcli.data.wav import decode
    from ptcli.processing.audio import at_rate

    return at_rate(*decode(audio, where), rate)
