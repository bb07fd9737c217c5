#!/usr/bin/env bash
# Compression on SST-2 with ptcli's own commands (docs/results.md, "Compression"): a MiniLM teacher, students
# trained with and without distillation at the same budget, head pruning with recovery fine-tuning, and int8
# quantization, each reported before/after. Run from the repository root with ../shared/data beside it:
#   bash scripts/compress_sst2.sh [out_dir]        (about an hour on a quiet 2-core CPU)
# Every run writes its own directory under out_dir; the numbers come from their summary.json / compression.json.
set -euo pipefail
OUT=${1:-outputs/compress-sst2}
DATA=${SST2:-../shared/data/sst2/train.tsv}
PTCLI=${PTCLI:-ptcli}
SST2=(experiment=bert-sst2 "dataset.files=[$DATA]" device=cpu train.eval_every=400 train.save_every=400)

# 1. the teacher: all-MiniLM-L6-v2 fine-tuned for 400 steps (22.7M parameters)
$PTCLI finetune "${SST2[@]}" model=minilm optim.lr=5e-5 train.max_steps=400 run.out_dir="$OUT/teacher"
T=$OUT/teacher/finetune/latest

# 2. a small student (4 layers, 128 wide, the teacher's WordPiece vocabulary: 4.4M parameters) from scratch,
#    800 steps, with the task loss alone and with distillation (alpha 0.7, T 2)
SMALL=(model=bert-tiny model.vocab_size=30522 "tokenizer.path=$T" optim.lr=1e-3 scheduler.warmup_ratio=0.1
       train.max_steps=800 train.eval_every=800 train.save_every=800)
$PTCLI finetune "${SST2[@]}" "${SMALL[@]}" run.out_dir="$OUT/small-plain"
$PTCLI finetune "${SST2[@]}" "${SMALL[@]}" "distill.teacher=$T" distill.alpha=0.7 run.out_dir="$OUT/small-distilled"
#    ... and both for 2,000 steps (a whole epoch; the plain run then costs what the 800-step distilled one did)
$PTCLI finetune "${SST2[@]}" "${SMALL[@]}" train.max_steps=2000 train.eval_every=2000 train.save_every=2000 \
    run.out_dir="$OUT/small-plain-2000"
$PTCLI finetune "${SST2[@]}" "${SMALL[@]}" train.max_steps=2000 train.eval_every=2000 train.save_every=2000 \
    "distill.teacher=$T" distill.alpha=0.7 run.out_dir="$OUT/small-distilled-2000"

# 3. a half-depth student: the teacher's layers 0, 2, 4 (DistilBERT's initialisation), 400 steps, task loss alone
#    (alpha 0) and distilled with DistilBERT's soft/hard/cosine weighting 5/2/1
HALF=("distill.teacher=$T" distill.init_from_teacher=true optim.lr=5e-5 train.max_steps=400)
$PTCLI finetune "${SST2[@]}" "${HALF[@]}" distill.alpha=0 run.out_dir="$OUT/half-plain"
$PTCLI finetune "${SST2[@]}" "${HALF[@]}" distill.alpha=0.714 distill.hidden_weight=0.143 run.out_dir="$OUT/half-distilled"

# 4. pruning: 25% of the teacher's attention heads (gradient importance), then one short recovery fine-tuning
$PTCLI prune "model.path=$T" method=heads amount=0.25 run.out_dir="$OUT/pruned"
$PTCLI finetune "${SST2[@]}" "model.path=$OUT/pruned/prune/latest" optim.lr=2e-5 train.max_steps=200 \
    train.eval_every=200 train.save_every=200 run.out_dir="$OUT/pruned-recovered"

# 5. quantization: torch dynamic int8 and torchao int8 weight-only
$PTCLI quantize "model.path=$T" method=dynamic-int8 run.out_dir="$OUT/quantized"
$PTCLI quantize "model.path=$T" method=int8-weight run.out_dir="$OUT/quantized-torchao"
