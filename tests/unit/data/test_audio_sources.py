"""Audio data: WAV reading (stereo, 8/16/24/32-bit PCM and float, resampling that keeps a tone's pitch), crop and pad,
class folders, name-labelled folders and listings as records, unreadable files named or skipped and counted, and
augmentation drawn from the generator and off at validation."""

from __future__ import annotations

import json
import struct
import wave
from types import SimpleNamespace

import numpy as np
import pytest

from ptcli.data.sources.audio import AudioFiles, AudioFolder, AudioManifest, Tones, ToneWords, note_hz
from ptcli.data.wav import read_wav, unreadable_audio
from ptcli.errors import PtcliError
from ptcli.objectives.audio import load_audio
from ptcli.processing.audio import augment_audio, crop_or_pad, resample, window


def sine(hz, rate, seconds=0.5, amplitude=0.5):
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)


def write_wav(path, samples, rate=8000, width=2):
    """PCM with the standard library's wave module: samples in [-1, 1], shape (frames,) or (frames, channels)."""
    samples = np.asarray(samples, dtype=np.float64)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    if width == 1:
        data = np.round(samples * 127 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        ints = np.round(samples * (2 ** 23 - 1)).astype("<i4").reshape(-1)
        data = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        data = np.round(samples * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def write_float_wav(path, samples, rate):
    """IEEE float32 WAV (format tag 3), which the wave module cannot write."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    return path


def peak_hz(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))]


def read(source, split="train"):
    lines = []
    return list(source.records(split, lines.append)), lines


def test_pcm_widths_and_float_read_back_as_the_same_samples(tmp_path):
    wave_ = sine(440, 8000, 0.1, amplitude=0.9)
    for width, tolerance in ((1, 2 / 128), (2, 1e-4), (3, 1e-6), (4, 1e-6)):
        samples, rate = read_wav(write_wav(tmp_path / f"w{width}.wav", wave_, width=width))
        assert rate == 8000 and samples.shape == (len(wave_), 1) and samples.dtype == np.float32
        assert np.abs(samples[:, 0] - wave_).max() < tolerance, width
    samples, _ = read_wav(write_float_wav(tmp_path / "f.wav", wave_, 8000))
    assert np.allclose(samples[:, 0], wave_, atol=1e-7)


def test_int16_extremes_map_into_minus_one_one(tmp_path):
    path = tmp_path / "x.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.array([-32768, 0, 16384, 32767], dtype="<i2").tobytes())
    samples, _ = read_wav(path)
    assert samples[:, 0].tolist() == [-1.0, 0.0, 0.5, pytest.approx(32767 / 32768)]


def test_stereo_at_44_1_khz_is_mixed_down_and_resampled_keeping_the_pitch(tmp_path):
    left, right = sine(440, 44100), sine(440, 44100, amplitude=0.3)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), rate=44100)
    out = load_audio(str(path), 16000)
    assert out.ndim == 1 and len(out) == 8000  # 0.5 s at 16 kHz
    assert abs(peak_hz(out, 16000) - 440) <= 2  # FFT bins are 2 Hz wide
    assert np.abs(out[1000:-1000]).max() == pytest.approx(0.4, abs=0.01)  # the channels' mean
    low = load_audio(str(write_wav(tmp_path / "low.wav", sine(1000, 8000), rate=8000)), 16000)
    assert abs(peak_hz(low, 16000) - 1000) <= 2 and len(low) == 8000
    assert resample(sine(300, 16000), 16000, 16000).dtype == np.float32


def test_a_record_may_hold_an_array_and_its_rate():
    out = load_audio({"array": sine(500, 8000), "sampling_rate": 8000}, 16000)
    assert len(out) == 8000 and abs(peak_hz(out, 16000) - 500) <= 2
    with pytest.raises(PtcliError):
        load_audio({"array": [0.0]}, 16000)


def test_crop_pad_and_windows():
    x = np.arange(10, dtype=np.float32)
    assert crop_or_pad(x, 4, start=3).tolist() == [3, 4, 5, 6]
    assert crop_or_pad(x, 12).tolist() == list(range(10)) + [0, 0]
    assert window(x, 20) is x and window(x, 4).tolist() == [0, 1, 2, 3]  # validation: the start

    import torch

    def draw(seed):
        return window(x, 4, torch.Generator().manual_seed(seed)).tolist()

    assert draw(1) == draw(1) and len({tuple(draw(s)) for s in range(20)}) > 1 and all(len(draw(s)) == 4
                                                                                        for s in range(5))


def test_augmentation_is_a_function_of_the_generator_and_off_in_validation():
    import torch

    clip = sine(440, 8000, 0.25).astype(np.float32)

    def draw(seed):
        return augment_audio(clip, torch.Generator().manual_seed(seed), 8000, shift_seconds=0.02, noise_snr=10,
                             time_masks=2, mask_seconds=0.01)

    assert np.array_equal(draw(3), draw(3)) and not np.array_equal(draw(3), draw(4))
    assert augment_audio(clip, None, 8000, shift_seconds=0.02, noise_snr=10, time_masks=2) is clip
    noisy = augment_audio(clip, torch.Generator().manual_seed(0), 8000, noise_snr=10)
    snr = 10 * np.log10(np.mean(clip ** 2) / np.mean((noisy - clip) ** 2))
    assert snr == pytest.approx(10, abs=0.5)
    for seed in range(5):  # a delay: leading zeros, then the whole clip
        shifted = augment_audio(clip, torch.Generator().manual_seed(seed), 8000, shift_seconds=0.05)
        delay = len(shifted) - len(clip)
        assert 0 <= delay <= 400 and np.array_equal(shifted[delay:], clip) and not shifted[:delay].any()


def test_validation_batches_are_never_augmented(tmp_path):
    import torch

    from ptcli.objectives.audio_classification import AudioClassification
    from ptcli.processing.audio import feature_extractor

    path = write_wav(tmp_path / "a.wav", sine(440, 8000, 1.5))
    objective = AudioClassification(max_seconds=1.0, shift_seconds=0.1, noise_snr=5, time_masks=3)
    objective.processors, objective.labels = {"feature_extractor": feature_extractor(16000)}, SimpleNamespace()
    examples = [{"audio": str(path), "label": 0}, {"audio": {"array": sine(220, 8000, 0.5), "sampling_rate": 8000},
                                                   "label": 1}]
    first = objective.eval_collate(examples, torch.Generator().manual_seed(1))
    again = objective.eval_collate(examples, torch.Generator().manual_seed(2))
    assert torch.equal(first["input_values"], again["input_values"])
    assert tuple(first["input_values"].shape) == (2, 16000)  # cropped to 1 s, the short one padded
    assert first["attention_mask"].sum(-1).tolist() == [16000, 8000] and first["seconds"] == 1.5
    trained = [objective.collate(examples, torch.Generator().manual_seed(s))["input_values"] for s in (1, 1, 2)]
    assert torch.equal(trained[0], trained[1]) and not torch.equal(trained[0], trained[2])
    assert not torch.equal(trained[0], first["input_values"])


def test_class_folders_are_labels_and_train_validation_are_the_splits(tmp_path):
    for split, n in (("train", 3), ("validation", 1)):
        for name in ("no", "yes"):
            for i in range(n):
                write_wav(tmp_path / split / name / f"{i}.wav", sine(300, 8000, 0.1))
    (tmp_path / "train" / "yes" / "notes.txt").write_text("hi")
    source = AudioFolder(path=str(tmp_path))
    rows, lines = read(source)
    assert [r["label"] for _, r in rows] == ["no"] * 3 + ["yes"] * 3 and rows[0][1]["audio"].endswith("0.wav")
    assert any("skipped 1 file(s) without a .wav suffix" in line for line in lines)
    assert source.has_split("val") and len(read(source, "val")[0]) == 2 and source.problems() == []
    assert "is not a folder" in AudioFolder(path=str(tmp_path / "nope")).problems()[0]
    assert "dataset.path" in AudioFolder().problems()[0]


def test_a_corrupt_wav_is_named_or_skipped_and_counted(tmp_path):
    for i in range(2):
        write_wav(tmp_path / "a" / f"{i}.wav", sine(300, 8000, 0.1))
    (tmp_path / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "a" / "text.wav").write_text("not audio at all")
    assert "RIFF" in unreadable_audio(tmp_path / "a" / "text.wav")
    with pytest.raises(PtcliError) as e:
        read(AudioFolder(path=str(tmp_path)))
    assert "broken.wav" in e.value.message() and "dataset.bad_audio=skip" in e.value.message()
    rows, lines = read(AudioFolder(path=str(tmp_path), bad_audio="skip"))
    assert len(rows) == 2 and any("skipped 2 unreadable audio file(s)" in line for line in lines)


def test_name_patterns_label_files_and_hold_out_a_speaker(tmp_path):
    for digit in ("0", "7"):
        for speaker in ("george", "jackson", "theo"):
            write_wav(tmp_path / f"{digit}_{speaker}_5.wav", sine(300, 8000, 0.1))
    (tmp_path / "README.wav.txt").write_text("x")
    (tmp_path / "noise.wav").write_bytes((tmp_path / "0_theo_5.wav").read_bytes())
    source = AudioFiles(path=str(tmp_path), label_pattern=r"^(\d+)_", val_pattern="_jackson_")
    rows, lines = read(source)
    assert sorted(r["label"] for _, r in rows) == ["0", "0", "7", "7"]
    assert not any("jackson" in where for where, _ in rows)
    assert any("label_pattern" in line and "noise.wav" in line for line in lines)
    val, _ = read(source, "val")
    assert source.has_split("val") and [r["label"] for _, r in val] == ["0", "7"]
    assert all("jackson" in r["audio"] for _, r in val)
    assert not AudioFiles(path=str(tmp_path), label_pattern=r"^\d").has_split("val")
    assert source.problems() == []
    problems = AudioFiles(path=str(tmp_path), label_pattern="(").problems()
    assert any("not a regular expression" in p for p in problems)
    assert any("label_pattern" in p for p in AudioFiles(path=str(tmp_path), label_pattern="").problems())
    by_default = AudioFiles(path=str(tmp_path), val_pattern="_jackson_")  # the name up to its first underscore
    assert by_default.problems() == [] and [r for _, r in read(by_default)[0]] == [r for _, r in rows]


def test_listings_resolve_paths_and_carry_transcripts(tmp_path):
    write_wav(tmp_path / "clips" / "a.wav", sine(300, 8000, 0.1))
    listing = tmp_path / "list.jsonl"
    listing.write_text(json.dumps({"path": "clips/a.wav", "label": "x", "text": "hello"}) + "\n")
    source = AudioManifest(files=[str(listing)], audio_column="path", transcript_column="text")
    (where, record), = read(source)[0]
    assert record["path"] == str(tmp_path / "clips" / "a.wav") and record["transcript"] == "hello"
    (tmp_path / "list.csv").write_text("audio,label\nclips/a.wav,x\nclips/gone.wav,y\n")
    with pytest.raises(PtcliError) as e:
        read(AudioManifest(files=[str(tmp_path / "list.csv")]))
    assert "gone.wav" in e.value.message()


def test_tones_are_seeded_notes():
    first, again = list(Tones(per_class=2).records()), list(Tones(per_class=2).records())
    assert all(np.array_equal(a[1]["audio"]["array"], b[1]["audio"]["array"]) for a, b in zip(first, again))
    assert len(first) == 8
    clip = first[2][1]["audio"]
    assert first[2][1]["label"] == "A4" and abs(peak_hz(clip["array"], clip["sampling_rate"]) - 440) < 10
    assert note_hz("A4") == 440 and note_hz("A3") == 220 and round(note_hz("C#5"), 2) == 554.37
    assert Tones(classes=["H2", "A4"]).problems()


def test_tone_words_spell_their_transcript_in_notes_seeded():
    first, again = list(ToneWords(clips=6).records()), list(ToneWords(clips=6).records())
    assert all(np.array_equal(a[1]["audio"]["array"], b[1]["audio"]["array"]) for a, b in zip(first, again))
    other = list(ToneWords(clips=6, seed=1).records())
    assert [r["transcript"] for _, r in first] != [r["transcript"] for _, r in other]
    for _, record in first:
        words = record["transcript"].split(" ")
        assert 1 <= len(words) <= 2 and all(1 <= len(w) <= 3 and set(w) <= set("aceg") for w in words)
    one = [r for _, r in ToneWords(clips=40).records() if len(r["transcript"]) == 1][0]  # a single note
    clip = one["audio"]
    assert abs(peak_hz(clip["array"], clip["sampling_rate"]) - note_hz(ToneWords().letters[one["transcript"]])) < 15
    assert ToneWords(letters={"ab": "A4"}).problems() and ToneWords(letters={"a": "Z9"}).problems()
