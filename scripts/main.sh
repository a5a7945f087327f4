#!/usr/bin/env bash
# The main job, end to end: install, check the data, write lesion-grouped folds,
# extract features with the default built-in backbone (offline), fit every head
# with 5-fold lesion-grouped CV, and print the leaderboard. Reruns reuse the
# feature cache and the fit records, so a second run takes seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
cd "$root"
data="${SKINFEAT_DATA:-../shared/data/ham10000}"
runs="${SKINFEAT_RUNS:-runs}"
mkdir -p "$runs"

skinfeat data check --data "$data"
[ -f "$runs/folds.csv" ] || skinfeat data split --data "$data" --folds 5 --seed 0 --out "$runs/folds.csv"
features="$(skinfeat extract --data "$data")"
echo "features: $features"
# Fit every head on every feature file that has no record yet, then print the table.
skinfeat compare --fit --folds "$runs/folds.csv"
