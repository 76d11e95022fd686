#!/usr/bin/env bash
# Regenerate one folder of results/ with one command (CPU; an existing run is reused: nothing retrains):
#   bash results/regenerate.sh [STUDY] [RUN_FOLDER]
# STUDY: small (default; the CI matrix, a few minutes) or one of the four CPU mini-studies
# redcnn_wgan, loss_vs_iqa, upl, mstlf (presets <study>-cpu.yaml, <= 15 minutes each on 2 cores after
# the shared 256^2 dataset is built). RUN_FOLDER defaults to runs/<study>.
# tests/test_results.py reruns the small matrix and checks that its tables reproduce; a slow test does
# the same for one mini-study.
set -euo pipefail
cd "$(dirname "$0")/.."
study=${1:-small}
case "$study" in
  small) preset=small.yaml ;;
  redcnn_wgan|loss_vs_iqa|upl|mstlf) preset="$study-cpu.yaml" ;;
  *) echo "unknown study '$study': small, redcnn_wgan, loss_vs_iqa, upl or mstlf" >&2; exit 2 ;;
esac
out=${2:-runs/$study}
start=$(date +%s)
ldct-bench run --matrix "$preset" --out "$out" --quiet
ldct-bench report --out "$out" --quiet
dest=results/$study
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$out/analysis/tables" "$out/analysis/figures" "$dest/"
cp "$out/analysis/report.md" "$out/analysis/"*.csv "$out/analysis/"*.parquet "$out/analysis/settings.json" "$dest/"
cp "$out/matrix.resolved.yaml" "$dest/"
echo "wrote $dest in $(( $(date +%s) - start )) s"
