"""Zero-shot Whisper on the Free Spoken Digit Dataset: how often a converted model's greedy transcript is exactly the
spoken digit. A check that `ptcli convert` got the weights right (a wrong mapping transcribes nothing sensible).

The model is loaded by transformers' own speech-recognition pipeline, without ptcli. Each 8 kHz recording is
resampled to 16 kHz (scipy.signal.resample_poly); a transcript counts when, lowercased and stripped of punctuation,
it is the digit's English word ("zero" .. "nine") or its numeral.

Run: .venv/bin/ptcli convert whisper-tiny.en /tmp/whisper-tiny.en
     .venv/bin/python scripts/whisper_fsdd_zero_shot.py /tmp/whisper-tiny.en [--every 9] [--show 10]
     .venv/bin/python scripts/whisper_fsdd_zero_shot.py /tmp/whisper-tiny.en --manifest /tmp/fsdd/val.csv
         (the validation split of scripts/fsdd_manifest.py: the same clips the trained models are scored on)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDINGS = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalise(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


def is_digit(text: str, digit: int) -> bool:
    said = normalise(text)
    return said in (WORDS[digit], str(digit))


def load_16k(path: Path):
    import numpy as np
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    rate, samples = wavfile.read(path)
    samples = samples.astype(np.float32) / (32768.0 if samples.dtype == np.int16 else 1.0)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != 16000:
        from math import gcd

        g = gcd(16000, rate)
        samples = resample_poly(samples, 16000 // g, rate // g).astype(np.float32)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a Hugging Face Whisper folder (ptcli convert's output)")
    parser.add_argument("--recordings", default=str(RECORDINGS))
    parser.add_argument("--every", type=int, default=9, help="every n-th file of the sorted list (9: 300 of 2700)")
    parser.add_argument("--manifest", default=None, help="score the files of this CSV (audio column) instead")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16,
                        help="stop each transcript here (one spoken digit takes a few tokens; a transcript that "
                             "repeats itself is a miss however long it runs, and would cost up to 448 steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--show", type=int, default=10, help="print this many misses")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from transformers import pipeline

    torch.set_num_threads(args.threads)
    if args.manifest:
        import csv

        with open(args.manifest, newline="") as f:
            files = [Path(row["audio"]) for row in csv.DictReader(f)]
    else:
        files = sorted(Path(args.recordings).glob("*.wav"))[::args.every]
    if not files:
        print(f"no .wav files in {args.recordings}", file=sys.stderr)
        return 2
    start = time.time()
    asr = pipeline("automatic-speech-recognition", model=args.model, device="cpu")
    right, misses = 0, []
    for at in range(0, len(files), args.batch_size):
        batch = files[at:at + args.batch_size]
        outputs = asr([{"raw": load_16k(f), "sampling_rate": 16000} for f in batch], batch_size=args.batch_size,
                      generate_kwargs={"max_new_tokens": args.max_new_tokens})
        for f, out in zip(batch, outputs):
            if is_digit(out["text"], int(f.name.split("_")[0])):
                right += 1
            else:
                misses.append((f.name, out["text"]))
        done = at + len(batch)
        print(f"{done}/{len(files)}: {right} exact ({right / done:.1%})", file=sys.stderr, flush=True)
    for name, text in misses[:args.show]:
        print(f"miss: {name}: {text!r}", file=sys.stderr)
    result = {"model": args.model, "manifest": args.manifest, "files": len(files),
              "exact_digit": right, "rate": round(right / len(files), 4),
              "seconds": round(time.time() - start, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
