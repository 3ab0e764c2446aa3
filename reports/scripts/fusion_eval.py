"""Evaluate fusion_compare.sh's runs: each fold's held-out case(s) with every modality, then with each one missing.

    python reports/scripts/fusion_eval.py WORK_DIR CASES_DIR LABELS_DIR VARIANT [VARIANT ...]

For each ``WORK_DIR/runs/<VARIANT>/fold_K`` the held-out cases (from the checkpoint's ``val_cases``) are read as the
raw per-case folders of CASES_DIR (the plan's import patterns) and inferred with the run's own infer settings
(configs/brats.yaml: each region's largest component), once with all channels and once per channel named missing
(``infer.missing_channels``, i.e. ``medseg infer --missing-modality``). Masks and sidecars go to
``WORK_DIR/predictions/<VARIANT>/<condition>/``; BraTS region Dice (whole tumour {1,2,3,4}, tumour core {1,3,4},
enhancing {4}; both empty = 1) against LABELS_DIR/<case>.nii.gz is averaged over the held-out cases, written to
``WORK_DIR/fusion_compare.json`` and printed as a table.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fusion_eval")

REGIONS = {"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (4,)}


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    total = int(prediction.sum()) + int(reference.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def region_dice(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {name: dice(np.isin(prediction, values), np.isin(reference, values)) for name, values in REGIONS.items()}


def _summary(run: Path) -> dict[str, Any]:
    path = run / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def evaluate_fold(run: Path, cases: Path, labels: Path, out: Path) -> tuple[dict[str, list[dict[str, float]]], list[str]]:
    """Per condition ('full', '<channel> missing'), the region Dice of each held-out case of this fold run."""
    from loo_infer import held_out_cases

    from medseg.infer import Segmenter, infer
    from medseg.infer.missing import channel_names
    from medseg.infer.model import load_model
    from medseg.infer.segmenter import saved_infer_config
    from medseg.io.readers import read_volume

    held_out = held_out_cases(run)
    model = load_model(run)
    base = saved_infer_config(model)  # the run's own infer: section (configs/brats.yaml's postprocessing)
    conditions: dict[str, list[str]] = {"full": []} | {f"{name} missing": [name] for name in channel_names(model.plan)}
    scores: dict[str, list[dict[str, float]]] = {condition: [] for condition in conditions}
    for condition, missing in conditions.items():
        segmenter = Segmenter(model, base.model_copy(update={"missing_channels": missing}))
        folder = out / condition.replace(" ", "_")
        for case in held_out:
            infer(model, cases / case, folder, segmenter=segmenter)
            prediction = np.asarray(read_volume(folder / f"{case}.nii.gz", role="label").array)
            reference = np.asarray(read_volume(labels / f"{case}.nii.gz", role="label").array)
            scores[condition].append(region_dice(prediction, reference))
            log.info("%s %s %s: %s", run, condition, case, scores[condition][-1])
    return scores, list(held_out)


def evaluate_variant(work: Path, variant: str, cases: Path, labels: Path) -> dict[str, Any]:
    """Region Dice per condition over every fold's held-out cases, plus the training facts of the folds."""
    from loo_infer import fold_runs

    folds = fold_runs(work / "runs" / variant)
    merged: dict[str, list[dict[str, float]]] = {}
    held: list[str] = []
    iterations, minutes = 0, 0.0
    for run in folds:
        scores, cases_of_fold = evaluate_fold(run, cases, labels, work / "predictions" / variant)
        for condition, rows in scores.items():
            merged.setdefault(condition, []).extend(rows)
        held += cases_of_fold
        summary = _summary(run)
        iterations += int(summary.get("iterations", 0))
        minutes += float(summary.get("minutes", 0.0))
    means = {condition: {region: float(np.mean([row[region] for row in rows])) for region in REGIONS} for condition, rows in merged.items()}
    return {"folds": [run.name for run in folds], "held_out": held, "iterations": iterations, "train_minutes": round(minutes, 2),
            "dice": means, "per_case": merged}


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per variant and condition, mean region Dice over the held-out cases."""
    lines = ["| variant | iterations (all folds) | input | WT | TC | ET | mean |", "|---|---|---|---|---|---|---|"]
    for variant, result in results.items():
        for condition, regions in result["dice"].items():
            mean = float(np.mean(list(regions.values())))
            cells = " | ".join(f"{regions[region]:.3f}" for region in REGIONS)
            lines.append(f"| {variant} | {result['iterations']} | {condition} | {cells} | {mean:.3f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("medseg", "monai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if len(argv) < 4:
        sys.stderr.write(__doc__ or "")
        return 2
    work, cases, labels, variants = Path(argv[0]), Path(argv[1]), Path(argv[2]), argv[3:]
    results = {variant: evaluate_variant(work, variant, cases, labels) for variant in variants}
    (work / "fusion_compare.json").write_text(json.dumps(results, indent=1))
    held = sorted({case for result in results.values() for case in result["held_out"]})
    sys.stdout.write(f"Region Dice on {len(held)} held-out case(s) ({', '.join(held)}), mean over cases:\n\n{table(results)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
