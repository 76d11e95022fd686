#!/usr/bin/env bash
# Regenerate one folder of results/ with one command (CPU; an existing run is reused: nothing retrains):
#   bash results/regenerate.sh [STUDY] [RUN_FOLDER]
# STUDY: small (default; the CI matrix, a few minutes) or one of the four CPU mini-studies
# redcnn_wgan, loss_vs_iqa, upl, mstlf (presets <study>-cpu.yaml, three seeds, <= 30 minutes each on 2 cores
# after the shared 256^2 dataset is built; run one study at a time, or give each one thread: OMP_NUM_THREADS=1). RUN_FOLDER defaults to runs/<study>.
# JOBS=N trains and scores with N worker processes (`run --jobs N`, `report --jobs N`). The mini-study presets pin
# one thread per cell (reproducibility.threads: 1), so JOBS changes only the wall time, not a number: use JOBS=2
# on 2 cores. Their native kernels still make the numbers depend on the CPU kind (small.yaml is portable).
# tests/test_results.py reruns the small matrix and checks its tables against results/small within the
# seed-to-seed spread (results/small/seed_spread.csv, written here from a 3-seed run of the same matrix);
# a `study`-marked test does the same for each mini-study.
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
ldct-bench run --matrix "$preset" --out "$out" --quiet ${JOBS:+--jobs "$JOBS"}
ldct-bench report --out "$out" --quiet ${JOBS:+--jobs "$JOBS"}
dest=results/$study
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$out/analysis/tables" "$out/analysis/figures" "$dest/"
cp "$out/analysis/report.md" "$out/analysis/"*.csv "$out/analysis/"*.parquet "$out/analysis/settings.json" "$dest/"
cp "$out/matrix.resolved.yaml" "$dest/"
if [ "$study" = small ]; then
  # The seed-to-seed spread that CI's tolerance comes from (tests/test_results.py): the same matrix at
  # seeds 0, 1, 2. Seed 0's cells are the run above (same config, same bytes), so they are reused.
  seeds="$out-seeds"
  mkdir -p "$seeds/cells"
  cp -r "$out/cells/." "$seeds/cells/"
  python -c "import sys; from benchmark.config import dump_yaml, load_matrix; d = load_matrix('small.yaml').model_dump(mode='json'); d.update(name='small-seeds', seeds=[0, 1, 2]); sys.stdout.write(dump_yaml(d))" > "$seeds.yaml"
  ldct-bench run --matrix "$seeds.yaml" --out "$seeds" --quiet
  ldct-bench report --out "$seeds" --quiet
  for ext in csv md; do cp "$seeds/analysis/tables/seed_spread.$ext" "$dest/seed_spread.$ext"; done
fi
echo "wrote $dest in $(( $(date +%s) - start )) s"
