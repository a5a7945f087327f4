#!/usr/bin/env bash
# The fine-tuned tier of the main job (after scripts/main.sh, or alone): fine-tune
# the default backbone on folds 1-4 of runs/folds.csv (fold 0 is never seen),
# extract the fine-tuned backbone's features with the main job's recipe, fit the
# logistic-regression head on them (scored on fold 0 only: fit's leak guard) and
# shift-check it on fold 0, print the leaderboard with these rows beside the frozen
# ones, then train the final network on every fold for the epochs the fold run
# chose and save it as models/finetuned/ (`predict`, `evaluate`, `serve` and
# `export` take it). Every step resumes or is reused when run again.
#
# On the 2-core machine of the README the fold run takes about 80 minutes and
# the final network as long again. Settings: SKINFEAT_FINETUNE_ARGS (for both runs,
# e.g. "--size 112 150"), SKINFEAT_FINETUNE_EPOCHS (the fold run's most epochs),
# SKINFEAT_FINETUNE_MODULE (another trainable backbone), SKINFEAT_DATA,
# SKINFEAT_RUNS, SKINFEAT_FINETUNED (where the final model goes).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
cd "$root"
data="${SKINFEAT_DATA:-../shared/data/ham10000}"
runs="${SKINFEAT_RUNS:-runs}"
final="${SKINFEAT_FINETUNED:-models/finetuned}"
read -r -a settings <<< "${SKINFEAT_FINETUNE_ARGS:-}"
[ -n "${SKINFEAT_FINETUNE_MODULE:-}" ] && settings+=(--module "$SKINFEAT_FINETUNE_MODULE")
epochs=()
[ -n "${SKINFEAT_FINETUNE_EPOCHS:-}" ] && epochs=(--epochs "$SKINFEAT_FINETUNE_EPOCHS")
mkdir -p "$runs"

[ -f "$runs/folds.csv" ] || skinfeat data split --data "$data" --folds 5 --seed 0 --out "$runs/folds.csv"
name="$(skinfeat finetune --data "$data" --folds "$runs/folds.csv" --fold 0 "${settings[@]}" "${epochs[@]}")"
features="$(skinfeat extract --module "$name" --data "$data")"
echo "features: $features"
skinfeat fit --head logreg --features "$features" --folds "$runs/folds.csv" --data "$data" --shift standard -q
skinfeat compare
if skinfeat finetune --all --data "$data" --folds "$runs/folds.csv" --out "$final" "${settings[@]}"; then
  echo "the final fine-tuned network: skinfeat predict --model $final IMAGES...; skinfeat evaluate --model $final --data D"
else
  echo "no final fine-tuned network (the line above says why); the fold-0 rows stay on the leaderboard" >&2
fi
