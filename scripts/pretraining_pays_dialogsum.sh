#!/usr/bin/env bash
# Does pretraining pay for seq2seq? (issue #13) t5-tiny pretrained with T5 span corruption on DialogSum's training
# dialogues as unlabelled text, then fine-tuned on the dialogue -> summary pairs, against the same model fine-tuned
# from random init with the same tokenizer and the same fine-tuning budget (steps of the same batch size).
# ROUGE-L on DialogSum's validation split (500 dialogues, never trained on) decides.
#   bash scripts/pretraining_pays_dialogsum.sh [out_dir]          (BUDGET=1200 s of pretraining: about 45 minutes)
#   BUDGET=20 FT_STEPS=5 PTCLI_ARGS=device.threads=1 bash scripts/pretraining_pays_dialogsum.sh /tmp/pays-ds  (smoke)
#   PARALLEL=1 ...: the two fine-tuning arms side by side (their budget is steps, so sharing the machine is fair);
#   on 2 cores add FT_ARGS=device.threads=1 so that the pretraining keeps both cores and each arm takes one
# The scores are in $OUT/ft-*/finetune/latest/summary.json (final_val: rougeL, rouge1, ...), printed at the end.
set -euo pipefail
OUT=${1:-outputs/pretraining-pays-dialogsum}
DATA=${DIALOGSUM:-../shared/data/dialogsum}
BUDGET=${BUDGET:-1200}       # seconds of span-corruption pretraining
FT_STEPS=${FT_STEPS:-1500}   # fine-tuning steps of 16 pairs: about 2 epochs of DialogSum's 12,460
PTCLI=${PTCLI:-ptcli}
PARALLEL=${PARALLEL:-0}
read -ra EXTRA <<< "${PTCLI_ARGS:-}"  # overrides added to every command, e.g. PTCLI_ARGS="device.threads=1"
read -ra FT_EXTRA <<< "${FT_ARGS:-}"  # added to the fine-tuning arms only, e.g. FT_ARGS="device.threads=1" with PARALLEL=1
mkdir -p "$OUT"

# Pretraining trains its tokenizer on the dialogues (with T5's 100 sentinels); the random-init arm reuses it.
$PTCLI pretrain objective=span_corruption model=t5-tiny dataset=jsonl "dataset.files=[$DATA/train.jsonl]" \
    dataset.text_column=dialogue dataset.seq_len=256 train.batch_size=32 train.max_steps=1000000 \
    "train.max_time=$BUDGET" train.eval_every=500 train.save_every=500 "${EXTRA[@]}" run.out_dir="$OUT/pretrain"
PRETRAINED=$OUT/pretrain/pretrain/latest

arm() {  # runs its arguments now, or in the background when PARALLEL=1 (the log then goes to $OUT/<name>.log)
    local name=$1; shift
    if [[ $PARALLEL == 1 ]]; then "$@" > "$OUT/$name.log" 2>&1 & else "$@"; fi
}
FINETUNE=(objective=seq2seq dataset=jsonl "dataset.files=[$DATA/train.jsonl]" "dataset.val_files=[$DATA/validation.jsonl]"
          dataset.text_column=dialogue dataset.label_column=summary dataset.seq_len=384 objective.max_target_len=64
          objective.max_new_tokens=64 train.batch_size=16 train.epochs=null "train.max_steps=$FT_STEPS"
          "train.eval_every=$FT_STEPS" "train.save_every=$FT_STEPS" optim.lr=1e-3 scheduler.warmup_ratio=0.06
          "${EXTRA[@]}" "${FT_EXTRA[@]}")
arm ft-none $PTCLI finetune "${FINETUNE[@]}" model=t5-tiny "tokenizer.path=$PRETRAINED/model" run.out_dir="$OUT/ft-none"
arm ft-span $PTCLI finetune "${FINETUNE[@]}" "model.path=$PRETRAINED" run.out_dir="$OUT/ft-span"
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
if [[ $failed == 1 ]]; then echo "a fine-tuning arm failed: see $OUT/*.log" >&2; exit 1; fi

for arm in none span; do
    python3 -c "import json, sys; v = json.load(open(sys.argv[1]))['final_val']
print(sys.argv[2], ' '.join(f'{k}={v[k]:.4f}' for k in ('rougeL', 'rouge1', 'rouge2', 'loss')))" \
        "$OUT/ft-$arm/finetune/latest/summary.json" "$arm"
done
