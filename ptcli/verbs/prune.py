"""``prune``: remove weights (magnitude: zeros), attention heads or feed-forward neurons (sliced out) from a trained
model, and report size, CPU latency and the task metric before and after (``verbs/compress.py``). The methods are
in ``ptcli/compression/prune.py``; the result is a ptcli run directory that evaluate, generate and finetune
(recovery fine-tuning) take as it is."""

from __future__ import annotations

from pathlib import Path


def run(cfg, run_dir: Path, stdout=None, stderr=None) -> dict:
    """Prune as ``cfg`` says into ``run_dir``; returns the report (also ``compression.json``)."""
    from ptcli.compression.prune import prune
    from ptcli.training.parallel import Dist
    from ptcli.verbs.compress import run_compression
    from ptcli.verbs.train import cache_dir

    def compress(task, loaded, out: Path) -> dict:
        return prune(task, loaded, out, cache_dir(task.cfg), Dist())

    return run_compression(cfg, run_dir, "prune", compress, stdout, stderr)
