"""Generation speed: ptcli's generation path against `model.generate` called directly, and batching's gain.

Workload: a GPT-2 built from config (6 layers, 256 wide, 8 heads, 512 positions, random weights) with a BPE
tokenizer of 4096 tokens trained on Tiny Shakespeare (or the embedded corpus when ../shared/data is absent);
prompts are lines of that text. Three measurements:

1. In process: tokens/s of ptcli's Decoder (tokenize, pad, generate, finish reasons, decode) against
   `model.generate(**tokenizer(prompts, padding=True))` on the same model, prompts and settings, greedy and
   sampled, batch 1 and batch 8; repeats interleaved, median reported. Ratio = ptcli / direct. Tokens/s counts
   rows x decoding steps (the work done), so that sampled rows ending at different steps do not skew it.
2. The whole command: wall time of `ptcli generate model.path=... prompt=...` (process start, imports,
   loading included), against its own generation time from summary.json.
3. 64 prompts on stdin with batch_size=8 against batch_size=1 (generation time from summary.json).

Run: .venv/bin/python scripts/bench_generate.py [--new-tokens 64] [--repeats 5] [--threads 1]
(one thread: on a 2-core machine shared with other jobs, two torch threads spin against each other and
small-batch decoding runs 10x slower)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare" / "train.txt"


def texts() -> list[str]:
    if SHAKESPEARE.exists():
        return [line for line in SHAKESPEARE.read_text().splitlines() if len(line.split()) >= 4]
    from ptcli.data.corpus import generate_corpus

    return [s.strip() + "." for d in generate_corpus(0, 1_000_000).documents for s in d.split(".") if len(s) > 20]


def build_model(folder: Path, lines: list[str], layers: int = 6, hidden: int = 256) -> None:
    import torch
    import transformers

    from ptcli.processing.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(lines, "bpe", 4096)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=hidden, n_head=8, n_positions=512,
                                     vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def in_process(folder: Path, prompts: list[str], new_tokens: int, repeats: int, sample: bool, batch: int) -> dict:
    """Median tokens/s of ptcli's Decoder and of a direct model.generate on the same batches."""
    import torch
    from omegaconf import OmegaConf

    from ptcli.config.validate import validate
    from ptcli.inference.decoding import Decoder
    from ptcli.inference.loading import load_for_inference
    from ptcli.inference.prompts import Prompt
    from ptcli.launch.compose import compose

    overrides = [f"model.path={folder}", "device=cpu", f"max_new_tokens={new_tokens}", f"batch_size={batch}"]
    if sample:
        overrides += ["do_sample=true", "top_k=50"]
    cfg = OmegaConf.create(validate("generate", compose("generate", overrides)))
    loaded = load_for_inference(cfg.model, cfg.device, "auto", log=lambda m: None)
    decoder = Decoder(loaded, cfg, log=print)
    model, tokenizer = loaded.model, loaded.tokenizer
    batch_prompts = [Prompt(i, text, "bench") for i, text in enumerate(prompts[:batch])]

    # Work = rows x decoding steps: a batch runs until its longest row ends, and sampled rows (different draws on
    # each side) may hit end-of-text at different steps, which would otherwise skew tokens/s either way.
    def ours() -> int:
        return len(batch_prompts) * max(c.new_tokens for c in decoder.generate(batch_prompts))

    def direct() -> int:
        enc = tokenizer([p.text for p in batch_prompts], return_tensors="pt", padding=True)
        kwargs = {"do_sample": True, "top_k": 50} if sample else {"do_sample": False}
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs)
        return len(batch_prompts) * (out.shape[1] - enc["input_ids"].shape[1])

    rates: dict[str, list[float]] = {"ptcli": [], "direct": []}
    ours(), direct()  # warm-up
    for _ in range(repeats):
        for name, fn in (("direct", direct), ("ptcli", ours)):
            start = time.perf_counter()
            tokens = fn()
            rates[name].append(tokens / (time.perf_counter() - start))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {**medians, "ratio": medians["ptcli"] / medians["direct"]}


def command(folder: Path, args: list[str], stdin: str | None, tmp: str, threads: int) -> tuple[float, dict]:
    """Wall time of one `ptcli generate` process and its summary.json."""
    run_dir = Path(tmp) / f"run-{time.monotonic_ns()}"
    argv = [sys.executable, "-m", "ptcli", "generate", f"model.path={folder}", "device=cpu",
            f"device.threads={threads}", "output=jsonl", f"hydra.run.dir={run_dir}", *args]
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env={**os.environ, "PTCLI_CACHE_DIR": tmp})
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"ptcli generate failed:\n{proc.stderr}")
    return wall, json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    lines = texts()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-6x256"
        build_model(folder, lines)
        prompts = lines[100:164]
        print(f"model: GPT-2 6 layers x 256, random weights; {args.new_tokens} new tokens; {args.threads} threads")
        print("\n| decoding | batch | direct model.generate (tok/s) | ptcli generate path (tok/s) | ratio |")
        print("|---|---|---|---|---|")
        for sample in (False, True):
            for batch in (1, 8):
                r = in_process(folder, prompts, args.new_tokens, args.repeats, sample, batch)
                print(f"| {'sampling (top-k 50)' if sample else 'greedy'} | {batch} | {r['direct']:,.0f} | "
                      f"{r['ptcli']:,.0f} | {r['ratio']:.3f} |", flush=True)
        wall, summary = command(folder, ["prompt=First Citizen:", f"max_new_tokens={args.new_tokens}"], None, tmp,
                                args.threads)
        print(f"\nwhole command, one prompt: {wall:.2f} s wall, of which generation {summary['seconds']:.2f} s "
              f"({summary['new_tokens']} tokens)")
        stdin = "\n".join(prompts) + "\n"
        times = {}
        for batch in (1, 8):
            wall, summary = command(folder, [f"batch_size={batch}", f"max_new_tokens={args.new_tokens}"], stdin, tmp,
                                    args.threads)
            times[batch] = summary
            print(f"64 prompts from stdin, batch_size={batch}: generation {summary['seconds']:.2f} s, "
                  f"{summary['tokens_per_second']:,.0f} tokens/s ({summary['new_tokens']} tokens); {wall:.2f} s wall")
        print(f"speed-up batch 8 / batch 1: {times[1]['seconds'] / times[8]['seconds']:.2f}x")


if __name__ == "__main__":
    main()
