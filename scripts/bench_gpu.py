"""GPU training benchmark, one command (issue #19): tokens/s, MFU and peak memory of `ptcli pretrain` against a
bare PyTorch loop on the same Hugging Face model, for GPT-2 124M and a ~350M Llama in bf16, with torch.compile off
and on, on one GPU and (with several visible) DDP on all of them. Writes bench_gpu.json and bench_gpu.md.

    bash scripts/bench_gpu.sh [OUT_DIR]                 # about 6-8 minutes on one H100/H200
    bash scripts/bench_gpu.sh OUT_DIR --cpu-smoke       # the same code paths on CPU with tiny shapes (a test runs it)

The bare loop is the ceiling for the same model: random token batches, bf16 autocast, fused AdamW, gradient
clipping, ``model.compile()`` when compile is on. ptcli runs on its embedded corpus (a tokenizer trained on it;
the model's vocabulary as configured). MFU counts 6N + 12·L·d·T FLOPs per token (nanoGPT / PaLM appendix B)
against the GPU's dense bf16 peak from ptcli's table (ptcli.training.mfu).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> (ptcli model overrides, transformers config class and arguments, seq, per-GPU batch)
MODELS = {
    "gpt2-124m": (["model=gpt2-small", "model.vocab_size=50304"], "GPT2Config",
                  {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50304,
                   "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}, 1024, 16),
    "llama-350m": (["model=llama-small", "model.layers=24", "model.hidden=1024", "model.heads=16", "model.kv_heads=8",
                    "model.intermediate=2816", "model.vocab_size=32000", "model.max_positions=1024"], "LlamaConfig",
                   {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16,
                    "num_key_value_heads": 8, "intermediate_size": 2816, "vocab_size": 32000,
                    "max_position_embeddings": 1024, "tie_word_embeddings": True}, 1024, 16),
}
# --cpu-smoke: the same two families, tiny
SMOKE = {
    "gpt2-124m": (["model=gpt2-tiny", "model.layers=2", "model.heads=2", "model.hidden=64", "model.vocab_size=512"],
                  "GPT2Config", {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 64, "vocab_size": 512,
                                 "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}, 32, 4),
    "llama-350m": (["model=llama-tiny", "model.layers=2", "model.heads=2", "model.kv_heads=1", "model.hidden=64",
                    "model.intermediate=128", "model.vocab_size=512", "model.max_positions=64"], "LlamaConfig",
                   {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
                    "intermediate_size": 128, "vocab_size": 512, "max_position_embeddings": 64,
                    "tie_word_embeddings": True}, 32, 4),
}


def flops_per_token(n_params: int, layers: int, width: int, seq: int) -> float:
    return 6 * n_params + 12 * layers * width * seq


def shape(config_cls: str, kwargs: dict) -> tuple[int, int]:
    if config_cls == "GPT2Config":
        return kwargs["n_layer"], kwargs["n_embd"]
    return kwargs["num_hidden_layers"], kwargs["hidden_size"]


# ---- the bare loop (one process, or one rank under torchrun)
def bare_worker(spec: dict) -> None:
    import torch
    import transformers

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = spec["device"] == "cuda"
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    config = getattr(transformers, spec["config_cls"])(**spec["config"])
    model = transformers.AutoModelForCausalLM.from_config(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if spec["compile"]:
        model.compile()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=cuda)
    batch, seq, steps, warmup = spec["batch"], spec["seq"], spec["steps"], spec["warmup"]
    vocab = spec["config"]["vocab_size"]
    data = torch.randint(vocab, (steps + warmup, batch, seq))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    start = time.perf_counter()
    for i in range(steps + warmup):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        ids = data[i].to(device, non_blocking=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if rank == 0:
        peak = torch.cuda.max_memory_allocated(device) if cuda else None
        Path(spec["out"]).write_text(json.dumps({"tokens_per_s": steps * batch * seq * world / elapsed,
                                                 "n_params": n_params, "peak_bytes": peak}))
    if world > 1:
        torch.distributed.destroy_process_group()


def launcher(nproc: int) -> list[str]:
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [sys.executable]


def bare(name: str, models: dict, compile_: bool, nproc: int, args, tmp: Path) -> dict:
    _, config_cls, config, seq, batch = models[name]
    out = tmp / f"bare-{name}-{compile_}-{nproc}.json"
    spec = {"config_cls": config_cls, "config": config, "seq": seq, "batch": batch, "steps": args.steps,
            "warmup": args.warmup, "compile": compile_, "device": args.device, "out": str(out)}
    command = [*launcher(nproc), str(Path(__file__).resolve()), "--bare-worker", json.dumps(spec)]
    run(command, tmp)
    result = json.loads(out.read_text())
    layers, width = shape(config_cls, config)
    result["flops_per_token"] = flops_per_token(result["n_params"], layers, width, seq)
    return result


def ours(name: str, models: dict, compile_: bool, nproc: int, args, tmp: Path) -> dict:
    overrides, config_cls, config, seq, batch = models[name]
    run_dir = tmp / f"ptcli-{name}-{compile_}-{nproc}"
    log_every = max(1, args.steps // 3)
    command = [*launcher(nproc), "-m", "ptcli", "pretrain",
               *overrides, f"dataset.seq_len={seq}", f"train.batch_size={batch * nproc}",
               f"train.max_steps={args.warmup + args.steps}", f"train.log_every={log_every}",
               "train.eval_every=1000000", "train.save_every=1000000", "scheduler=constant",
               f"device={args.device}", f"device.compile={str(compile_).lower()}", f"hydra.run.dir={run_dir}",
               *(["device.precision=bf16"] if args.device == "cuda" else ["device.precision=fp32"]),
               *(["device.threads=2"] if args.device == "cpu" else [])]
    run(command, tmp)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if r["kind"] == "train" and r["step"] > args.warmup] or \
        [r for r in records if r["kind"] == "train"][-1:]
    summary = json.loads((run_dir / "summary.json").read_text())
    rates = [r["tokens_per_s"] for r in windows]
    layers, width = shape(config_cls, config)
    n_params = summary.get("parameters") or summary.get("params")
    return {"tokens_per_s": sum(rates) / len(rates), "peak_bytes": summary.get("peak_gpu_bytes"),
            "mfu_logged": windows[-1].get("mfu"), "n_params": n_params,
            "flops_per_token": flops_per_token(n_params, layers, width, seq) if n_params else None}


def run(command: list[str], tmp: Path) -> None:
    env = {**os.environ, "PTCLI_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(command)}\n{proc.stderr[-4000:]}")


def peak_flops(device: str) -> tuple[float | None, str]:
    if device != "cuda":
        return None, "CPU: no MFU"
    import torch

    from ptcli.training.mfu import GPU_PEAKS

    name = torch.cuda.get_device_name(0)
    for key, (half, _) in GPU_PEAKS.items():
        if key in name:
            return half, f"{name}, {half / 1e12:.0f} TFLOP/s dense bf16"
    return None, f"{name}: peak unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="bench-gpu")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU, compile off: checks the paths")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--bare-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        return bare_worker(json.loads(args.bare_worker))
    import torch

    args.device = "cpu" if args.cpu_smoke else "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible: run on a GPU machine, or pass --cpu-smoke")
    models = SMOKE if args.cpu_smoke else MODELS
    args.steps = args.steps or (3 if args.cpu_smoke else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.cpu_smoke else 10)
    gpus = torch.cuda.device_count() if args.device == "cuda" else 1
    compiles = (False,) if args.cpu_smoke else (False, True)
    peak, peak_how = peak_flops(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        for name in models:
            for compile_ in compiles:
                for nproc in sorted({1, gpus}):
                    started = time.perf_counter()
                    b = bare(name, models, compile_, nproc, args, tmp)
                    o = ours(name, models, compile_, nproc, args, tmp)
                    row = {"model": name, "compile": compile_, "gpus": nproc,
                           "bare_tokens_per_s": b["tokens_per_s"], "ptcli_tokens_per_s": o["tokens_per_s"],
                           "ratio": o["tokens_per_s"] / b["tokens_per_s"],
                           "bare_mfu": b["tokens_per_s"] * b["flops_per_token"] / (peak * nproc) if peak else None,
                           "ptcli_mfu": o["mfu_logged"], "bare_peak_gib": (b["peak_bytes"] or 0) / 2**30 or None,
                           "ptcli_peak_gib": (o["peak_bytes"] or 0) / 2**30 or None, "params": b["n_params"],
                           "seconds": time.perf_counter() - started}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    report = {"device": peak_how, "steps": args.steps, "warmup": args.warmup, "cpu_smoke": args.cpu_smoke,
              "rows": rows}
    (out / "bench_gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench_gpu.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    def pct(v):
        return f"{100 * v:.1f}%" if v is not None else "-"

    def gib(v):
        return f"{v:.1f}" if v is not None else "-"

    lines = [f"Device: {report['device']}; {report['steps']} timed steps after {report['warmup']} warm-up"
             f"{' (CPU smoke: tiny shapes)' if report['cpu_smoke'] else ''}.", "",
             "| model | compile | GPUs | bare tokens/s | ptcli tokens/s | ptcli/bare | bare MFU | ptcli MFU "
             "| bare peak GiB | ptcli peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {'on' if r['compile'] else 'off'} | {r['gpus']} | "
                     f"{r['bare_tokens_per_s']:,.0f} | {r['ptcli_tokens_per_s']:,.0f} | {r['ratio']:.3f} | "
                     f"{pct(r['bare_mfu'])} | {pct(r['ptcli_mfu'])} | {gib(r['bare_peak_gib'])} | "
                     f"{gib(r['ptcli_peak_gib'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
