"""Peak memory and step time of causal-LM fine-tuning with the chunked loss against the plain one (issue #19).

Each arm is one `ptcli finetune objective=clm` run of a few steps on a real model in its own process; the peak is
that process's maximum resident set (os.wait4), the step time the median logged step after the first. Arms
alternate (plain, chunked, chunked, plain, ...) so that a busy spell of the machine hits both.

Run (SmolLM2-135M, vocabulary 49,152; scripts/smollm2_folder.py writes the folder):
    .venv/bin/python scripts/bench_loss_memory.py --model /tmp/smollm2 --text ../shared/data/wikitext2/validation.txt \
        --seq-len 1024 --batch 4 --steps 4 --rounds 2 [--extra train.gradient_checkpointing=true]
    (LoRA fine-tuning: --extra +peft=lora [train.gradient_checkpointing=true]; docs/benchmarks.md has the numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def arm(chunked: bool, args) -> tuple[float, float]:
    """(peak resident GiB, median seconds per step) of one fine-tuning run."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "ptcli", "finetune", "objective=clm", f"model.path={args.model}",
                   "dataset=text", f"dataset.files=[{args.text}]", f"dataset.seq_len={args.seq_len}",
                   f"train.batch_size={args.batch}", f"train.max_steps={args.steps}", "train.log_every=1",
                   "train.eval_every=1000000", "train.save_every=1000000", "train.epochs=null",
                   f"device={args.device}", f"device.threads={args.threads}",
                   f"objective.chunked_loss={str(chunked).lower()}", f"hydra.run.dir={tmp}/run", *args.extra]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PTCLI_CACHE_DIR": args.cache})
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit(f"ptcli failed ({proc.returncode}):\n{err[-3000:]}")
        records = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in records if r["kind"] == "train"][1:]
        seconds = statistics.median(args.batch * args.seq_len / r["tokens_per_s"] for r in steps)
        return usage.ru_maxrss / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for both arms")
    args = parser.parse_args()
    results: dict[bool, list] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as cache:
        args.cache = cache
        for i in range(args.rounds):
            for chunked in ((False, True) if i % 2 == 0 else (True, False)):
                peak, seconds = arm(chunked, args)
                results[chunked].append((peak, seconds))
                print(f"round {i + 1} {'chunked' if chunked else 'plain  '}: peak {peak:.2f} GiB, "
                      f"{seconds:.2f} s/step", flush=True)
    (plain_peak, plain_s), (ours_peak, ours_s) = ((statistics.median(p for p, _ in results[c]),
                                                   statistics.median(s for _, s in results[c])) for c in (False, True))
    print(f"workload: {args.model}, seq {args.seq_len}, batch {args.batch}, {args.steps} steps, "
          f"{args.threads} threads, {args.device} {' '.join(args.extra)}")
    print(f"plain loss:   peak {plain_peak:.2f} GiB, {plain_s:.2f} s/step")
    print(f"chunked loss: peak {ours_peak:.2f} GiB, {ours_s:.2f} s/step")
    print(f"peak {100 * (1 - ours_peak / plain_peak):.1f}% lower, speed ratio chunked/plain {plain_s / ours_s:.3f}")


if __name__ == "__main__":
    main()
