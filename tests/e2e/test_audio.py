"""Audio end to end: class folders of tones in mixed WAV formats (8 kHz stereo, 44.1 kHz, 8-bit) train a tiny
wav2vec2 well above chance; the exported model/ loads in transformers' audio-classification pipeline with the same
labels as `ptcli predict`; models of the wrong kind are refused before training; the Free Spoken Digit Dataset with a
speaker held out (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from tests.support import assert_one_screen, evals, latest, records, run_cli, shared_data

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]
SMALL = ["objective=audio_classification", "train.log_every=5", "optim.lr=3e-3", "optim.weight_decay=0.0",
         "train.epochs=null", *CPU]
PITCHES = {"low": 300.0, "mid": 600.0, "high": 1200.0}
FORMATS = ((8000, 2, 2), (44100, 1, 2), (16000, 1, 1), (22050, 1, 2))  # (rate, channels, bytes per sample)


def tone(path, hz, rate, channels, width, seed, seconds=None):
    """A noisy tone of ``hz`` at a random loudness and length, written as PCM WAV."""
    rng = np.random.default_rng(seed)
    seconds = seconds or rng.uniform(0.3, 0.7)
    t = np.arange(int(rate * seconds)) / rate
    x = rng.uniform(0.2, 0.7) * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.28)) + rng.normal(0, 0.03, len(t))
    x = np.repeat(np.clip(x, -1, 1)[:, None], channels, axis=1)
    data = (np.round(x * 127 + 128).astype(np.uint8) if width == 1 else np.round(x * 32767).astype("<i2")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels), w.setsampwidth(width), w.setframerate(rate)
        w.writeframes(data)
    return path


def make_folders(root, per_class=16, val_per_class=4):
    n = 0
    for split, count in (("train", per_class), ("validation", val_per_class)):
        for name, hz in PITCHES.items():
            for i in range(count):
                rate, channels, width = FORMATS[i % 4] if split == "train" else (16000, 1, 2)
                tone(root / split / name / f"{i:03d}.wav", hz, rate, channels, width, n)
                n += 1
    return root


def test_tone_folders_train_and_the_model_loads_in_transformers_pipeline(tmp_path):
    folders = make_folders(tmp_path / "clips")
    (folders / "train" / "low" / "notes.txt").write_text("not audio")
    proc = run_cli("finetune", *SMALL, "dataset=audiofolder", f"dataset.path={folders}", "train.max_steps=30",
                   "train.batch_size=16", "train.eval_every=30", "objective.max_seconds=0.5",
                   "objective.shift_seconds=0.05", "objective.noise_snr=20", "objective.time_masks=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "labels: 3 (high, low, mid)" in proc.stderr and "without a .wav suffix" in proc.stderr
    assert "longer than objective.max_seconds=0.5 and are cropped" in proc.stderr
    run = latest(tmp_path)
    assert evals(run)[-1]["val_accuracy"] >= 0.9, evals(run)  # chance: 1/3
    assert all(r["seconds_per_s"] > 0 for r in records(run))
    assert json.loads((run / "model" / "preprocessor_config.json").read_text())["sampling_rate"] == 16000

    clip = folders / "validation" / "high" / "001.wav"
    script = f"""
import json, sys, wave
import numpy as np
from transformers import pipeline
assert 'ptcli' not in sys.modules
with wave.open({str(clip)!r}) as w:
    rate, x = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype='<i2') / 32768.0
classify = pipeline('audio-classification', model={str(run / 'model')!r}, device='cpu')
print(json.dumps(classify({{'raw': x.astype(np.float32), 'sampling_rate': rate}}, top_k=3)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    assert plain[0]["label"] == "high"

    predicted = run_cli("predict", f"model.path={run}", f"input={clip}", *CPU, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    line = json.loads(predicted.stdout.strip().splitlines()[-1])
    assert line["label"] == plain[0]["label"] and line["score"] == pytest.approx(plain[0]["score"], abs=1e-4)
    assert [t["label"] for t in line["top"]] == [p["label"] for p in plain]

    (tmp_path / "bad.wav").write_text("not a wav")
    several = run_cli("predict", f"model.path={run}", *CPU, cwd=tmp_path,
                      stdin=f"{folders / 'validation' / 'low' / '000.wav'}\nbad.wav\n")
    assert several.returncode == 1 and "bad.wav" in several.stderr
    assert json.loads(several.stdout.strip().splitlines()[0])["label"] == "low"


def test_a_corrupt_wav_is_named_before_training(tmp_path):
    folders = make_folders(tmp_path / "clips", per_class=2, val_per_class=1)
    (folders / "train" / "mid" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    proc = run_cli("finetune", *SMALL, "dataset=audiofolder", f"dataset.path={folders}", "train.max_steps=2",
                   cwd=tmp_path)
    assert_one_screen(proc, 2, "broken.wav", "dataset.bad_audio=skip")


def test_text_and_vision_models_are_refused_with_a_clear_message(tmp_path):
    for model in ("bert-tiny", "vit-tiny"):
        proc = run_cli("finetune", *SMALL, f"model={model}", "train.max_steps=2", cwd=tmp_path)
        assert_one_screen(proc, 2, "objective audio_classification needs an audio model", "model=wav2vec2-tiny")
    proc = run_cli("finetune", "objective=classification", "model=wav2vec2-tiny", "dataset=tones",
                   "train.max_steps=2", *CPU, cwd=tmp_path)
    assert_one_screen(proc, 2, "needs a text model")


def test_the_free_spoken_digit_dataset_with_a_speaker_held_out(tmp_path):
    recordings = shared_data("fsdd/recordings")
    proc = run_cli("finetune", *SMALL, "dataset=audio-files", f"dataset.path={recordings}",
                   "dataset.val_pattern=_jackson_", "train.max_steps=6",
                   "train.batch_size=8", "train.eval_every=6", "train.eval_batches=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "labels: 10 (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in proc.stderr
    assert "2250 training and 450 validation examples" in proc.stderr
    assert 0 <= evals(latest(tmp_path))[-1]["val_accuracy"] <= 1
