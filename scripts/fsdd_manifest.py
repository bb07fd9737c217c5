"""Audio listings for the Free Spoken Digit Dataset: its file names ({digit}_{speaker}_{index}.wav) as CSV rows of
audio path, label (the digit) and transcript (the digit's English word), split into training and validation.

The validation split holds out recording indices (by default 5-9 of every speaker and digit: 300 of the 2,700
shared recordings, as FSDD's own test split holds out 0-4) or one speaker (--val-speaker jackson: an unseen voice).

Run: python scripts/fsdd_manifest.py /tmp/fsdd                      # /tmp/fsdd/train.csv, /tmp/fsdd/val.csv
     ptcli finetune objective=ctc dataset=audio-manifest dataset.files=[/tmp/fsdd/train.csv] \\
         dataset.val_files=[/tmp/fsdd/val.csv] dataset.transcript_column=transcript
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDINGS = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def rows(recordings: Path):
    for path in sorted(recordings.glob("*.wav")):
        match = NAME.match(path.name)
        if match:
            digit, speaker, index = int(match.group(1)), match.group(2), int(match.group(3))
            yield {"audio": str(path.resolve()), "label": str(digit), "transcript": WORDS[digit],
                   "speaker": speaker, "index": index}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for train.csv and val.csv")
    parser.add_argument("--recordings", default=str(RECORDINGS))
    parser.add_argument("--val-indices", default="5-9", help="recording indices held out, 'a-b' (default 5-9)")
    parser.add_argument("--val-speaker", default=None, help="hold out this speaker instead of indices")
    args = parser.parse_args(argv)
    low, _, high = args.val_indices.partition("-")
    low, high = int(low), int(high or low)
    found = list(rows(Path(args.recordings)))
    if not found:
        print(f"no {{digit}}_{{speaker}}_{{index}}.wav files in {args.recordings}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held = (lambda r: r["speaker"] == args.val_speaker) if args.val_speaker else (lambda r: low <= r["index"] <= high)
    splits = {"train": [r for r in found if not held(r)], "val": [r for r in found if held(r)]}
    for name, split in splits.items():
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["audio", "label", "transcript", "speaker", "index"])
            writer.writeheader()
            writer.writerows(split)
        print(f"{out / (name + '.csv')}: {len(split)} recordings", file=sys.stderr)
    return 0 if splits["val"] and splits["train"] else 2


if __name__ == "__main__":
    sys.exit(main())
