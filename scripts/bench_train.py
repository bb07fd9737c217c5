"""Training throughput: `ptcli pretrain` against a bare PyTorch loop on the same model and batch shape.

Fixed workload (issue #3): GPT-2 style, 4 layers, 4 heads, 256 wide, seq 256, batch 8, vocab 8192, fp32,
2 threads. Prints tokens/s for both, their ratio, and the model FLOPs utilisation against the peak of a
large fp32 matmul measured in the same process.

Arms of each round: the bare loop on the Hugging Face model; ``ptcli pretrain`` as it is (the chunked causal-LM loss,
the fused tanh GELU); ptcli with ``objective.chunked_loss=false``; ptcli with ``device.fused_kernels=false``; and a
GPT written directly in PyTorch in nanoGPT's design (one fused QKV projection, SDPA, the same shape, tied output
layer), trained by the same bare loop: the model-code ceiling beside the Hugging Face one. Rounds are interleaved,
and the order of the arms alternates (forward, then reversed), so that a busy spell of the machine and any warm-up
of the CPU hit all; the ratios reported are medians of the rounds' ratios.

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


def handwritten_gpt():
    """GPT-2's shape written directly in PyTorch, nanoGPT's design: pre-norm blocks, one QKV projection, causal SDPA,
    tanh GELU, tied output layer; ``model(ids, labels=ids).loss`` like a Hugging Face model."""
    import types

    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
            self.fc, self.out = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (z.view(b, t, HEADS, -1).transpose(1, 2) for z in self.qkv(self.ln_1(x)).split(WIDTH, dim=2))
            x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1))
            return x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VOCAB, WIDTH), nn.Embedding(SEQ, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.ln_f, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, VOCAB, bias=False)
            self.head.weight = self.wte.weight

        def forward(self, input_ids, labels):
            x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
            for block in self.blocks:
                x = block(x)
            logits = self.head(self.ln_f(x))
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
            return types.SimpleNamespace(loss=loss, logits=logits)

    return GPT()


def bare_loop(steps: int, device: str, warmup: int = 5, handwritten: bool = False) -> tuple[float, int]:
    """The ceiling: model(ids, labels).loss, backward, clip, AdamW step; random token batches. ``handwritten``: the
    GPT written directly in PyTorch instead of the Hugging Face model."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_positions=SEQ, vocab_size=VOCAB,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = (handwritten_gpt() if handwritten else transformers.GPT2LMHeadModel(config)).to(device)
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
    arms = {"bare": ("bare PyTorch loop, HF model", lambda: bare_loop(args.steps, args.device)[0]),
            "ptcli": ("ptcli pretrain", lambda: ptcli_run(args.steps, args.device, args.threads)),
            "plain": ("ptcli, plain loss", lambda: ptcli_run(args.steps, args.device, args.threads,
                                                             extra=("objective.chunked_loss=false",))),
            "unfused": ("ptcli, HF's written-out GELU", lambda: ptcli_run(args.steps, args.device, args.threads,
                                                                          extra=("device.fused_kernels=false",))),
            "handwritten": ("bare loop, handwritten GPT", lambda: bare_loop(args.steps, args.device,
                                                                            handwritten=True)[0])}
    rounds = []
    for i in range(args.rounds):
        got = {name: arms[name][1]() for name in (list(arms) if i % 2 == 0 else list(arms)[::-1])}
        rounds.append(got)
        print(f"round {i + 1}: " + ", ".join(f"{name} {v:,.0f} tokens/s ({v / got['bare']:.3f})"
                                              for name, v in got.items()), flush=True)
    import transformers

    n_params = sum(p.numel() for p in transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_positions=SEQ, vocab_size=VOCAB)).parameters())
    per_token = flops_per_token(n_params)
    print(f"workload: GPT-2 {LAYERS}L {HEADS}H {WIDTH}w, seq {SEQ}, batch {BATCH}, vocab {VOCAB}, "
          f"{n_params / 1e6:.2f}M params, {args.threads} threads, {args.device}, {args.steps} timed steps, "
          f"{args.rounds} interleaved rounds")
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s")
    for name, (label, _) in arms.items():
        median = statistics.median(r[name] for r in rounds)
        ratio = statistics.median(r[name] / r["bare"] for r in rounds)
        print(f"{label + ':':<32}{median:>8,.0f} tokens/s median  (MFU {median * per_token / peak:.1%})  "
              f"ratio to the bare loop {ratio:.3f} (median of the rounds')")

if __name__ == "__main__":
    main()
