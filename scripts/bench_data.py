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
    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose
    from ptcli.objectives.base import Context
    from ptcli.training.parallel import Dist

    cfg = OmegaConf.create(validate("pretrain", compose("pretrain", overrides)))
    objective = build(cfg.objective, "objective")
    quiet = lambda message: None  # noqa: E731
    ctx = Context(cfg, build(cfg.dataset, "dataset"), cache, Dist(), quiet)
    start = time.perf_counter()
    processors = objective.load_processors(ctx)
    mid = time.perf_counter()
    data = objective.prepare(ctx, processors)
    return mid - start, time.perf_counter() - mid, len(data.train) + len(data.val)


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
