"""Speech recognition with CTC end to end: a tiny wav2vec2 learns to spell tone words (its character error rate
falls far below the blank plateau's 1.0), `ptcli evaluate` reproduces the run's last validation, `ptcli generate`
transcribes WAV files (JSONL to stdout, a broken file named and exit 1), transformers' ASR pipeline loads model/ and
reads the same transcript, a resumed run with audio augmentation logs the same losses, a dataset without transcripts
is refused before any run directory exists, and FSDD spoken digits train (skipped without ../shared/data)."""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from tests.support import assert_one_screen, evals, records, run_cli, shared_data

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]


def write_clips(folder, n=3, seed=7):
    """Tone-word clips of a seed training never saw, as 8 kHz 16-bit WAV files; returns (path, transcript) pairs."""
    from ptcli.data.sources.audio import ToneWords

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (_, record) in enumerate(ToneWords(clips=n, seed=seed).records()):
        path = folder / f"clip{i}.wav"
        samples = np.round(np.clip(record["audio"]["array"], -1, 1) * 32767).astype("<i2")
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(record["audio"]["sampling_rate"])
            w.writeframes(samples.tobytes())
        out.append((path, record["transcript"]))
    return out


def test_tone_words_are_spelled_evaluated_generated_and_read_by_the_transformers_pipeline(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("finetune", "objective=ctc", "train.eval_every=400", *CPU, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "characters: 4 from the training transcripts" in proc.stderr and "aceg" in proc.stderr
    last = evals(run)[-1]
    assert last["val_cer"] < 0.5 and last["val_wer"] < 0.8, last  # the blank plateau (silence) is CER 1.0
    assert all(r["ctc_infeasible"] == 0 for r in records(run))
    vocab = json.loads((run / "model" / "vocab.json").read_text())
    assert (vocab["<pad>"], vocab["|"]) == (0, 2) and set(vocab) >= set("aceg")

    evaluated = run_cli("evaluate", f"model.path={run}", *CPU, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    scores = json.loads(evaluated.stdout)
    assert scores["objective"] == "ctc" and scores["examples"] == 48
    assert scores["cer"] == pytest.approx(last["val_cer"], abs=1e-6)
    assert scores["loss"] == pytest.approx(last["val_loss"], rel=1e-4)

    clips = write_clips(tmp_path / "clips")
    generated = run_cli("generate", f"model.path={run}", f"prompt=[{','.join(str(p) for p, _ in clips)}]", *CPU,
                        "output=jsonl", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr[-2000:]
    lines = [json.loads(line) for line in generated.stdout.splitlines()]
    assert [line["audio"] for line in lines] == [str(p) for p, _ in clips]
    assert all(set(line["text"]) <= set("aceg ") for line in lines), lines
    assert "3 audio file(s), 3 transcript(s)" in generated.stderr
    summary = json.loads(sorted((tmp_path / "outputs" / "generate").glob("*/summary.json"))[-1].read_text())
    assert summary["audio_seconds"] == pytest.approx(sum(line["seconds"] for line in lines), abs=1e-3)

    (tmp_path / "broken.wav").write_text("not audio")
    bad = run_cli("generate", f"model.path={run}", "output=text", *CPU, cwd=tmp_path,
                  stdin=f"{clips[0][0]}\nbroken.wav\n")
    assert bad.returncode == 1 and "broken.wav" in bad.stderr
    assert bad.stdout.splitlines()[0] == f"{clips[0][0]}\t{lines[0]['text']}"  # text mode: path, tab, transcript

    script = f"""
import sys, wave
import numpy as np
from scipy.signal import resample_poly
from transformers import pipeline
assert 'ptcli' not in sys.modules
with wave.open({str(clips[0][0])!r}) as w:
    x = np.frombuffer(w.readframes(w.getnframes()), dtype='<i2') / 32768.0
asr = pipeline('automatic-speech-recognition', model={str(run / 'model')!r}, device='cpu')
print(asr({{'raw': resample_poly(x, 2, 1).astype(np.float32), 'sampling_rate': 16000}})['text'])
"""
    plain = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout.strip().splitlines()[-1] == lines[0]["text"]


def test_a_resumed_run_with_augmentation_logs_the_same_losses(tmp_path):
    """Time shifts, noise and masks are drawn from the step's seed, so a run resumed from its step-3 checkpoint
    logs the losses the whole run logged."""
    args = ["objective=ctc", "dataset.clips=40", "train.max_steps=6", "train.batch_size=8", "train.eval_every=6",
            "train.save_every=3", "train.log_every=1", "objective.shift_seconds=0.1", "objective.noise_snr=20",
            "objective.time_masks=1", "train.keep_last=2", *CPU]
    whole = run_cli("finetune", *args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    resumed = run_cli("finetune", *args, f"train.resume={tmp_path / 'whole' / 'checkpoints' / 'step-00000003'}",
                      f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = {r["step"]: r["loss"] for r in records(tmp_path / "whole")}
    got = {r["step"]: r["loss"] for r in records(tmp_path / "resumed")}
    assert sorted(got) == [4, 5, 6]
    assert all(got[s] == pytest.approx(expected[s], abs=1e-6) for s in got), (got, expected)


def test_a_dataset_without_transcripts_is_refused_before_a_run_starts(tmp_path):
    proc = run_cli("finetune", "objective=ctc", "dataset=tones", "train.max_steps=2", *CPU, cwd=tmp_path)
    assert_one_screen(proc, 2, "objective=ctc needs transcripts", "dataset.transcript_column")
    assert not (tmp_path / "outputs").exists()


def test_spoken_digits_from_a_manifest_train_with_ctc(tmp_path):
    recordings = shared_data("fsdd/recordings")
    made = subprocess.run([sys.executable, "scripts/fsdd_manifest.py", str(tmp_path / "fsdd"),
                           "--recordings", str(recordings)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    proc = run_cli("finetune", "objective=ctc", "dataset=audio-manifest", f"dataset.files=[{tmp_path}/fsdd/train.csv]",
                   f"dataset.val_files=[{tmp_path}/fsdd/val.csv]", "dataset.transcript_column=transcript",
                   "train.max_steps=4", "train.batch_size=8", "train.eval_every=4", "train.eval_batches=2", *CPU,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2400 training and 300 validation examples" in proc.stderr
    assert "from the training transcripts" in proc.stderr and "efghinorstuvwxz" in proc.stderr
