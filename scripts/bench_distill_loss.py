"""Peak memory and time of causal-LM distillation's loss (task cross-entropy + KL to a teacher), plain against
chunked (``linear_ce.linear_distillation``), forward and backward through both output layers only.

Shapes of SmolLM2-135M distilling into itself: ROWS positions (4 x 1,024), hidden 576, vocabulary 49,152, fp32.
Each arm runs in a fresh process (peak = its maximum resident set, less the resident set before the loss).

Run: .venv/bin/python scripts/bench_distill_loss.py [--rows 4096] [--hidden 576] [--vocab 49152] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def arm(kind: str, rows: int, hidden: int, vocab: int) -> dict:
    import torch
    import torch.nn.functional as F

    from ptcli.objectives.base import summed_cross_entropy
    from ptcli.objectives.linear_ce import linear_distillation

    torch.manual_seed(0)
    h = torch.randn(rows, hidden, requires_grad=True)
    th = torch.randn(rows, hidden)
    head, teacher = torch.nn.Linear(hidden, vocab, bias=False), torch.nn.Linear(hidden, vocab, bias=False)
    teacher.requires_grad_(False)
    y = torch.randint(0, vocab, (rows,))
    T, alpha = 2.0, 0.5
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if kind == "plain":
        logits = head(h)
        with torch.no_grad():
            t = teacher(th)
        soft = F.kl_div(F.log_softmax(logits.float() / T, -1), F.log_softmax(t.float() / T, -1), log_target=True,
                        reduction="sum")
        total = (1 - alpha) * summed_cross_entropy(logits, y).sum + alpha * T ** 2 * soft
    else:
        total = linear_distillation(h, head, y, th, teacher, T, 1 - alpha, alpha * T ** 2)[0]
    total.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"loss": total.item(), "seconds": seconds, "peak_mib": (peak - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", choices=["plain", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, args.rows, args.hidden, args.vocab)))
        return
    for r in range(args.rounds):
        for kind in ("plain", "chunked"):
            out = subprocess.run([sys.executable, __file__, "--arm", kind, "--rows", str(args.rows), "--hidden",
                                  str(args.hidden), "--vocab", str(args.vocab)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-2000:])
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"round {r + 1} {kind:8s} loss {res['loss']:.6e}  {res['seconds']:6.2f} s  "
                  f"peak +{res['peak_mib']:,.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
