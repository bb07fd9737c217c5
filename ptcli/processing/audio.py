"""Audio for feature extractors: samples (read by ``data.wav``) mixed down to mono, resampled to the model's rate
with ``scipy.signal.resample_poly``, cropped or padded, and augmented in DataLoader workers from the collate's
generator (a delay, noise at a signal-to-noise ratio, and SpecAugment-style time masks), so that a step's batch
is the same after a resume."""

from __future__ import annotations

from math import gcd

import numpy as np

DEFAULT_RATE = 16000  # wav2vec2, HuBERT and WavLM checkpoints all expect 16 kHz


def mono(samples: np.ndarray) -> np.ndarray:
    """The channels' mean (a mono mixdown) as float32 of shape (frames,)."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` from ``rate`` to ``target`` Hz by polyphase filtering (scipy's resample_poly, a Kaiser window)."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def at_rate(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 samples at ``target`` Hz (a mixdown, then resampling)."""
    return resample(mono(samples), rate, target)


def crop_or_pad(samples: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """Exactly ``length`` samples: a window from ``start`` of a longer clip, a shorter one padded with zeros."""
    if len(samples) >= length:
        return samples[start:start + length]
    return np.pad(samples, (0, length - len(samples)))


def window(samples: np.ndarray, length: int, generator=None) -> np.ndarray:
    """At most ``length`` samples: a random window of a longer clip (from ``generator``), its start without one."""
    if len(samples) <= length:
        return samples
    start = 0 if generator is None else _randint(generator, len(samples) - length + 1)
    return samples[start:start + length]


def augment_audio(samples: np.ndarray, generator, rate: int, shift_seconds: float = 0.0,
                  noise_snr: float | None = None, time_masks: int = 0, mask_seconds: float = 0.05) -> np.ndarray:
    """``samples`` delayed by up to ``shift_seconds`` (leading zeros: nothing of a tightly trimmed clip is cut), with
    Gaussian noise at ``noise_snr`` dB below the clip's power and ``time_masks`` spans of up to ``mask_seconds`` set
    to zero; all drawn from ``generator`` (a torch.Generator); unchanged when ``generator`` is None (validation)."""
    import torch

    if generator is None:
        return samples
    out = samples.astype(np.float32, copy=True)
    if shift_seconds > 0:
        out = np.concatenate([np.zeros(_randint(generator, int(shift_seconds * rate) + 1), np.float32), out])
    n = len(out)
    if noise_snr is not None and n:
        power = float(np.mean(samples.astype(np.float64) ** 2))
        noise = torch.randn(n, generator=generator).numpy()
        out = out + noise.astype(np.float32) * np.float32(np.sqrt(power / 10 ** (noise_snr / 10)))
    for _ in range(time_masks):
        width = _randint(generator, max(1, int(mask_seconds * rate)) + 1)
        if 0 < width < n:
            start = _randint(generator, n - width + 1)
            out[start:start + width] = 0.0
    return out


def _randint(generator, high: int) -> int:
    import torch

    return int(torch.randint(high, (1,), generator=generator))


def feature_extractor(rate: int = DEFAULT_RATE):
    """A wav2vec2 feature extractor at ``rate`` Hz: per-clip zero mean and unit variance, zeros as padding, and an
    attention mask (the models ptcli builds use layer-normalised convolutions, which take one)."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=rate, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


def feature_extractor_for(model_cfg, rate: int):
    """The feature extractor saved with ``model.path`` (a run directory or a model folder), or a new one at
    ``rate`` Hz for a model built from config."""
    from ptcli.processing.loading import load_feature_extractor

    if model_cfg.path:
        return load_feature_extractor(model_cfg.path)
    return feature_extractor(rate)


def features(extractor, clips: list, rate: int | None = None) -> dict:
    """A padded batch of model inputs (``input_values`` or, for Whisper, ``input_features``, and, when the extractor
    makes one, ``attention_mask``)."""
    rate = rate or extractor.sampling_rate
    # Whisper's log-mel extractor: its encoder takes exactly chunk_length seconds, so every clip is padded to that
    fixed = getattr(extractor, "nb_max_frames", None) is not None
    return dict(extractor(clips, sampling_rate=rate, padding="max_length" if fixed else True, return_tensors="pt",
                          return_attention_mask=getattr(extractor, "return_attention_mask", False)))
