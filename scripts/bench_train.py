"""Training throughput: `ptcli pretrain` against a bare PyTorch loop on the same model and batch shape.

Fixed workload (issue #3): GPT-2 style, 4 layers, 4 heads, 256 wide, seq 256, batch 8, vocab 8192, fp32,
2 threads. Prints tokens/s for both, their ratio, and the model FLOPs utilisation against the peak of a
large fp32 matmul measured in the same process.

ptcli runs twice per round: as it is (the chunked causal-LM loss) and with ``objective.chunked_loss=false``.
Rounds are interleaved, and the order of the arms alternates (bare-ptcli-plain, plain-ptcli-bare, ...), so that a
busy spell of the machine and any warm-up of the CPU hit all; the ratios reported are medians of the rounds' ratios.

Run: .venv/bin/python scripts/bench_train.py [--steps 60] [--rounds 3] [--threads 2] [--device cpu]
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

LAYERS, HEADS, WIDTH, SEQ, BATCH, VOCAB = 4, 4, 256, 256, 8, 8192


def flops_per_token(n_params: int) -> float:
    """6N for the matmuls of forward+backward plus attention's 12*L*H*T (nanoGPT / PaLM appendix B)."""
    return 6 * n_params + 12 * LAYERS * WIDTH * SEQ


def matmul_peak(device: str, dtype_name: str = "float32", n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a large square matmul: the practical ceiling on this machine."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def bare_loop(steps: int, device: str, warmup: int = 5) -> tuple[float, int]:
    """The ceiling: model(ids, labels).loss, backward, clip, AdamW step; random token batches."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_positions=SEQ, vocab_size=VOCAB,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(VOCAB, (steps + warmup, BATCH, SEQ))
    for i in range(steps + warmup):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        ids = data[i].to(device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return steps * BATCH * SEQ / elapsed, sum(p.numel() for p in model.parameters())


def ptcli_run(steps: int, device: str, threads: int, log_every: int = 10, extra: tuple = ()) -> float:
    """Tokens/s of `ptcli pretrain` on the same shape, from metrics.jsonl (first log window = warm-up, dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "ptcli", "pretrain", "model=gpt2-tiny", f"model.layers={LAYERS}",
                f"model.heads={HEADS}", f"model.hidden={WIDTH}", f"model.vocab_size={VOCAB}",
                f"model.max_positions={SEQ}", f"dataset.seq_len={SEQ}", f"train.batch_size={BATCH}",
                f"train.max_steps={steps + log_every}", f"train.log_every={log_every}", "train.eval_every=1000000",
                "train.save_every=1000000", f"device={device}", f"device.threads={threads}",
                "scheduler=constant", f"hydra.run.dir={tmp}/run", *extra]
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PTCLI_CACHE_DIR": tmp})
        if proc.returncode:
            sys.exit(f"ptcli failed:\n{proc.stderr}")
        return logged_throughput(Path(tmp, "run", "metrics.jsonl"), log_every * BATCH * SEQ)


def logged_throughput(metrics: Path, tokens_per_window: int) -> float:
    """Tokens/s over the train log windows of a metrics.jsonl, the first (warm-up) dropped: total tokens over
    total time, not a mean of rates."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    windows = [r for r in records if r["kind"] == "train"][1:]
    return len(windows) * tokens_per_window / sum(tokens_per_window / r["tokens_per_s"] for r in windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import statistics

    import torch

    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.device, "float32" if args.device == "cpu" else "bfloat16")
    plain_loss = ("objective.chunked_loss=false",)
    rounds = []
    for i in range(args.rounds):
        arms = [("bare", lambda: bare_loop(args.steps, args.device)),
                ("ptcli", lambda: ptcli_run(args.steps, args.device, args.threads)),
                ("plain", lambda: ptcli_run(args.steps, args.device, args.threads, extra=plain_loss))]
        got = {}
        for name, arm in (arms if i % 2 == 0 else arms[::-1]):
            got[name] = arm()
        (bare, n_params), ours, plain = got["bare"], got["ptcli"], got["plain"]
        rounds.append((bare, ours, plain))
        print(f"round {i + 1}: bare {bare:,.0f} tokens/s, ptcli {ours:,.0f} (ratio {ours / bare:.3f}), "
              f"ptcli with the plain loss {plain:,.0f} (ratio {plain / bare:.3f})", flush=True)
    per_token = flops_per_token(n_params)
    bare, ours, plain = (statistics.median(r[k] for r in rounds) for k in range(3))
    print(f"workload: GPT-2 {LAYERS}L {HEADS}H {WIDTH}w, seq {SEQ}, batch {BATCH}, vocab {VOCAB}, "
          f"{n_params / 1e6:.2f}M params, {args.threads} threads, {args.device}, {args.steps} timed steps, "
          f"{args.rounds} interleaved rounds")
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"bare PyTorch loop:        {bare:,.0f} tokens/s median  (MFU {bare * per_token / peak:.1%})")
    print(f"ptcli pretrain:           {ours:,.0f} tokens/s median  (MFU {ours * per_token / peak:.1%})")
    print(f"ptcli, plain loss:        {plain:,.0f} tokens/s median  (MFU {plain * per_token / peak:.1%})")
    print(f"ratio ptcli / bare: {statistics.median(o / b for b, o, _ in rounds):.3f}, "
          f"plain loss / bare: {statistics.median(p / b for b, _, p in rounds):.3f} (medians of the rounds' ratios)")

if __name__ == "__main__":
    main()
