#!/usr/bin/env bash
# The main job, end to end: install, check the data, write lesion-grouped folds,
# extract features with the default recipe (built-in backbone, offline; square
# crops plus two robust augmented views, chosen by the worst shift: see README),
# fit the heads with 5-fold lesion-grouped CV, shift-check each on fold 0 under
# the standard shifts, add a row with patient metadata and the stacked ensemble
# of the top 3 runs, print the leaderboard, save the best run as models/best/
# (with the out-of-distribution score that flags images unlike the training ones)
# and draw the error gallery. Reruns reuse the feature cache, the shifted features and the fit
# records, so a second run takes about a minute (refitting the best model).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
cd "$root"
data="${SKINFEAT_DATA:-../shared/data/ham10000}"
runs="${SKINFEAT_RUNS:-runs}"
best="${SKINFEAT_BEST:-models/best}"
mkdir -p "$runs"

skinfeat data check --data "$data"
[ -f "$runs/folds.csv" ] || skinfeat data split --data "$data" --folds 5 --seed 0 --out "$runs/folds.csv"
features="$(skinfeat extract --data "$data")"
echo "features: $features"
# Patient metadata (age, sex, site from the dataset's metadata CSV) beside the image
# features: a leaderboard row of its own, once.
if ! skinfeat compare --format csv 2>/dev/null | grep -q "metadata=age+sex+localization"; then
  skinfeat fit --head logreg --features "$features" --metadata age,sex,localization --folds "$runs/folds.csv" \
    --data "$data" --shift standard -q
fi
# Fit every head on every feature file that has no record yet (shift-checked on
# fold 0), stack the top 3 runs into an ensemble (its own row, shift-checked),
# print the table, then save the best run (worst shift first, CV second), with the
# best image-only run inside it when the best needs metadata (a photo comes without).
skinfeat compare --fit --heads "${SKINFEAT_HEADS:-logreg,softmax}" --folds "$runs/folds.csv" \
  --data "$data" --shift standard --ensemble 3 --best "$best"
# The error gallery (`skinfeat report` shows it): per true class, the most confident
# wrong out-of-fold predictions of the image-only run the best model answers photos with.
gallery="$best"
[ -d "$best/fallback" ] && gallery="$best/fallback"
skinfeat explain --model "$gallery" --errors --data "$data"
echo "predict with: skinfeat predict --model $best IMAGES... (a photo alone is answered by the image-only model" \
  "the best model holds; --metadata CSV: HAM10000_metadata.csv or the ISIC layout, for images with age, sex and site);" \
  "evaluate with: skinfeat evaluate --model $best --data D --shift standard (a folder without labels: its drift" \
  "summary); report: skinfeat report"
