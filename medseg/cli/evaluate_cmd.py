"""`medseg evaluate` (metrics against a reference) and `medseg stats` (statistics without one)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medseg.logging_setup import console, print_table

LABELS_HELP = (
    "Label names: an MSD/nnU-Net dataset.json, a TotalSegmentator-style label_map.json, or a folder holding one. "
    "Default: every non-zero value found, named label_<k>."
)
TASK_HELP = "For label_map.json files holding several tasks (e.g. TotalSegmentator's 'total', 'total_mr'): which one."
LESION_HELP = "Label (name or index) to also evaluate lesion by lesion; repeat for several. Example: --lesion-labels tumor"
SET_HELP = ("Override any evaluation setting, e.g. --set evaluate.lesion_match_dilation_voxels=3 --set evaluate.bootstrap_samples=2000 "
            "(see medseg.metrics.config). Defaults: the settings `medseg infer` saved beside the predictions (config.yaml), then --config.")


def _config(config_file: Optional[Path], overrides: list[str], pred: Path):
    """The run config for evaluation: the settings `medseg infer` saved beside the predictions, then
    ``--config`` (any medseg config), then ``--set evaluate.key=value``."""
    from medseg.config.loader import load_config, read_yaml

    saved = pred / "config.yaml" if pred.is_dir() else None
    base = read_yaml(saved) if saved is not None and saved.is_file() else {}
    return load_config(config_file, overrides, base={key: base[key] for key in ("evaluate", "report") if isinstance(base.get(key), dict)})


def _tolerances(values: list[str]) -> float | dict[str, float] | None:
    """``["2"]`` -> 2.0; ``["liver=2", "1.5"]`` -> {"liver": 2.0, "default": 1.5}."""
    from medseg.errors import ConfigError

    if not values:
        return None
    result: dict[str, float] = {}
    for item in values:
        key, sep, raw = item.rpartition("=")
        try:
            result[key if sep else "default"] = float(raw)
        except ValueError:
            raise ConfigError(f"--tolerance '{item}': expected MM or LABEL=MM") from None
    return result["default"] if list(result) == ["default"] else result


def evaluate(
    pred: Path = typer.Option(..., "--pred", "-p", help="Predicted label map, a folder of them (matched to --gt by file name without extension), "
                              "or a cross-validation run folder: every fold_<k>/validation/ that `medseg train --fold 0,1,2,3,4` wrote "
                              "(each fold's held-out cases), summarised per fold and pooled (+ cross_validation.md)."),
    gt: Path = typer.Option(..., "--gt", "-g", help="Reference label map, or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for summary.json, cases.csv and lesions.csv (and brats_lesions.csv; created if needed)."),
    labels: Optional[Path] = typer.Option(None, "--labels", "-l", help=LABELS_HELP),
    label_task: Optional[str] = typer.Option(None, "--label-task", help=TASK_HELP),
    lesion_labels: list[str] = typer.Option([], "--lesion-labels", help=LESION_HELP),
    tolerance: list[str] = typer.Option([], "--tolerance", "-t", help="NSD tolerance in mm: one value for all labels (default 1), or LABEL=MM per label; repeatable."),
    brats: bool = typer.Option(False, "--brats", help="Also score every label/region of --labels with the BraTS 2023 lesion-wise Dice and HD95 "
                               "(dilation 3, lesions > 50 mm^3, 374 mm penalty; see --set evaluate.brats_*); per-lesion table in brats_lesions.csv."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="Any medseg config YAML or run folder; its evaluate: section applies."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    uncertainty: Optional[Path] = typer.Option(None, "--uncertainty", help="Folder of `medseg infer --save-uncertainty` maps (usually the "
                                               "--pred folder): also write OUT/uncertainty.json, the AUROC of entropy (and mutual "
                                               "information) for ranking wrong voxels, per case and pooled."),
) -> None:
    """Dice, IoU, HD95, ASSD, NSD, volumes and lesion detection of predictions against references.

    Surface metrics follow MONAI's definitions (checked to 1e-6) and use the voxel spacing.
    Empty masks: both empty -> Dice 1, distances NaN; one empty -> Dice 0, distances = image diagonal.

    Examples:
      medseg evaluate --pred preds/ --gt labelsTr/ --labels dataset.json -o eval/
      medseg evaluate -p pred.nii.gz -g seg.nii.gz -l label_map.json --label-task total -o eval/
      medseg evaluate -p preds/ -g gts/ --lesion-labels tumor --tolerance 2 --tolerance liver=3 -o eval/
      medseg evaluate -p preds/ -g data/brats/labelsTr -l data/brats/dataset.json --brats -o eval/   (BraTS regions)
      medseg evaluate -p preds/ -g labelsTs/ --uncertainty preds/ -o eval/   (does entropy flag the wrong voxels?)
      medseg evaluate -p preds/ -g labelsTs/ --lesion-labels tumor -o eval/   (preds from `medseg infer --instances`: + FROC, AP, froc.png)
      medseg evaluate -p runs/Hippocampus/3d_fullres -g data/hippocampus/labelsTr -l data/hippocampus/dataset.json -o cv/
        (a cross-validation: per fold and pooled, as nnU-Net's summary.json; cv/cross_validation.md)
    """
    from medseg.config.loader import save_resolved
    from medseg.metrics.evaluate import evaluate as run_evaluation

    settings = _config(config_file, overrides + (["evaluate.brats_labels=[all]"] if brats else []), pred)
    result = run_evaluation(pred, gt, labels, lesion_labels, _tolerances(tolerance), out, settings.evaluate, label_task)
    save_resolved(settings, out / "config.yaml")  # `medseg report` starts from these settings
    _print_summary(result.summary)
    _print_cross_validation(result.summary.get("cross_validation"))
    _print_detection(result.summary.get("lesion_detection"))
    files = [str(path) for path in result.files]
    if uncertainty is not None:
        files.append(str(_uncertainty_auroc(pred, gt, uncertainty, out, result.summary.get("ignore_label"))))
    console.print(f"wrote {', '.join(files)}")


def _uncertainty_auroc(pred: Path, gt: Path, maps: Path, out: Path, ignore_label: int | None) -> Path:
    from medseg.io.atomic import write_json
    from medseg.metrics.uncertainty import evaluate_uncertainty

    scores = evaluate_uncertainty(pred, gt, maps, ignore_label=ignore_label)
    for kind in ("entropy", "mutual_information"):
        if kind in scores:
            pooled = {region: entry["pooled_auroc"] for region, entry in scores[kind].items()}
            console.print(f"{kind} AUROC for wrong voxels: " + ", ".join(f"{region} {_format(value)}" for region, value in pooled.items()))
    return write_json(out / "uncertainty.json", scores)


def _print_cross_validation(summary: dict | None) -> None:
    """Per fold and pooled: per-label and foreground mean Dice (nnU-Net's summary), as in cross_validation.md."""
    if not summary:
        return
    from medseg.metrics.crossval import cross_validation_table

    header, rows = cross_validation_table(summary)
    table = Table(title="cross-validation: mean over each fold's held-out cases, and pooled")
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    print_table(table)


def _print_detection(detection: dict | None) -> None:
    """One line per lesion label: AP, CPM and the sensitivity at each reported FP rate (FROC of `medseg infer --instances`)."""
    for label, entry in (detection or {}).get("labels", {}).items():
        at = ", ".join(f"{rate}: {_format(value)}" for rate, value in entry["sensitivity_at_fp_per_case"].items())
        console.print(f"{label} detection ({', '.join(detection['confidence_source'])} confidence): AP {_format(entry['average_precision'])}, "
                      f"CPM {_format(entry['cpm'])}; sensitivity at FPs/case {at}")


def _format(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['cases']} case(s): mean [95% CI]")
    for column in ("label", "Dice", "HD95 mm", "ASSD mm", "NSD", "vol. err mL"):
        table.add_column(column)
    shown = [
        (label, stats) for label, stats in summary["metrics"].items()
        if stats["volume_ref_ml"]["max"] or stats["volume_pred_ml"]["max"]
    ]  # fmt: skip
    for label, stats in shown[:60]:
        cells = []
        for metric in ("dice", "hd95", "assd", "nsd", "abs_volume_error_ml"):
            entry = stats[metric]
            ci = f" [{_format(entry['ci_low'])}, {_format(entry['ci_high'])}]" if entry.get("ci_low") is not None else ""
            cells.append(_format(entry["mean"]) + ci)
        table.add_row(label, *cells)
    print_table(table)
    hidden = len(summary["metrics"]) - len(shown)
    if hidden > 0 or len(shown) > 60:
        console.print(f"({hidden} label(s) absent from every case not shown; all {len(summary['metrics'])} are in summary.json and cases.csv)")
    for label, scores in summary.get("brats_lesionwise", {}).items():
        console.print(f"{label} (BraTS lesion-wise): Dice {_format(scores['lesionwise_dice'])}, HD95 {_format(scores['lesionwise_hd95_mm'], 1)} mm; "
                      f"{scores['tp']} TP, {scores['fn']} FN, {scores['fp']} FP lesions")
    for label, lesions in summary["lesions"].items():
        console.print(
            f"{label}: {lesions['tp']}/{lesions['lesions_ref']} lesions found, sensitivity {_format(lesions['sensitivity'])}, "
            f"precision {_format(lesions['precision'])}, {_format(lesions['fp_per_case'], 2)} false positives per case"
        )


def stats(
    seg: Path = typer.Argument(..., help="Label map to describe (e.g. a `medseg infer` output)."),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="The image it was predicted on, for intensity statistics (HU for CT); must share the grid."),
    out: Path = typer.Option(..., "--out", "-o", help="A .json file, or a folder for statistics.json, structures.csv and lesions.csv."),
    labels: Optional[Path] = typer.Option(None, "--labels", "-l", help=LABELS_HELP),
    label_task: Optional[str] = typer.Option(None, "--label-task", help=TASK_HELP),
    lesion_labels: list[str] = typer.Option([], "--lesion-labels", help="Label (name or index) whose connected components are listed with volume and RECIST diameters; repeatable."),
) -> None:
    """Per-structure volume, intensity (mean/median/std), centroid and bounding box; per-lesion diameters.

    No ground truth needed. Volumes in mL, positions in world RAS mm.

    Examples:
      medseg stats seg.nii.gz --image ct.nii.gz -o stats/
      medseg stats seg.nii.gz -i ct.nii.gz -l dataset.json --lesion-labels tumor -o stats.json
    """
    from medseg.io import read_volume
    from medseg.metrics.statistics import segmentation_statistics, write_statistics

    volume = read_volume(seg, role="label")
    picture = read_volume(image) if image is not None else None
    statistics = segmentation_statistics(volume, picture, labels, lesion_labels, label_task=label_task)
    table = Table(title=str(seg))
    for column in ("structure", "volume mL", "mean", "median", "std"):
        table.add_column(column)
    for name, facts in statistics["structures"].items():
        if facts["voxels"]:
            intensity = facts.get("intensity", {})
            table.add_row(name, f"{facts['volume_ml']:.2f}", *(_format(intensity.get(key), 1) for key in ("mean", "median", "std")))
    print_table(table)
    console.print(f"wrote {', '.join(str(path) for path in write_statistics(statistics, out))}")


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command()(stats)
