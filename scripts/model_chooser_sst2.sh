#!/usr/bin/env bash
# Does `ptcli models recommend` choose well? (issue #18 item 9) With 500 labelled SST-2 sentences it ranks MiniLM
# first; this fine-tunes MiniLM all three ways it ranks (LoRA, full fine-tuning, a linear probe), each at
# its usual learning rate for the same 5 epochs, and scores them on 3,000 held-out sentences (the last rows of the
# file, as in scripts/pretraining_pays_sst2.sh).
#   bash scripts/model_chooser_sst2.sh [out_dir]                          (about 10 minutes on 2 cores)
#   ROWS=40 EPOCHS=1 PTCLI_ARGS=device.threads=1 bash scripts/model_chooser_sst2.sh /tmp/chooser   (a smoke run)
# The accuracies are in $OUT/<strategy>/finetune/latest/summary.json (best_val.accuracy), printed at the end.
set -euo pipefail
OUT=${1:-outputs/model-chooser-sst2}
DATA=${SST2:-../shared/data/sst2/train.tsv}
ROWS=${ROWS:-500}
EPOCHS=${EPOCHS:-5}
PTCLI=${PTCLI:-ptcli}
PARALLEL=${PARALLEL:-0}
read -ra EXTRA <<< "${PTCLI_ARGS:-}"
mkdir -p "$OUT/data"
awk -v last="$(( $(wc -l < "$DATA") - 3000 ))" 'NR == 1 || NR > last' "$DATA" > "$OUT/data/heldout.tsv"
awk -v n="$ROWS" 'NR <= n + 1' "$DATA" > "$OUT/data/train.tsv"

$PTCLI models recommend task=classification "rows=$ROWS" memory=8GB seq_len=66 batch_size=16 --output json \
    > "$OUT/recommend.jsonl"
head -n 3 "$OUT/recommend.jsonl"

COMMON=("dataset.files=[$OUT/data/train.tsv]" "dataset.val_files=[$OUT/data/heldout.tsv]" dataset.text_column=sentence
        model=minilm dataset.seq_len=66 train.batch_size=16 "train.epochs=$EPOCHS" train.max_steps=null
        train.best_metric=accuracy scheduler.warmup_ratio=0.1 "${EXTRA[@]}")
arm() {
    local name=$1; shift
    if [[ $PARALLEL == 1 ]]; then "$@" > "$OUT/$name.log" 2>&1 & else "$@"; fi
}
arm lora $PTCLI finetune "${COMMON[@]}" +peft=lora optim.lr=1e-3 run.out_dir="$OUT/lora"
arm full $PTCLI finetune "${COMMON[@]}" optim.lr=5e-5 run.out_dir="$OUT/full"
arm probe $PTCLI finetune "${COMMON[@]}" tune.head_only=true optim.lr=1e-3 run.out_dir="$OUT/probe"
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
if [[ $failed == 1 ]]; then echo "an arm failed: see $OUT/*.log" >&2; exit 1; fi
for arm in lora full probe; do
    python3 -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[2], s['best_val']['accuracy'])" \
        "$OUT/$arm/finetune/latest/summary.json" "$arm"
done
