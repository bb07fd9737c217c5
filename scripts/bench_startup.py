"""Wall time of ptcli's fast paths (help, config, dry run, a config error): none of them may import torch.

Run: .venv/bin/python scripts/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "ptcli --help": ["--help"],
    "ptcli pretrain --help": ["pretrain", "--help"],
    "ptcli config pretrain": ["config", "pretrain"],
    "ptcli pretrain --dry-run": ["pretrain", "--dry-run"],
    "config error (optim.lrr=1e-3)": ["pretrain", "--dry-run", "optim.lrr=1e-3"],
}


def time_command(args: list[str], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ptcli", *args], capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    print(f"| command | median (s) | best (s) |   ({repeat} runs each)")
    print("|---|---|---|")
    for name, args in CASES.items():
        median, best = time_command(args, repeat)
        print(f"| `{name}` | {median:.3f} | {best:.3f} |")


if __name__ == "__main__":
    main()
