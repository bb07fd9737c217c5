"""Where a training step's time goes: torch.profiler's top operators for the fixed pretraining workload (GPT-2 style,
4 layers x 256 wide, 4 heads, block 256, batch 8, vocabulary 8,192, fp32, dropout 0 as in
`model=gpt2-tiny`), the step ptcli's loop runs: GPT-2's GELU as torch's fused kernel (``device.fused_kernels``), the
chunked causal-LM loss (``linear_ce.causal_lm_loss``), backward, gradient clipping, fused AdamW.

Run: .venv/bin/python scripts/profile_train.py [--compile] [--plain-loss] [--written-out-gelu] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--plain-loss", action="store_true", help="the plain loss instead of the chunked one")
    parser.add_argument("--written-out-gelu", action="store_true", help="keep Hugging Face's gelu_new modules")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile
    from transformers import GPT2Config, GPT2LMHeadModel

    from ptcli.models.kernels import fuse_activations
    from ptcli.objectives.linear_ce import causal_lm_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=256, n_positions=256, vocab_size=8192,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).train()
    if not args.written_out_gelu:
        fuse_activations(model)
    if args.compile:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    ids = torch.randint(0, 8192, (8, 256))
    labels = F.pad(ids[:, 1:], (0, 1), value=-100)

    def step():
        out = causal_lm_loss(model, labels, chunked=not args.plain_loss, input_ids=ids)
        (out.sum / out.count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up (and compilation)
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.steps} steps, {'compiled' if args.compile else 'eager'}, "
          f"{'written-out' if args.written_out_gelu else 'fused'} GELU, "
          f"{'plain' if args.plain_loss else 'chunked'} loss: {total / 1e3 / args.steps:,.0f} ms of operator time "
          "a step")
    print("| operator | self CPU ms / step | share | calls / step |")
    print("|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"| `{e.key}` | {e.self_cpu_time_total / 1e3 / args.steps:,.1f} | "
              f"{100 * e.self_cpu_time_total / total:.1f}% | {e.count / args.steps:g} |")


if __name__ == "__main__":
    main()
