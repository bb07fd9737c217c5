"""How close is `ptcli models recommend`'s training-memory estimate to a real run? (issue #18 item 9)

For every shipped model config (or the ones named), a fresh process builds the model from the config, records its
RSS, trains a few steps with AdamW on random data of the task's shape (causal LMs as ptcli trains them: fused
activations and the chunked loss), and reports its peak RSS minus that baseline
(the process's own imports and data excluded). The estimate (ptcli.models.memory) comes from the config alone.
    python scripts/check_memory_estimates.py                       # every shipped config, a table on stdout
    python scripts/check_memory_estimates.py bert-tiny gpt2-tiny --batch 8 --seq 64 --json out.json
Needs no GPU and no download (Hub-named configs are built from their families' default sizes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def measure(name: str, task: str, batch: int, seq: int, strategy: str, steps: int) -> dict:
    """In this (fresh) process: build, record RSS, train ``steps`` steps, return the peak RSS delta."""
    import resource

    import psutil
    import torch

    from ptcli.models.memory import CHUNKED_TASKS, build_for_task, trainable_after

    torch.set_num_threads(1)
    torch.manual_seed(0)
    inputs = None
    model, inputs = build_for_task(name, task, batch, seq, device="cpu")
    base = psutil.Process().memory_info().rss
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = trainable_after(model, strategy, task)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    if task in CHUNKED_TASKS:  # as ptcli trains a causal LM: fused activations, the chunked loss
        from ptcli.models.kernels import fuse_activations
        from ptcli.objectives.linear_ce import causal_lm_loss

        fuse_activations(model)
        ids = inputs["input_ids"]
        labels = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
    for _ in range(steps):
        if task in CHUNKED_TASKS:
            out = causal_lm_loss(model, labels, input_ids=ids)
            (out.sum / out.count).backward()
        else:
            model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # the model itself was allocated before the baseline: add its weights back (they are part of training memory)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"measured_bytes": max(peak, before) - base + weights, "baseline_rss": base}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="shipped model configs (default: all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--strategy", default="full", choices=["full", "lora", "probe"])
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "TASK", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, task, strategy = args.child
        print(json.dumps(measure(name, task, args.batch, args.seq, strategy, args.steps)))
        return 0

    from ptcli.models.memory import default_task, estimate, shipped_models

    rows = []
    for name in args.models or shipped_models():
        task = default_task(name)
        if task is None:
            continue
        est = estimate(name, task, batch=args.batch, seq=args.seq, strategy=args.strategy)
        proc = subprocess.run([sys.executable, __file__, "--child", name, task, args.strategy, "--batch",
                               str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            print(f"{name}: the measurement failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        measured = json.loads(proc.stdout.strip().splitlines()[-1])["measured_bytes"]
        rows.append({"model": name, "task": task, "strategy": args.strategy, "batch": args.batch, "seq": args.seq,
                     "parameters": est["parameters"], "estimate_bytes": est["train_bytes"],
                     "measured_bytes": measured, "ratio": round(est["train_bytes"] / measured, 3)})
        r = rows[-1]
        print(f"{name:14s} {task:22s} {r['parameters'] / 1e6:8.2f}M  estimate {r['estimate_bytes'] / 2**20:9.1f} MiB"
              f"  measured {measured / 2**20:9.1f} MiB  ratio {r['ratio']:.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    off = [r for r in rows if not 0.7 <= r["ratio"] <= 1.3]
    print(f"{len(rows) - len(off)} of {len(rows)} within 30%" + (f"; off: {[r['model'] for r in off]}" if off else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
