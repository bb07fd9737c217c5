"""``ptcli tokenizer``: train a tokenizer on the dataset's text and save it as a Hugging Face folder."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ptcli.errors import PtcliError


def run(cfg, run_dir: Path) -> dict:
    """Train (or reuse from the cache) a tokenizer; write ``<run>/tokenizer`` and ``summary.json``."""
    from ptcli.config.build import build
    from ptcli.objectives.lm import documents
    from ptcli.processing.tokenizers import load_or_train_tokenizer
    from ptcli.verbs.train import cache_dir

    def log(message: str) -> None:  # logs on stderr; stdout gets the tokenizer's folder, for a shell
        print(message, file=sys.stderr, flush=True)

    kind = "bpe" if cfg.tokenizer.kind == "auto" else cfg.tokenizer.kind
    if not cfg.tokenizer.vocab_size:
        raise PtcliError("tokenizer.vocab_size is required", fix="Set e.g. tokenizer.vocab_size=8000")
    source = build(cfg.dataset, "dataset")
    start = time.time()
    tokenizer, cached = load_or_train_tokenizer(
        lambda: documents(source, "train", log), source.fingerprint("train"), kind, cfg.tokenizer.vocab_size,
        cache_dir(cfg), lowercase=cfg.tokenizer.lowercase, log=log)
    out = run_dir / "tokenizer"
    tokenizer.save_pretrained(out)
    sample = [doc for _, doc in zip(range(200), documents(source, "train", log))]
    chars = sum(len(d) for d in sample)
    tokens = sum(len(ids) for ids in tokenizer(sample, add_special_tokens=False)["input_ids"])
    summary = {"kind": kind, "vocab_size": len(tokenizer), "requested_vocab_size": cfg.tokenizer.vocab_size,
               "chars_per_token": round(chars / max(tokens, 1), 3), "from_cache": cached,
               "seconds": round(time.time() - start, 2), "tokenizer_dir": str(out)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"tokenizer: {len(tokenizer)} tokens, {summary['chars_per_token']} characters per token, saved to {out}")
    print(out, flush=True)
    return summary
