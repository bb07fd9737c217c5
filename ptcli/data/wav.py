"""The WAV file format: the header (chunks walked, samples not read: a cheap check when files are listed) and the
samples as float32 in [-1, 1] (PCM 8/16/24/32-bit and 32/64-bit float, any number of channels, WAVE_FORMAT_EXTENSIBLE
too), read with numpy: no soundfile, torchaudio or ffmpeg needed."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptcli.errors import PtcliError

PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


class AudioError(ValueError):
    """A file that is not a WAV file this module can read (the message says why)."""


@dataclass
class WavInfo:
    """What a WAV header says: the format tag, channels, rate, bytes per sample and the data chunk's place."""

    format: int
    channels: int
    rate: int
    width: int  # bytes per sample
    offset: int  # where the samples start
    size: int  # bytes of samples

    @property
    def frames(self) -> int:
        return self.size // (self.width * self.channels)

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def wav_info(path) -> WavInfo:
    """The header of a RIFF/WAVE file (its chunks are walked, the samples are not read); AudioError if it is none."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioError("not a RIFF/WAVE file")
        fmt = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise AudioError("no data chunk" if fmt else "no fmt chunk")
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                body = f.read(size + (size & 1))
                if len(body) < 16:
                    raise AudioError("truncated fmt chunk")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID's first two bytes
                fmt = (tag, channels, rate, bits)
            elif name == b"data":
                if fmt is None:
                    raise AudioError("data chunk before the fmt chunk")
                tag, channels, rate, bits = fmt
                if tag not in (PCM, FLOAT) or (tag == PCM and bits not in (8, 16, 24, 32)) \
                        or (tag == FLOAT and bits not in (32, 64)):
                    raise AudioError(f"unsupported WAV encoding (format tag {tag}, {bits} bits): use PCM or float")
                if channels < 1 or rate < 1:
                    raise AudioError(f"bad header ({channels} channels at {rate} Hz)")
                available = path.stat().st_size - f.tell()
                return WavInfo(tag, channels, rate, bits // 8, f.tell(), min(size, max(available, 0)))
            else:
                f.seek(size + (size & 1), 1)


def unreadable_audio(path) -> str | None:
    """Why ``path`` is not a WAV file this module reads (its header), or None when it is."""
    try:
        info = wav_info(path)
    except (OSError, AudioError, struct.error) as e:
        return str(e) or type(e).__name__
    return "no samples (an empty data chunk)" if info.frames == 0 else None


def read_wav(path) -> tuple[np.ndarray, int]:
    """The samples of a WAV file as float32 in [-1, 1], shape (frames, channels), and its sampling rate."""
    info = wav_info(path)
    with open(path, "rb") as f:
        f.seek(info.offset)
        raw = f.read(info.frames * info.width * info.channels)
    if info.format == FLOAT:
        data = np.frombuffer(raw, dtype="<f4" if info.width == 4 else "<f8").astype(np.float32)
    elif info.width == 1:  # 8-bit WAV is unsigned, centred on 128
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif info.width == 3:  # 24-bit: three little-endian bytes, sign-extended into int32
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 2 ** 23
    else:
        data = np.frombuffer(raw, dtype=f"<i{info.width}").astype(np.float32) / 2 ** (8 * info.width - 1)
    return data.reshape(-1, info.channels), info.rate


def decode(audio, where: str = "") -> tuple[np.ndarray, int]:
    """The samples (frames, or frames x channels) and rate of a WAV path or of a ``{"array", "sampling_rate"}`` dict
    (Hugging Face datasets' Audio feature); a file that cannot be read is an error naming it."""
    if isinstance(audio, dict):
        if "array" not in audio or "sampling_rate" not in audio:
            raise PtcliError("an audio record needs 'array' and 'sampling_rate'", where=where,
                             fix="give a WAV path, or {'array': [...], 'sampling_rate': 16000}")
        return np.asarray(audio["array"], dtype=np.float32), int(audio["sampling_rate"])
    try:
        return read_wav(audio)
    except (AudioError, struct.error) as e:
        raise PtcliError(f"cannot read the audio file '{audio}': {e}", where=where,
                         fix="Remove or replace the file (ptcli reads PCM or float WAV files)") from None


def seconds(audio) -> float:
    """A clip's length in seconds (a WAV file's header, or an array's length over its rate)."""
    if isinstance(audio, dict):
        return len(audio.get("array", ())) / max(int(audio.get("sampling_rate", 1)), 1)
    return wav_info(audio).seconds
