"""Evaluation throughput and peak memory: `ptcli evaluate` on 1 MB and 10 MB of text (memory must stay flat).

Workload: a GPT-2 built like bench_generate.py's (random weights, a 4096-token BPE tokenizer trained on Tiny
Shakespeare) but smaller by default (2 layers x 128, so that 10 MB take minutes, not a quarter of an hour, on two
shared cores; --layers/--hidden change it), perplexity with windows of --seq-len tokens. The text is Tiny
Shakespeare's train.txt repeated to each size in a temporary folder (or the embedded corpus when
../shared/data is absent); nothing is kept.
Each evaluation is its own `ptcli evaluate` process: tokens/s comes from metrics.json (tokenizing and scoring),
peak memory is the child's ru_maxrss (the whole process: Python, torch, the model, the text and its token ids).

Run: .venv/bin/python scripts/bench_evaluate.py [--sizes-mb 1 10] [--seq-len 256] [--stride 256] [--threads 1]
     [--layers 2] [--hidden 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import build_model, texts  # noqa: E402


def make_text(path: Path, megabytes: float, lines: list[str]) -> int:
    """Repeat the source text until the file holds ``megabytes`` MB; returns its size in bytes."""
    source = "\n".join(lines) + "\n"
    target = int(megabytes * 1_000_000)
    with open(path, "w") as f:
        written = 0
        while written < target:
            chunk = source[: target - written]
            f.write(chunk)
            written += len(chunk.encode())
    return path.stat().st_size


def evaluate(folder: Path, text: Path, args, tmp: str) -> dict:
    """One `ptcli evaluate` process: its metrics, wall time and peak RSS (MiB)."""
    run_dir = Path(tmp) / f"eval-{time.monotonic_ns()}"
    argv = [sys.executable, "-m", "ptcli", "evaluate", f"model.path={folder}", "dataset=text",
            f"dataset.files=[{text}]", f"dataset.seq_len={args.seq_len}", f"stride={args.stride}",
            f"batch_size={args.batch_size}", "device=cpu", f"device.threads={args.threads}", "output=json",
            f"hydra.run.dir={run_dir}"]
    out_path, err_path = Path(tmp) / "stdout.txt", Path(tmp) / "stderr.txt"
    start = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, "PTCLI_CACHE_DIR": tmp})
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"ptcli evaluate failed:\n{err_path.read_text()}")
    metrics = json.loads(out_path.read_text())
    return {**metrics, "wall": wall, "peak_mib": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    lines = texts()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2"
        build_model(folder, lines, args.layers, args.hidden)
        print(f"model: GPT-2 {args.layers} layers x {args.hidden}, random weights; windows of {args.seq_len}, "
              f"stride {args.stride}, batch {args.batch_size}, {args.threads} thread(s)")
        print("\n| text | tokens | tokens/s | wall (s) | peak RSS (MiB) | bits per byte |")
        print("|---|---|---|---|---|---|")
        for size in sorted(args.sizes_mb):
            text = Path(tmp) / f"text-{size:g}mb.txt"
            n_bytes = make_text(text, size, lines)
            r = evaluate(folder, text, args, tmp)
            print(f"| {n_bytes / 1e6:.1f} MB | {r['tokens']:,} | {r['tokens_per_second']:,.0f} | {r['wall']:.1f} | "
                  f"{r['peak_mib']:,.0f} | {r['bits_per_byte']:.3f} |", flush=True)
            text.unlink()


if __name__ == "__main__":
    main()
