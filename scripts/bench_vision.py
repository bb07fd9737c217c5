"""Image training throughput: `ptcli finetune objective=image_classification` on JPEG class folders against bare
PyTorch loops on the same model (model=vit-mini: a 4-layer, 128-wide ViT on 32x32 images, 0.8M parameters) and
batch (64 images, AdamW, fp32).

Two bare loops: the *ceiling* trains on images decoded and processed once, before timing (no input pipeline at all);
the *decoding* loop opens each JPEG with Pillow and runs the same ViT image processor in the training process, as a
plain script would. ptcli decodes in its DataLoader (`train.workers`: 0 on a CPU by default, so in the training
process too; worker processes pay off where the model runs on a GPU). Rounds are interleaved and alternate which
side goes first; ratios are medians of the rounds'.

Run: .venv/bin/python scripts/bench_vision.py [--folder ../shared/data/cifar10] [--steps 40] [--rounds 3]
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

BATCH, SIZE, PATCH, LAYERS, HEADS, WIDTH, FFN = 64, 32, 4, 4, 4, 128, 512


def model_and_processor():
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=SIZE, patch_size=PATCH, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, hidden_size=WIDTH, intermediate_size=FFN,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=10)
    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    processor = cls(size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return transformers.ViTForImageClassification(config), processor


def listing(folder: Path) -> list[tuple[Path, int]]:
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    return [(f, i) for i, c in enumerate(classes) for f in sorted((folder / "train" / c).iterdir())]


def bare(folder: Path, steps: int, decode_in_loop: bool, warmup: int = 5) -> float:
    """Images/s of model(pixel_values, labels).loss, backward, clip, AdamW step."""
    import random

    import torch
    from PIL import Image

    model, processor = model_and_processor()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    files = listing(folder)
    random.Random(0).shuffle(files)

    def batch(i):
        chunk = [files[(i * BATCH + j) % len(files)] for j in range(BATCH)]
        images = [Image.open(f).convert("RGB") for f, _ in chunk]
        return processor(images, return_tensors="pt")["pixel_values"], torch.tensor([y for _, y in chunk])

    ready = None if decode_in_loop else [batch(i) for i in range(steps + warmup)]
    for i in range(steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        pixels, labels = batch(i) if decode_in_loop else ready[i]
        loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH / (time.perf_counter() - start)


def ptcli(folder: Path, steps: int, threads: int, log_every: int = 10) -> float:
    """Images/s from metrics.jsonl (the first log window, warm-up, dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "ptcli", "finetune", "objective=image_classification", "model=vit-mini",
                "dataset=imagefolder", f"dataset.path={folder}", f"train.batch_size={BATCH}", "train.epochs=null",
                f"train.max_steps={steps + log_every}", f"train.log_every={log_every}", "train.eval_every=1000000",
                "train.save_every=1000000", "device=cpu", f"device.threads={threads}", "scheduler=constant",
                f"hydra.run.dir={tmp}/run"]
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PTCLI_CACHE_DIR": tmp})
        if proc.returncode:
            sys.exit(f"ptcli failed:\n{proc.stderr[-3000:]}")
        records = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
        windows = [r for r in records if r["kind"] == "train"][1:]
        per_window = log_every * BATCH
        return len(windows) * per_window / sum(per_window / r["images_per_s"] for r in windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rounds = []
    for i in range(args.rounds):
        sides = [("ceiling", lambda: bare(args.folder, args.steps, False)),
                 ("decoding", lambda: bare(args.folder, args.steps, True)),
                 ("ptcli", lambda: ptcli(args.folder, args.steps, args.threads))]
        if i % 2:
            sides.reverse()
        result = {name: run() for name, run in sides}
        rounds.append(result)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in result.items())
              + f"; ptcli/ceiling {result['ptcli'] / result['ceiling']:.3f}", flush=True)
    print(f"workload: ViT {LAYERS}L {WIDTH}w, {SIZE}x{SIZE} images in {PATCH}x{PATCH} patches, batch {BATCH}, "
          f"JPEG class folders at {args.folder}, {args.threads} threads, {args.steps} timed steps, "
          f"{args.rounds} interleaved rounds")
    for name in ("ceiling", "decoding", "ptcli"):
        print(f"{name:>9}: {statistics.median(r[name] for r in rounds):,.0f} img/s median")
    for other in ("ceiling", "decoding"):
        ratio = statistics.median(r["ptcli"] / r[other] for r in rounds)
        print(f"ratio ptcli / {other}: {ratio:.3f} (median of the rounds' ratios)")


if __name__ == "__main__":
    main()
