"""Data-parallel throughput: `ptcli pretrain` under torchrun (DDP and FSDP) against bare PyTorch DDP/FSDP loops
on the same model, global batch and number of processes.

Workload: bench_train.py's GPT-2 (4 layers, 4 heads, 256 wide, seq 256, global batch 8, vocab 8192, fp32), here
as N processes of 1 thread each (gloo on CPU; nccl with --device cuda). Prints tokens/s for each and the ratios.

Run: .venv/bin/python scripts/bench_distributed.py [--nproc 2] [--steps 40] [--device cpu]
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
from bench_train import BATCH, HEADS, LAYERS, SEQ, VOCAB, WIDTH, logged_throughput  # noqa: E402

WARMUP = 5


def bare_worker(strategy: str, steps: int, device_type: str, out: str) -> None:
    """One rank of the ceiling: the bench_train loop with DDP or fully_shard (per block, then the root)."""
    import torch
    import torch.distributed as dist
    import transformers

    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(device_type, int(os.environ.get("LOCAL_RANK", 0))) if device_type == "cuda" else \
        torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_positions=SEQ, vocab_size=VOCAB,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).to(device)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    else:
        ids = [device.index] if device_type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(VOCAB, (steps + WARMUP, BATCH // world, SEQ))
    for i in range(steps + WARMUP):
        if i == WARMUP:
            dist.barrier()
            start = time.perf_counter()
        ids = data[i].to(device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device_type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    if rank == 0:
        Path(out).write_text(json.dumps({"tokens_per_s": steps * BATCH * SEQ / (time.perf_counter() - start)}))
    dist.destroy_process_group()


def torchrun(nproc: int, *args: str, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def bare(strategy: str, nproc: int, steps: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "bare.json")
        torchrun(nproc, __file__, "--worker", strategy, "--steps", str(steps), "--device", device, "--out", str(out))
        return json.loads(out.read_text())["tokens_per_s"]


def ptcli(strategy: str, nproc: int, steps: int, device: str, log_every: int = 10) -> float:
    """Tokens/s of `ptcli pretrain` from metrics.jsonl (the first log window, the warm-up, dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["model=gpt2-tiny", f"model.layers={LAYERS}", f"model.heads={HEADS}", f"model.hidden={WIDTH}",
                f"model.vocab_size={VOCAB}", f"model.max_positions={SEQ}", f"dataset.seq_len={SEQ}",
                f"train.batch_size={BATCH}", f"train.max_steps={steps + log_every}", f"train.log_every={log_every}",
                "train.eval_every=1000000", "train.save_every=1000000", f"device={device}", "device.threads=1",
                f"device.strategy={strategy}", "scheduler=constant", f"hydra.run.dir={tmp}/run"]
        if nproc == 1:
            proc = subprocess.run([sys.executable, "-m", "ptcli", "pretrain", *args], capture_output=True, text=True,
                                  env={**os.environ, "PTCLI_CACHE_DIR": tmp})
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
        else:
            torchrun(nproc, "-m", "ptcli", "pretrain", *args, env={"PTCLI_CACHE_DIR": tmp})
        return logged_throughput(Path(tmp, "run", "metrics.jsonl"), log_every * BATCH * SEQ)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        bare_worker(args.worker, args.steps, args.device, args.out)
        return
    print(f"workload: GPT-2 {LAYERS}L {HEADS}H {WIDTH}w, seq {SEQ}, global batch {BATCH}, vocab {VOCAB}, "
          f"{args.nproc} processes x 1 thread, {args.device}, {args.steps} timed steps")
    one = ptcli("single", 1, args.steps, args.device)
    print(f"ptcli, 1 process:          {one:,.0f} tokens/s")
    for strategy in ("ddp", "fsdp"):
        ceiling = bare(strategy, args.nproc, args.steps, args.device)
        ours = ptcli(strategy, args.nproc, args.steps, args.device)
        print(f"bare PyTorch {strategy:4}:         {ceiling:,.0f} tokens/s")
        print(f"ptcli {strategy:4}:                {ours:,.0f} tokens/s   ratio ptcli / bare {ours / ceiling:.3f}, "
              f"x{ours / one:.2f} of 1 process")


if __name__ == "__main__":
    main()
