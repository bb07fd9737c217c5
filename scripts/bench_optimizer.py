"""AdamW's step on this device: the per-tensor loop, the multi-tensor (foreach) and the fused kernel (issue #19).

The parameters are those of real model shapes (bench_train's GPT-2, MiniLM, SmolLM2-135M) with random gradients;
each round times every implementation in alternating order and the median per step is reported.

Run: .venv/bin/python scripts/bench_optimizer.py [--device cpu] [--threads 2] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

SHAPES = {  # name -> transformers config class, arguments
    "gpt2-4x256 (6.5M)": ("GPT2Config", {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256,
                                          "vocab_size": 8192}),
    "minilm (22.7M)": ("BertConfig", {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 12,
                                      "intermediate_size": 1536, "vocab_size": 30522}),
    "smollm2 (135M)": ("LlamaConfig", {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
                                       "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                                       "tie_word_embeddings": True}),
}
KINDS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_seconds(params, kind: str, steps: int, device: str) -> float:
    import torch

    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **KINDS[kind])
    for _ in range(2):
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    for name, (cls, kwargs) in SHAPES.items():
        model = transformers.AutoModel.from_config(getattr(transformers, cls)(**kwargs)).to(args.device)
        params = [p for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        times: dict[str, list[float]] = {k: [] for k in KINDS}
        for r in range(args.rounds):
            for kind in (list(KINDS) if r % 2 == 0 else list(KINDS)[::-1]):
                times[kind].append(step_seconds(params, kind, args.steps, args.device))
        medians = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}, {len(params)} tensors, {args.device}, {args.threads} threads: " + ", ".join(
            f"{k} {1e3 * v:.1f} ms" for k, v in medians.items()) +
            f"; fused/loop {medians['loop'] / medians['fused']:.2f}x, foreach/loop "
            f"{medians['loop'] / medians['foreach']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
