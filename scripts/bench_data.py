"""Preprocessing cost and the cache: tokenizer training + tokenize/pack on a cold cache, then a warm one.

Run: .venv/bin/python scripts/bench_data.py [text files...]   (default: the embedded 3 MB corpus)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def prepare(overrides: list[str], cache: Path) -> tuple[float, float, int]:
    """Seconds for the tokenizer and for packing, and the number of blocks, with ``cache`` as the cache."""
    from omegaconf import OmegaConf

    from ptcli.config.build import build
    from ptcli.config.compose import compose
    from ptcli.config.validate import validate
    from ptcli.data.pipeline import prepare_corpus, resolve_tokenizer
    from ptcli.training.distributed import Dist

    cfg = OmegaConf.create(validate("pretrain", compose("pretrain", overrides)))
    objective = build(cfg.objective, "objective")
    quiet = lambda message: None  # noqa: E731
    start = time.perf_counter()
    tokenizer = resolve_tokenizer(cfg, objective, cache, Dist(), quiet)
    objective.bind(tokenizer)
    mid = time.perf_counter()
    corpus = prepare_corpus(cfg, objective, tokenizer, cache, Dist(), quiet)
    return mid - start, time.perf_counter() - mid, len(corpus.train_indices) + len(corpus.val_indices)


def main() -> None:
    files = sys.argv[1:]
    overrides = ["dataset=text", f"dataset.files=[{','.join(files)}]"] if files else []
    size = sum(Path(f).stat().st_size for f in files) if files else 3_000_000
    with tempfile.TemporaryDirectory() as tmp:
        cold = prepare(overrides, Path(tmp))
        warm = prepare(overrides, Path(tmp))
    print(f"input: {', '.join(files) or 'embedded corpus'} ({size / 1e6:.1f} MB), {cold[2]} blocks")
    print(f"cold cache: tokenizer {cold[0]:.2f} s, tokenize+pack {cold[1]:.2f} s")
    print(f"warm cache: tokenizer {warm[0]:.2f} s, tokenize+pack {warm[1]:.2f} s")


if __name__ == "__main__":
    main()
