#!/usr/bin/env bash
# Lesions as instances on the synthetic CT tumours: the instance model (lesion_instances) against plain dynunet.
#
#   reports/scripts/instances_synthetic.sh [WORK_DIR]
#
# 1. data:   `medseg data synth` with TRAIN_CASES=16 training and TEST_CASES=8 held-out cases (seed SEED=21: not a
#            seed the demo or configs/synthetic.yaml's calibration used), labels 1 liver, 2 tumour;
# 2. train:  configs/synthetic.yaml (500 steps, not a time budget) twice, side by side on one core each
#            (reports/scripts/pairs.sh): model lesion_instances (dynunet + lesion-centre head; confidence = the
#            head's peak in each lesion) and dynunet (confidence = the lesion's mean tumour probability);
# 3. infer:  the test cases with each model, instances on (`--instances`);
# 4. score:  `medseg evaluate --lesion-labels tumor` on the test labels: lesion sensitivity, FPs per case, AP and CPM
#            (FROC), printed per model; everything under WORK_DIR/<model>/eval.
#
# Run from the repository root. Everything goes under WORK_DIR (default instances_synthetic/).
set -euo pipefail
source "$(dirname "$0")/pairs.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
WORK=${1:-instances_synthetic}
TRAIN_CASES=${TRAIN_CASES:-16}
TEST_CASES=${TEST_CASES:-8}
SEED=${SEED:-21}
MEDSEG=${MEDSEG:-medseg}
PYTHON=${PYTHON:-python}
[[ -f configs/synthetic.yaml ]] || { echo "error: run from the repository root (configs/synthetic.yaml not found)" >&2; exit 2; }
mkdir -p "$WORK"

DATA=$WORK/data
[[ -f $DATA/dataset.json ]] || "$MEDSEG" data synth "$DATA" --cases "$TRAIN_CASES" --test-cases "$TEST_CASES" --seed "$SEED"
COMMON=(--config configs/synthetic.yaml --set work_dir="$WORK/medseg_work")
"$MEDSEG" preprocess "$DATA" "${COMMON[@]}" >/dev/null
train() { printf '%q ' "$MEDSEG" train "$DATA" "${COMMON[@]}" --fold 0 --set model.name="$1" -o "$WORK/$1"; }
infer_and_score() {
    printf '%q ' "$MEDSEG" infer "$WORK/$1/fold_0" "$DATA/imagesTs" -o "$WORK/$1/test_predictions" --instances
    printf '&& '
    printf '%q ' "$MEDSEG" evaluate -p "$WORK/$1/test_predictions" -g "$DATA/labelsTs" -l "$DATA/dataset.json" \
        --lesion-labels tumor -o "$WORK/$1/eval"
}
echo "== train lesion_instances and dynunet side by side ($(date -u +%H:%M:%S) UTC; logs in $WORK/*.log)"
run_pair "$WORK/lesion_instances.log" "$(train lesion_instances)" "$WORK/dynunet.log" "$(train dynunet)"
echo "== infer the $TEST_CASES test cases and score the lesions ($(date -u +%H:%M:%S) UTC)"
run_pair "$WORK/lesion_instances_eval.log" "$(infer_and_score lesion_instances)" "$WORK/dynunet_eval.log" "$(infer_and_score dynunet)"

"$PYTHON" - "$WORK" <<'PY'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
print("| model | validation Dice liver / tumour | iterations | test tumours | found (sensitivity) | FPs per case | AP | CPM | confidence |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ("lesion_instances", "dynunet"):
    summary = json.loads((work / name / "fold_0" / "summary.json").read_text())
    dice = " / ".join(f"{value:.3f}" for value in (summary["final_validation"] or {}).values())
    evaluation = json.loads((work / name / "eval" / "summary.json").read_text())
    detection = evaluation["lesion_detection"]
    tumour = detection["labels"]["tumor"]
    froc = tumour["froc"]
    found = round(froc["sensitivity"][-1] * tumour["reference_lesions"]) if froc["sensitivity"] else 0
    sensitivity = froc["sensitivity"][-1] if froc["sensitivity"] else 0.0
    fps = froc["fp_per_case"][-1] if froc["fp_per_case"] else 0.0
    print(f"| {name} | {dice} | {summary['iterations']} | {tumour['reference_lesions']} in {tumour['cases']} cases | "
          f"{found} ({sensitivity:.3f}) | {fps:.3f} | {tumour['average_precision']:.3f} | {tumour['cpm']:.3f} | "
          f"{', '.join(detection['confidence_source'])} |")
PY
