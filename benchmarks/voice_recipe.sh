#!/usr/bin/env bash
# The model that hears the voice, its text-only twin (same recipe, same seeds), and the figures
# that compare them (benchmarks/voice_eval.py). One command:
#
#   benchmarks/voice_recipe.sh DATA RAVDESS_PKL OUT
#
# DATA holds cmu-mosi/label.csv and cmu-mosei/label.csv; RAVDESS_PKL comes from
# benchmarks/ravdess_prepare.py. Settings by environment (defaults in brackets):
#   BACKBONE [all-MiniLM-L6-v2]  frozen text backbone (its states are computed once, cached)
#   SEEDS ["42"]                 space-separated
#   EPOCHS [5]  PATIENCE [2]  BATCH [64]  LR [1e-4]
#   REPEAT [4]                   times the RAVDESS train clips are seen per epoch
#   CREMA [unset]                folder of CREMA-D clips for the cross-corpus check
#   MER ["python -m mercli"]
# Writes OUT/voice (text + audio) and OUT/text (text only): seed_N/best checkpoints and
# results.json each; the evaluation goes to OUT/voice_eval.txt and OUT/voice_eval.json.
set -euo pipefail
if [ $# -ne 3 ]; then
    sed -n '2,17p' "$0"
    exit 2
fi
DATA=$1 RAVDESS=$2 OUT=$3
BACKBONE=${BACKBONE:-all-MiniLM-L6-v2}
SEEDS=${SEEDS:-42}
EPOCHS=${EPOCHS:-5} PATIENCE=${PATIENCE:-2} BATCH=${BATCH:-64} LR=${LR:-1e-4} REPEAT=${REPEAT:-4}
MER=${MER:-python -m mercli}
HERE=$(cd "$(dirname "$0")" && pwd)

seed_args=()
for s in $SEEDS; do seed_args+=(--seed "$s"); done
common=(--dataset mosi --data "$DATA/cmu-mosi/label.csv" --extra-train "$DATA/cmu-mosei/label.csv"
    --text-backbone "$BACKBONE" --freeze-text "${seed_args[@]}" --epochs "$EPOCHS"
    --patience "$PATIENCE" --batch-size "$BATCH" --lr "$LR")

$MER train "${common[@]}" --extra-train "$RAVDESS" --extra-repeat "$REPEAT" --out "$OUT/voice"
$MER train "${common[@]}" --out "$OUT/text"

checkpoints=()
for s in $SEEDS; do checkpoints+=("$OUT/voice/seed_$s/best" "$OUT/text/seed_$s/best"); done
crema=()
if [ -n "${CREMA:-}" ]; then crema=(--crema "$CREMA"); fi
python "$HERE/voice_eval.py" "${checkpoints[@]}" --ravdess "$RAVDESS" \
    --mosi "$DATA/cmu-mosi/label.csv" "${crema[@]}" --json "$OUT/voice_eval.json" \
    | tee "$OUT/voice_eval.txt"
