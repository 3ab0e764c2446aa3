#!/usr/bin/env bash
# Fine-tuning vs training from scratch on the 4 BraTS 2015 cases (FLAIR + T1c), from a hippocampus model.
#
#   reports/scripts/finetune_brats.sh SOURCE_RUN MINUTES [WORK_DIR]
#
# SOURCE_RUN: a hippocampus dynunet run (a run or fold folder, or a checkpoint) trained with configs/hippocampus.yaml,
# e.g. the dynunet fold of `medseg bench architectures ... --work-dir DIR` or finetune_compare.sh's scratch run.
# Both BraTS runs use configs/brats.yaml (region-based, 2 mm, leave-one-out folds: train.num_folds=4, FOLDS=0,1,2,3)
# with the hippocampus network's shape (base 16, max 128 features, 40x56x40 patch), so every layer but the
# two-channel stem and the region heads can be transferred:
#   scratch   random weights, MINUTES per fold;
#   finetune  --init-from SOURCE_RUN (FREEZE_EPOCHS=N keeps the encoder frozen for N epochs, default 0), MINUTES per fold.
# The two run side by side, each on one core (reports/scripts/pairs.sh; PARALLEL=0: one after the other). Then each
# fold's validation Dice on its held-out case (summary.json) is printed per region, with the mean over the folds.
#
# Run from the repository root. Data: $MEDSEG_TEST_DATA/brats2015_deepmedic (default ../shared/data). Everything
# else goes under WORK_DIR (default finetune_brats/).
set -euo pipefail
source "$(dirname "$0")/pairs.sh"

if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
SOURCE=$1
MINUTES=$2
WORK=${3:-finetune_brats}
FOLDS=${FOLDS:-0,1,2,3}
FREEZE_EPOCHS=${FREEZE_EPOCHS:-0}
DATA=${MEDSEG_TEST_DATA:-../shared/data}
BRATS=$DATA/brats2015_deepmedic
MEDSEG=${MEDSEG:-medseg}
PYTHON=${PYTHON:-python}

[[ -d $BRATS ]] || { echo "error: $BRATS not found (set MEDSEG_TEST_DATA)" >&2; exit 2; }
[[ -e $SOURCE ]] || { echo "error: $SOURCE: no such run or checkpoint" >&2; exit 2; }
[[ -f configs/brats.yaml ]] || { echo "error: run from the repository root (configs/brats.yaml not found)" >&2; exit 2; }
mkdir -p "$WORK"
[[ -f $WORK/brats/dataset.json ]] || "$MEDSEG" dataset import "$BRATS" "$WORK/brats" --preset brats2015

COMMON=(--config configs/brats.yaml --set model.base_features=16 --set model.max_features=128 --set train.patch_size=[40,56,40]
        --set train.num_folds=4 --set work_dir="$WORK/medseg_work")
"$MEDSEG" preprocess "$WORK/brats" "${COMMON[@]}" >/dev/null
SCRATCH=("$MEDSEG" train "$WORK/brats" "${COMMON[@]}" --fold "$FOLDS" --max-minutes "$MINUTES" -o "$WORK/scratch")
FINETUNE=("$MEDSEG" train "$WORK/brats" "${COMMON[@]}" --fold "$FOLDS" --max-minutes "$MINUTES" --init-from "$SOURCE"
          --set train.freeze_encoder_epochs="$FREEZE_EPOCHS" -o "$WORK/finetune")
echo "== scratch and finetune (from $SOURCE), folds $FOLDS, $MINUTES min each, side by side ($(date -u +%H:%M:%S) UTC; logs in $WORK/*.log)"
run_pair "$WORK/scratch.log" "$(printf '%q ' "${SCRATCH[@]}")" "$WORK/finetune.log" "$(printf '%q ' "${FINETUNE[@]}")"

echo "== validation Dice on each fold's held-out case after $MINUTES min"
"$PYTHON" - "$WORK" <<'PY'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
for name in ("scratch", "finetune"):
    folds = sorted((work / name).glob("fold_*/summary.json"))
    means: dict[str, list[float]] = {}
    for path in folds:
        summary = json.loads(path.read_text())
        scores = summary["final_validation"] or {}
        for region, value in scores.items():
            means.setdefault(region, []).append(value)
        cells = ", ".join(f"{region} {value:.3f}" for region, value in scores.items())
        print(f"{name:9s} {path.parent.name}: {cells}; {summary['iterations']} iterations, {summary['minutes']:.1f} min, "
              f"{summary['validation']}")
        if summary.get("init_from"):
            print(f"          {summary['init_from']['summary']}")
    print(f"{name:9s} mean over {len(folds)} folds: " + ", ".join(f"{region} {sum(v) / len(v):.3f}" for region, v in means.items()))
PY
