#!/usr/bin/env bash
# What does differential privacy cost and buy? (issue #17 part 4) MiniLM fine-tuned on SST-2 with DP-SGD
# (+privacy=dp, epsilon 8, delta 1e-5), then scored on 1,000 held-out sentences (the last rows of the file, never
# trained on) and attacked by loss-threshold membership inference (evaluate +attack=membership) beside the plain
# model. The issue's target: accuracy >= 0.80, the reported epsilon <= 8 and equal (within 5%) to Opacus's
# accountant recomputed from the logged noise, sample rate and steps. Measured (docs/results.md): the accounting
# matches; at ROWS=8000 no learning rate or trainable part tried beat the majority class, so more rows are the next try.
#   bash scripts/privacy_sst2.sh [out_dir]            (ROWS=8000, 3 epochs: about 25 minutes on 2 cores)
#   PLAIN_RUN=<run dir>: attack this non-private run instead of training one (scripts/robustness_sst2.sh's plain
#   arm is the same recipe on the same rows)
#   ROWS=64 EXAMPLES=8 DP_ARGS="train.max_steps=2 train.batch_size=8" FT_ARGS=train.max_steps=2 bash scripts/privacy_sst2.sh /tmp/dp   (a smoke run)
set -euo pipefail
OUT=${1:-outputs/privacy-sst2}
DATA=${SST2:-../shared/data/sst2/train.tsv}
ROWS=${ROWS:-8000}
EXAMPLES=${EXAMPLES:-1000}
LR=${LR:-1e-4}
PTCLI=${PTCLI:-ptcli}
read -ra EXTRA <<< "${PTCLI_ARGS:-}"  # added to every command (device.threads=1, say)
read -ra FT_EXTRA <<< "${FT_ARGS:-}"  # added to the plain fine-tuning run
read -ra DP_EXTRA <<< "${DP_ARGS:-}"  # added to the private run
mkdir -p "$OUT/data"
awk -v last="$(( $(wc -l < "$DATA") - 1000 ))" 'NR == 1 || NR > last' "$DATA" > "$OUT/data/heldout.tsv"
awk -v n="$ROWS" 'NR <= n + 1' "$DATA" > "$OUT/data/train.tsv"

COMMON=(model=minilm objective=classification dataset=csv "dataset.files=[$OUT/data/train.tsv]"
        "dataset.val_files=[$OUT/data/heldout.tsv]" dataset.text_column=sentence dataset.label_column=label
        dataset.seq_len=66 train.max_steps=null train.best_metric=accuracy train.eval_batches=null "${EXTRA[@]}")
# DP-SGD as Opacus's BERT tutorial runs it: a small clipping norm (every example's gradient is clipped, so each one
# counts the same), large expected batches, the embeddings and the lower layers frozen (only the last block, the
# pooler and the head train: the noise is spread over fewer weights, and frozen position embeddings sidestep Opacus
# #841). With every example's gradient clipped, Adam's steps have about the learning rate's size whatever the
# gradient's: lr 1e-3 (all 6 blocks) and 5e-4 (the last one) collapsed to the majority class by step 32, and 5e-4
# diverged for a while even without noise.
$PTCLI finetune "${COMMON[@]}" +privacy=dp privacy.epsilon=8 privacy.delta=1e-5 privacy.max_grad_norm=0.1 \
    train.batch_size=256 train.grad_accum=8 train.epochs=3 "optim.lr=$LR" scheduler.name=linear \
    scheduler.warmup_ratio=0.1 tune.freeze_layers=5 train.eval_every=32 "${DP_EXTRA[@]}" \
    run.out_dir="$OUT/dp" > "$OUT/dp.log" 2>&1 || { tail -20 "$OUT/dp.log" >&2; exit 1; }
PLAIN=${PLAIN_RUN:-}
if [[ -z $PLAIN ]]; then
    $PTCLI finetune "${COMMON[@]}" train.batch_size=32 train.epochs=1 optim.lr=5e-5 scheduler.warmup_ratio=0.1 \
        "${FT_EXTRA[@]}" run.out_dir="$OUT/plain" > "$OUT/plain.log" 2>&1 || { tail -20 "$OUT/plain.log" >&2; exit 1; }
    PLAIN="$OUT/plain/finetune/latest"
fi
for arm in dp plain; do
    run=$([[ $arm == dp ]] && echo "$OUT/dp/finetune/latest" || echo "$PLAIN")
    $PTCLI evaluate "model.path=$run" +attack=membership "attack.examples=$EXAMPLES" output=json "${EXTRA[@]}" \
        run.out_dir="$OUT/membership-$arm" > "$OUT/membership-$arm.json"
    python3 - "$run/summary.json" "$OUT/membership-$arm.json" "$arm" <<'PY'
import json, sys
s, m = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
line = f"{sys.argv[3]}: held-out accuracy {s['final_val']['accuracy']:.4f}"
p = s.get("privacy")
if p:
    from opacus.accountants import create_accountant
    acc = create_accountant(p["accountant"])
    for _ in range(p["steps"]):
        acc.step(noise_multiplier=p["noise_multiplier"], sample_rate=p["sample_rate"])
    again = acc.get_epsilon(p["delta"])
    line += (f" | epsilon {p['epsilon']:.4f} reported, {again:.4f} recomputed ({100 * (p['epsilon'] / again - 1):+.2f}%)"
             f", noise {p['noise_multiplier']:.4f}, q {p['sample_rate']:.5f}, {p['steps']} steps")
line += " | membership: " + " ".join(f"{k}={m[k]}" for k in ("membership_auc", "membership_advantage",
                                                               "tpr_at_1pct_fpr", "member_loss", "nonmember_loss"))
print(line)
PY
done
