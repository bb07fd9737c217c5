"""The unigram baseline of a finished run: cross-entropy (nats/token) of the validation tokens under the
training tokens' unigram frequencies, with the run's own tokenizer. A model must beat this to have learnt
anything beyond word frequencies.

Run: .venv/bin/python scripts/unigram_baseline.py outputs/pretrain/latest
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/pretrain/latest").resolve()
    from ptcli.config.build import build
    from ptcli.objectives.lm import documents
    from ptcli.processing.loading import load_tokenizer

    cfg = OmegaConf.load(run / "config.yaml")
    source = build(cfg.dataset, "dataset")
    tokenizer = load_tokenizer(str(run / "tokenizer"))
    counts: Counter = Counter()
    for ids in tokenizer(list(documents(source, "train", print)), add_special_tokens=False)["input_ids"]:
        counts.update(ids)
    total, vocab = sum(counts.values()), len(tokenizer)
    val_split = "val" if source.has_split("val") else "train"
    nll, n = 0.0, 0
    for ids in tokenizer(list(documents(source, val_split, print)), add_special_tokens=False)["input_ids"]:
        for i in ids:  # add-one smoothing so unseen tokens have a finite cost
            nll -= math.log((counts[i] + 1) / (total + vocab))
            n += 1
    summary = json.loads((run / "summary.json").read_text())
    print(json.dumps({"unigram_val_loss": round(nll / n, 4), "model_val_loss": summary["final_val_loss"],
                      "val_tokens": n, "run": str(run)}, indent=2))


if __name__ == "__main__":
    main()
