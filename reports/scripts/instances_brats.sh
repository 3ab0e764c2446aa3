#!/usr/bin/env bash
# The instance model (lesion_instances) on the 4 BraTS 2015 cases, leave-one-out, with lesion FROC and AP.
#
#   reports/scripts/instances_brats.sh MINUTES [WORK_DIR] [COMPARE_RUNS ...]
#
# Trains lesion_instances with configs/brats.yaml (region-based, 2 mm, 64^3 patches; centre targets from the tumour
# labels 1-4, i.e. whole-tumour lesions) for MINUTES per fold on leave-one-out folds (train.num_folds=4,
# FOLDS=0,1,2,3), infers each fold's held-out case with instances (reports/scripts/loo_infer.py) and scores them
# with `medseg evaluate --brats` (BraTS regions, lesion-wise metrics, FROC and AP of the whole-tumour lesions).
# COMPARE_RUNS: other leave-one-out runs of the same dataset (folders of fold_K, e.g. fusion_compare.sh's
# runs/early) scored the same way, their confidence being the lesion's mean probability.
#
# Run from the repository root. Data: $MEDSEG_TEST_DATA/brats2015_deepmedic (default ../shared/data). Everything
# else goes under WORK_DIR (default instances_brats/).
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
MINUTES=$1
WORK=${2:-instances_brats}
COMPARE=("${@:3}")
FOLDS=${FOLDS:-0,1,2,3}
DATA=${MEDSEG_TEST_DATA:-../shared/data}
BRATS=$DATA/brats2015_deepmedic
MEDSEG=${MEDSEG:-medseg}
PYTHON=${PYTHON:-python}
HERE=$(dirname "$0")
[[ -d $BRATS ]] || { echo "error: $BRATS not found (set MEDSEG_TEST_DATA)" >&2; exit 2; }
[[ -f configs/brats.yaml ]] || { echo "error: run from the repository root (configs/brats.yaml not found)" >&2; exit 2; }
mkdir -p "$WORK"
[[ -f $WORK/brats/dataset.json ]] || "$MEDSEG" dataset import "$BRATS" "$WORK/brats" --preset brats2015

echo "== train lesion_instances, folds $FOLDS, $MINUTES min each ($(date -u +%H:%M:%S) UTC)"
"$MEDSEG" train "$WORK/brats" --config configs/brats.yaml --set model.name=lesion_instances \
    --set "loss.objectness.lesion_labels=[1,2,3,4]" --set train.num_folds=4 --set work_dir="$WORK/medseg_work" \
    --fold "$FOLDS" --max-minutes "$MINUTES" -o "$WORK/lesion_instances"

score() {  # RUNS NAME: infer the held-out cases with instances, evaluate
    "$PYTHON" "$HERE/loo_infer.py" "$1" "$BRATS" "$WORK/predictions/$2" --instances
    "$MEDSEG" evaluate -p "$WORK/predictions/$2" -g "$WORK/brats/labelsTr" -l "$WORK/brats/dataset.json" --brats \
        -o "$WORK/eval/$2" >/dev/null
}
echo "== held-out cases with instances, then medseg evaluate --brats ($(date -u +%H:%M:%S) UTC)"
names=(lesion_instances)
score "$WORK/lesion_instances" lesion_instances
for runs in "${COMPARE[@]}"; do
    name=$(basename "$runs")
    score "$runs" "$name"
    names+=("$name")
done

"$PYTHON" - "$WORK" "${names[@]}" <<'PY'
import json
import sys
from pathlib import Path

work, names = Path(sys.argv[1]), sys.argv[2:]
print("| model | region | Dice | reference lesions | found (sensitivity) | FPs per case | AP | CPM | confidence |")
print("|---|---|---|---|---|---|---|---|---|")
for name in names:
    summary = json.loads((work / "eval" / name / "summary.json").read_text())
    detection = summary["lesion_detection"]
    dice = {label: values.get("dice", {}).get("mean") for label, values in summary.get("metrics", {}).items()}
    for label, scores in detection["labels"].items():
        froc = scores["froc"]
        sensitivity = froc["sensitivity"][-1] if froc["sensitivity"] else 0.0
        fps = froc["fp_per_case"][-1] if froc["fp_per_case"] else 0.0
        mean_dice = dice.get(label)
        print(f"| {name} | {label} | {'n/a' if mean_dice is None else f'{mean_dice:.3f}'} | {scores['reference_lesions']} | "
              f"{round(sensitivity * scores['reference_lesions'])} ({sensitivity:.3f}) | {fps:.3f} | "
              f"{scores['average_precision']:.3f} | {scores['cpm']:.3f} | {', '.join(detection['confidence_source'])} |")
PY
