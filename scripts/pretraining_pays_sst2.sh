#!/usr/bin/env bash
# Does pretraining pay? (issue #13) The same small encoder (4 layers x 256) three ways: no pretraining, masked-LM
# pretraining and ELECTRA pretraining on SST-2's sentences as unlabelled text, at equal pretraining compute (the
# same wall-clock budget on one machine: train.max_time), each then fine-tuned on the same 4,000 labelled sentences
# with the same budget, and scored on 3,000 held-out sentences that neither step ever saw.
#   bash scripts/pretraining_pays_sst2.sh [out_dir]           (BUDGET=2400 s of pretraining each: about 1.5 hours)
#   BUDGET=20 FT_STEPS=5 PTCLI_ARGS=device.threads=1 bash scripts/pretraining_pays_sst2.sh /tmp/pays   (a smoke run)
#   PARALLEL=1 PTCLI_ARGS=device.threads=1 bash scripts/pretraining_pays_sst2.sh   (the arms side by side, one core
#     each: both pretraining arms then share whatever else the machine is doing, so equal wall-clock stays equal
#     compute; the results in docs/results.md were made this way on a 2-core machine)
# The accuracies are in $OUT/ft-*/finetune/latest/summary.json (best_val.accuracy), printed at the end.
set -euo pipefail
OUT=${1:-outputs/pretraining-pays-sst2}
DATA=${SST2:-../shared/data/sst2/train.tsv}
BUDGET=${BUDGET:-2400}     # seconds of pretraining for MLM and for ELECTRA
FT_STEPS=${FT_STEPS:-375}  # fine-tuning steps of 32 sentences: 3 epochs of the 4,000
PTCLI=${PTCLI:-ptcli}
PARALLEL=${PARALLEL:-0}    # 1: run the pretraining arms (and then the fine-tuning arms) at the same time
read -ra EXTRA <<< "${PTCLI_ARGS:-}"  # overrides added to every command, e.g. PTCLI_ARGS="device.threads=1"

# The splits, by position in the file: the last 3,000 rows are held out; the first 4,000 are the labelled set; the
# unlabelled text is every row but the held-out ones (its labels are never read).
mkdir -p "$OUT/data"
LAST=$(( $(wc -l < "$DATA") - 3000 ))  # the last line of the rows that are not held out (line 1 is the header)
awk -v last="$LAST" 'NR == 1 || NR > last' "$DATA" > "$OUT/data/heldout.tsv"
awk 'NR <= 4001' "$DATA" > "$OUT/data/labelled.tsv"
awk -v last="$LAST" 'NR <= last' "$DATA" > "$OUT/data/unlabelled.tsv"

ENCODER=(model=bert-small model.hidden=256 model.heads=4 model.intermediate=1024 model.vocab_size=8000)
$PTCLI tokenizer dataset=csv "dataset.files=[$OUT/data/unlabelled.tsv]" dataset.text_column=sentence \
    tokenizer.kind=wordpiece tokenizer.vocab_size=8000 run.out_dir="$OUT/tokenizer"
TOKENIZER=$OUT/tokenizer/tokenizer/latest/tokenizer

PRETRAIN=(dataset=csv "dataset.files=[$OUT/data/unlabelled.tsv]" dataset.text_column=sentence dataset.seq_len=128
          "tokenizer.path=$TOKENIZER" "${ENCODER[@]}" train.batch_size=32 train.max_steps=1000000
          "train.max_time=$BUDGET" train.eval_every=500 train.save_every=500 "${EXTRA[@]}")
# Runs its arguments now, or in the background when PARALLEL=1 (each arm's log then goes to $OUT/<name>.log).
arm() {
    local name=$1; shift
    if [[ $PARALLEL == 1 ]]; then "$@" > "$OUT/$name.log" 2>&1 & else "$@"; fi
}
together() {  # waits for the background arms; fails if any failed
    local failed=0
    for job in $(jobs -p); do wait "$job" || failed=1; done
    if [[ $failed == 1 ]]; then echo "an arm failed: see $OUT/*.log" >&2; exit 1; fi
}
arm mlm $PTCLI pretrain objective=mlm "${PRETRAIN[@]}" run.out_dir="$OUT/mlm"
arm electra $PTCLI pretrain objective=electra "${PRETRAIN[@]}" run.out_dir="$OUT/electra"
together

FINETUNE=(experiment=bert-sst2 "dataset.files=[$OUT/data/labelled.tsv]" "dataset.val_files=[$OUT/data/heldout.tsv]"
          dataset.seq_len=66 train.epochs=null "train.max_steps=$FT_STEPS" "train.eval_every=$FT_STEPS"
          "train.save_every=$FT_STEPS" optim.lr=1e-4 scheduler.warmup_ratio=0.1 "${EXTRA[@]}")
arm ft-none $PTCLI finetune "${FINETUNE[@]}" "${ENCODER[@]}" "tokenizer.path=$TOKENIZER" run.out_dir="$OUT/ft-none"
arm ft-mlm $PTCLI finetune "${FINETUNE[@]}" "model.path=$OUT/mlm/pretrain/latest" run.out_dir="$OUT/ft-mlm"
arm ft-electra $PTCLI finetune "${FINETUNE[@]}" "model.path=$OUT/electra/pretrain/latest" run.out_dir="$OUT/ft-electra"
together

for arm in none mlm electra; do
    python3 -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[2], s['best_val']['accuracy'])" \
        "$OUT/ft-$arm/finetune/latest/summary.json" "$arm"
done
