#!/usr/bin/env bash
# Regenerate results/small/ — the report of the small matrix — with one command (CPU, a few minutes):
#   bash results/regenerate.sh [RUN_FOLDER]      (default runs/small; an existing run is reused: nothing retrains)
# tests/test_results.py reruns the small matrix and checks that these tables reproduce.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/small}
ldct-bench run --matrix small.yaml --out "$out" --quiet
ldct-bench report --out "$out" --quiet
dest=results/small
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$out/analysis/tables" "$out/analysis/figures" "$dest/"
cp "$out/analysis/report.md" "$out/analysis/"*.csv "$out/analysis/"*.parquet "$out/analysis/settings.json" "$dest/"
cp "$out/matrix.resolved.yaml" "$dest/"
echo "wrote $dest"
