#!/usr/bin/env bash
# Fine-tuning vs training from scratch on MSD Task04 Hippocampus, for the same time budget.
#
#   reports/scripts/finetune_compare.sh MINUTES [WORK_DIR]
#
# 1. source:   a synthetic CT model (medseg data synth, 128x128x96 mm), trained for SOURCE_MINUTES (default MINUTES)
#              on 9 of SYNTH_CASES=10 cases (validated on 1: at 1 mm a full-volume validation costs ~1 CPU-minute a case),
#              with the hippocampus network: configs/hippocampus.yaml's widths, its 40x56x40 patch and 1 mm isotropic
#              grid, so every layer but the output heads has the hippocampus network's shape;
# 2. scratch:  hippocampus fold 0 from random weights, MINUTES;
# 3. finetune: hippocampus fold 0 with --init-from the source, MINUTES (the source's own training is not counted:
#              it is a one-off). FREEZE_EPOCHS=N (default 0) keeps its encoder frozen for the first N epochs.
# 2 and 3 run side by side, each on one core (reports/scripts/pairs.sh; PARALLEL=0: one after the other).
# Then prints each run's fold-0 validation Dice (all 37 held-out cases, from summary.json) and what was transferred.
#
# Run from the repository root. Data: $MEDSEG_TEST_DATA/msd_hippocampus (default ../shared/data). Everything else
# goes under WORK_DIR (default finetune_compare/): datasets, preprocessed caches and the three run folders.
# Seeds are fixed (synthetic data seed 0, train.seed 0); wall-clock budgets make the epoch counts machine-dependent.
set -euo pipefail
source "$(dirname "$0")/pairs.sh"

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
MINUTES=$1
WORK=${2:-finetune_compare}
SOURCE_MINUTES=${SOURCE_MINUTES:-$MINUTES}
FREEZE_EPOCHS=${FREEZE_EPOCHS:-0}
SYNTH_CASES=${SYNTH_CASES:-10}
DATA=${MEDSEG_TEST_DATA:-../shared/data}
HIPPOCAMPUS=$DATA/msd_hippocampus
MEDSEG=${MEDSEG:-medseg}
PYTHON=${PYTHON:-python}

[[ -f $HIPPOCAMPUS/dataset.json ]] || { echo "error: $HIPPOCAMPUS/dataset.json not found (set MEDSEG_TEST_DATA)" >&2; exit 2; }
[[ -f configs/hippocampus.yaml ]] || { echo "error: run from the repository root (configs/hippocampus.yaml not found)" >&2; exit 2; }
mkdir -p "$WORK"

# The hippocampus network, spelled out so the source builds the same one: patch, grid and widths.
SHAPE=(--config configs/hippocampus.yaml --set train.patch_size=[40,56,40] --set model.base_features=16 --set model.max_features=128)

echo "== source: synthetic CT model, $SOURCE_MINUTES min ($(date -u +%H:%M:%S) UTC)"
[[ -f $WORK/synthetic/dataset.json ]] || "$MEDSEG" data synth "$WORK/synthetic" --cases "$SYNTH_CASES" --seed 0 --set synth.fov_mm=[128,128,96]
"$MEDSEG" train "$WORK/synthetic" "${SHAPE[@]}" --set plan.target_spacing=[1.0,1.0,1.0] --set work_dir="$WORK/medseg_work/synthetic" \
    --set train.num_folds="$SYNTH_CASES" --fold 0 --max-minutes "$SOURCE_MINUTES" -o "$WORK/source"

SCRATCH=("$MEDSEG" train "$HIPPOCAMPUS" "${SHAPE[@]}" --set work_dir="$WORK/medseg_work/hippocampus" --fold 0 --max-minutes "$MINUTES"
         -o "$WORK/scratch")
FINETUNE=("$MEDSEG" train "$HIPPOCAMPUS" "${SHAPE[@]}" --set work_dir="$WORK/medseg_work/hippocampus" --fold 0 --max-minutes "$MINUTES"
          --init-from "$WORK/source" --set train.freeze_encoder_epochs="$FREEZE_EPOCHS" -o "$WORK/finetune")
# Preprocess once before the pair starts, so neither run spends its budget on it (or races the other for the cache).
"$MEDSEG" preprocess "$HIPPOCAMPUS" "${SHAPE[@]}" --set work_dir="$WORK/medseg_work/hippocampus" >/dev/null
echo "== scratch and finetune (from the synthetic model, encoder frozen $FREEZE_EPOCHS epoch(s)): hippocampus fold 0," \
     "$MINUTES min each, side by side on one core each ($(date -u +%H:%M:%S) UTC; logs in $WORK/*.log)"
run_pair "$WORK/scratch.log" "$(printf '%q ' "${SCRATCH[@]}")" "$WORK/finetune.log" "$(printf '%q ' "${FINETUNE[@]}")"

echo "== fold-0 validation Dice after $MINUTES min each"
"$PYTHON" - "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
for name in ("scratch", "finetune"):
    summary = json.loads((work / name / "fold_0" / "summary.json").read_text())
    dice = ", ".join(f"{label} {value:.4f}" for label, value in (summary["final_validation"] or {}).items())
    print(f"{name:9s} mean {summary['final_mean_dice']:.4f} ({dice}); {summary['epochs']} epochs, {summary['iterations']} iterations, "
          f"{summary['minutes']:.1f} min, {summary['validation_cases']} cases ({summary['validation']})")
    if summary.get("init_from"):
        print(f"          {summary['init_from']['summary']}")
EOF
