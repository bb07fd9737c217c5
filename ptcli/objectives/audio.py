"""What the speech objectives share (audio classification, CTC recognition): WAV files or arrays read, mixed down
to mono and resampled to the feature extractor's rate in DataLoader workers (collate), training clips delayed,
noised and masked from the step's generator (validation clips never), the feature extractor saved with the model,
and throughput counted in seconds of audio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ptcli.errors import PtcliError
from ptcli.objectives.base import Context
from ptcli.objectives.labelled import LabelledObjective
from ptcli.processing.audio import DEFAULT_RATE


def load_audio(audio, rate: int, where: str = ""):
    """Mono float32 samples at ``rate`` Hz from a WAV path or a ``{"array", "sampling_rate"}`` dict."""
    from ptcli.data.wav import decode
    from ptcli.processing.audio import at_rate

    return at_rate(*decode(audio, where), rate)


@dataclass(eq=False)
class AudioObjective(LabelledObjective):
    """A ``LabelledObjective`` over audio clips (the records' ``dataset.audio_column``)."""

    abstract = True
    unit = "seconds"

    max_seconds: float = 2.0  # the longest clip the objective takes (what happens to longer ones: see the subclass)
    sampling_rate: int = DEFAULT_RATE  # a model built from config; model.path's feature extractor keeps its own
    shift_seconds: float = 0.0  # training: delay each clip by up to this much (leading zeros)
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

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        from ptcli.models.families import shape

        model = cfg.get("model") or {}
        arch = (model_config or {}).get("model_type") or model.get("arch")
        if arch and shape(arch) != "audio":
            where = "the model at model.path is a" if model.get("path") else "model.arch is"
            return [f"objective {cls.name} needs an audio model, but {where} '{arch}' "
                    f"({shape(arch)}); use model=wav2vec2-tiny or {cls.model_hint}"]
        return []

    model_hint = "an audio model's model.path"

    @property
    def audio_column(self) -> str:
        return getattr(self.data, "audio_column", "audio")

    def feature_extractor(self, ctx: Context):
        from ptcli.processing.audio import feature_extractor_for

        extractor = feature_extractor_for(ctx.cfg.model, self.sampling_rate)
        if ctx.cfg.model.path and extractor.sampling_rate != self.sampling_rate:
            ctx.log(f"audio at {extractor.sampling_rate} Hz, the rate of model.path's feature extractor "
                    f"(objective.sampling_rate={self.sampling_rate} applies to models built from config)")
        return extractor

    def load_processors(self, ctx: Context):
        from ptcli.processing.loading import Processors

        return Processors(feature_extractor=self.feature_extractor(ctx))

    @property
    def rate(self) -> int:
        return int(self.processors["feature_extractor"].sampling_rate)

    def check_processors(self, processors) -> None:
        if "feature_extractor" not in processors:
            raise PtcliError("the model has no audio feature extractor (preprocessor_config.json)",
                             fix=f"Evaluate a {self.name} model saved by ptcli, or save its feature extractor with it")

    def eval_collate(self, examples, generator=None) -> dict:
        return self.collate(examples, generator, augmented=False)

    def clips(self, examples, generator, crop: bool) -> list:
        """The examples' samples at the model's rate, augmented from ``generator`` (None: as they are); ``crop``:
        at most ``max_seconds``, a random window of a longer clip in training and its start otherwise."""
        from ptcli.processing.audio import augment_audio, window

        rate, length = self.rate, int(round(self.max_seconds * self.rate))
        out = []
        for e in examples:
            clip = load_audio(e["audio"], rate, e.get("where", ""))
            if crop:
                clip = window(clip, length, generator)
            clip = augment_audio(clip, generator, rate, self.shift_seconds, self.noise_snr, self.time_masks,
                                 self.mask_seconds)
            out.append(clip[:length] if crop else clip)
        return out

    def units(self, batch: dict) -> float:
        return float(batch["seconds"])

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
