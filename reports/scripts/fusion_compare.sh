#!/usr/bin/env bash
# Early vs mid fusion of MR modalities, each with and without modality dropout, on the 4 BraTS 2015 cases (FLAIR + T1c).
#
#   reports/scripts/fusion_compare.sh MINUTES [WORK_DIR]
#
# Four variants, each trained MINUTES per fold with configs/brats.yaml (region-based, 2 mm, 64^3 patches) and
# leave-one-out folds (train.num_folds=4; FOLDS=0,1,2,3 by default, e.g. FOLDS=0 for one fold):
#   early           dynunet, the modalities stacked as input channels
#   early_dropout   the same, trained with augment.modality_dropout_prob=DROPOUT (default 0.5)
#   mid             dynunet_midfusion: per-modality stems (model.fusion_stages=FUSION_STAGES, default 2), mean-merged
#   mid_dropout     the same with modality dropout
# Early and mid fusion train side by side, each on one core (reports/scripts/pairs.sh; PARALLEL=0: one after the other).
# Then each fold's held-out case is inferred with both modalities and with each one missing (--missing-modality,
# i.e. infer.missing_channels), and the BraTS region Dice (WT, TC, ET) is printed per variant and input
# (reports/scripts/fusion_eval.py; also WORK_DIR/fusion_compare.json).
#
# Run from the repository root. Data: $MEDSEG_TEST_DATA/brats2015_deepmedic (default ../shared/data). Everything else
# goes under WORK_DIR (default fusion_compare/): the imported dataset, one preprocessed cache, runs and predictions.
# Seeds are fixed (train.seed); wall-clock budgets make the iteration counts machine-dependent, and mid fusion runs
# its stem stages once per modality, so it makes fewer steps in the same budget (the table shows them).
set -euo pipefail
source "$(dirname "$0")/pairs.sh"

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
MINUTES=$1
WORK=${2:-fusion_compare}
FOLDS=${FOLDS:-0,1,2,3}
DROPOUT=${DROPOUT:-0.5}
FUSION_STAGES=${FUSION_STAGES:-2}
DATA=${MEDSEG_TEST_DATA:-../shared/data}
BRATS=$DATA/brats2015_deepmedic
MEDSEG=${MEDSEG:-medseg}
PYTHON=${PYTHON:-python}
HERE=$(dirname "$0")

[[ -d $BRATS ]] || { echo "error: $BRATS not found (set MEDSEG_TEST_DATA)" >&2; exit 2; }
[[ -f configs/brats.yaml ]] || { echo "error: run from the repository root (configs/brats.yaml not found)" >&2; exit 2; }
mkdir -p "$WORK"

[[ -f $WORK/brats/dataset.json ]] || "$MEDSEG" dataset import "$BRATS" "$WORK/brats" --preset brats2015

COMMON=(--config configs/brats.yaml --set train.num_folds=4 --set work_dir="$WORK/medseg_work" --fold "$FOLDS" --max-minutes "$MINUTES")
declare -A VARIANT_SETTINGS=(
    [early]="model.name=dynunet"
    [early_dropout]="model.name=dynunet augment.modality_dropout_prob=$DROPOUT"
    [mid]="model.name=dynunet_midfusion model.fusion_stages=$FUSION_STAGES"
    [mid_dropout]="model.name=dynunet_midfusion model.fusion_stages=$FUSION_STAGES augment.modality_dropout_prob=$DROPOUT"
)
VARIANTS=(early early_dropout mid mid_dropout)

train_command() {
    local variant=$1 command=("$MEDSEG" train "$WORK/brats" "${COMMON[@]}")
    for setting in ${VARIANT_SETTINGS[$variant]}; do command+=(--set "$setting"); done
    printf '%q ' "${command[@]}" -o "$WORK/runs/$variant"
}
"$MEDSEG" preprocess "$WORK/brats" --config configs/brats.yaml --set train.num_folds=4 --set work_dir="$WORK/medseg_work" >/dev/null
# Early and mid fusion side by side (one core each), then the same two with modality dropout.
for pair in "early mid" "early_dropout mid_dropout"; do
    read -r first second <<<"$pair"
    echo "== $first (${VARIANT_SETTINGS[$first]}) and $second (${VARIANT_SETTINGS[$second]}), folds $FOLDS, $MINUTES min each," \
         "side by side ($(date -u +%H:%M:%S) UTC; logs in $WORK/*.log)"
    run_pair "$WORK/$first.log" "$(train_command "$first")" "$WORK/$second.log" "$(train_command "$second")"
done

[[ ${EVAL:-1} == 0 ]] && exit 0  # EVAL=0: train only; run fusion_eval.py (the line below) later
echo "== held-out cases: both modalities, then each missing ($(date -u +%H:%M:%S) UTC)"
"$PYTHON" "$HERE/fusion_eval.py" "$WORK" "$BRATS" "$WORK/brats/labelsTr" "${VARIANTS[@]}"
