"""``evaluate(pred, gt)``: the Python API behind ``medseg evaluate``, usable from notebooks.

Predictions and references are two folders matched by case id (file name without its extension,
``case_001.nii.gz`` -> ``case_001``), two single files, or two in-memory :class:`Volume` s. Each
case is read as a label map, checked to lie on the same grid as its reference, evaluated by
:func:`~medseg.metrics.case.evaluate_case`, and the rows are aggregated into summary.json,
cases.csv and lesions.csv (written atomically when ``out_dir`` is given).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from medseg import __version__
from medseg.errors import ConfigError, InputError
from medseg.infer.outputs import SIDE_MAP_SUFFIXES
from medseg.io.itk import ITK_SUFFIXES
from medseg.io.nifti import NIFTI_SUFFIXES
from medseg.io.readers import read_volume
from medseg.io.volume import Volume
from medseg.logging_setup import new_progress
from medseg.metrics.aggregate import aggregate_cases, brats_summary, lesion_summary, worst_cases, worst_cases_overall
from medseg.metrics.brats import BRATS_LESION_COLUMNS, brats_lesionwise, evaluate_brats
from medseg.metrics.case import CASE_COLUMNS, LESION_COLUMNS, evaluate_case
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.detection import DETECTION_COLUMNS
from medseg.metrics.detection_eval import DetectionCollector, froc_figure
from medseg.metrics.detection_eval import wanted as detection_wanted
from medseg.metrics.labels import LabelSource, LabelSpec, inferred_specs, load_ignore_label, load_label_specs, resolve_keys
from medseg.metrics.outputs import write_csv, write_json

log = logging.getLogger(__name__)

CASE_SUFFIXES = tuple(sorted(set(NIFTI_SUFFIXES + ITK_SUFFIXES), key=len, reverse=True))
Source = Union[str, Path, Volume]

CONVENTIONS = {
    "dice_iou": "both masks empty: 1 (flag empty='both'); exactly one empty: 0 (flag empty='pred' or 'ref')",
    "distances": (
        "HD, HD95 and ASSD in mm between surface voxels (6-connected erosion edges), as MONAI 1.6.1: HD95 = max of "
        "the two directed 95th percentiles (linear interpolation); ASSD = mean of both directions' distances "
        "concatenated. Both empty: NaN. Exactly one empty: the cap given in 'empty_distance_cap'."
    ),
    "nsd": "fraction of surface voxels of both masks within tolerance_mm of the other surface (MONAI SurfaceDiceMetric, use_subvoxels=False); both empty: NaN; one empty: 0",
    "volumes": "mL = voxels x |det(affine)| / 1000; rel_volume_error = (pred - ref) / ref, NaN when the reference is empty",
    "lesions": "see medseg.metrics.lesions: 3D components, hit = overlap >= lesion_min_overlap_voxels, split = one TP, merged = all TP, unmatched prediction = FP; lesion_dice is BraTS-2023 style (missed and FP lesions count 0, 1 when no lesion in either map)",
    "diameters": "RECIST-style, on axial slices after reorienting to RAS: long axis = longest in-plane distance across the pixel set (pixel edges), short axis = longest perpendicular chord of the slice's convex hull",
    "monai": (
        "Dice, HD95, ASSD and NSD agree with MONAI 1.6.1 DiceMetric(ignore_empty=False), HausdorffDistanceMetric(percentile=95), "
        "SurfaceDistanceMetric(symmetric=True) and SurfaceDiceMetric to 1e-6 (HD95: a few 1e-6 relative, MONAI's float32 quantile). "
        "Intended difference: where exactly one mask is empty MONAI returns inf distances, we return the cap"
    ),
    "brats_lesionwise": (
        "BraTS 2023 lesion-wise Dice and HD95 (medseg.metrics.brats): reference lesions = 26-connected components joined when "
        "within brats_dilation 18-connected dilations; predicted components touching a dilated lesion are merged and scored "
        "against it; unmatched predicted components are false positives (Dice 0, HD95 brats_missing_hd95_mm), missed lesions too; "
        "lesions of at most the volume threshold are not scored; nothing to score = Dice 1, HD95 0. HD95 between surface voxels (MONAI), "
        "not DeepMind's surfel-weighted one"
    ),
    "aggregates": "NaN values are excluded and counted as n_nan; std uses ddof=1; CI = percentile bootstrap of the mean over cases",
}


@dataclass
class EvaluationResult:
    """All rows and the summary of one evaluation; ``out_dir`` is where they were written, if anywhere."""

    cases: list[dict]
    lesions: list[dict]
    summary: dict[str, Any]
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    brats_lesions: list[dict] = field(default_factory=list)
    detections: list[dict] | None = None  # detections.csv rows when lesion detection (FROC) ran

    def values(self, metric: str = "dice", label: str | None = None) -> np.ndarray:
        """One metric over cases (float array, NaN where undefined), for one label or all rows."""
        rows = [row for row in self.cases if label is None or row["label"] == label]
        return np.array([np.nan if row[metric] in ("", None) else float(row[metric]) for row in rows])

    def mean(self, metric: str = "dice") -> dict[str, float | None]:
        """{label: mean of ``metric`` over cases} from the summary."""
        return {label: stats[metric]["mean"] for label, stats in self.summary["metrics"].items() if metric in stats}


def case_id(path: Path) -> str:
    """File name without its volume extension; ``None``-like empty string for other files."""
    name = path.name
    lowered = name.lower()
    for suffix in CASE_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def cases_in(folder: Path) -> dict[str, Path]:
    """{case id: label file} of a folder of predictions or references (uncertainty and instance maps left out)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        identifier = case_id(path) if path.is_file() and not path.name.startswith(".") else ""
        if not identifier:
            continue
        if identifier in found:
            raise InputError(path, f"case id '{identifier}' appears twice in {folder} (also {found[identifier].name})")
        found[identifier] = path
    for identifier in [i for i in found if any(i.endswith(s) and i[: -len(s)] in found for s in SIDE_MAP_SUFFIXES)]:
        del found[identifier]  # uncertainty and instance maps of `medseg infer` beside their case's mask are not cases
    if not found:
        raise InputError(folder, f"holds no label files ({', '.join(CASE_SUFFIXES)})")
    return found


def pair_cases(pred: Path, gt: Path, on_missing: str = "error") -> tuple[list[tuple[str, Path, Path]], dict[str, list[str]]]:
    """[(case id, prediction path, reference path)] and the ids present on one side only."""
    for path in (pred, gt):
        if not path.exists():
            raise InputError(path, "does not exist")
    if pred.is_dir() != gt.is_dir():
        raise InputError(pred, f"is a {'folder' if pred.is_dir() else 'file'} but {gt} is a {'folder' if gt.is_dir() else 'file'}; give two folders or two files")
    if not pred.is_dir():
        return [(case_id(gt) or gt.name, pred, gt)], {"prediction_only": [], "reference_only": []}
    predictions, references = cases_in(pred), cases_in(gt)
    missing = {
        "prediction_only": sorted(set(predictions) - set(references)),
        "reference_only": sorted(set(references) - set(predictions)),
    }
    common = sorted(set(predictions) & set(references))
    if not common:
        raise InputError(pred, f"no case id in common with {gt} (e.g. {next(iter(predictions))} vs {next(iter(references))}); files are matched by name without extension")
    if (missing["prediction_only"] or missing["reference_only"]) and on_missing == "error":
        parts = []
        if missing["reference_only"]:
            parts.append(f"{len(missing['reference_only'])} reference case(s) have no prediction: {', '.join(missing['reference_only'][:5])}")
        if missing["prediction_only"]:
            parts.append(f"{len(missing['prediction_only'])} prediction(s) have no reference: {', '.join(missing['prediction_only'][:5])}")
        raise InputError(pred, "; ".join(parts) + " (set on_missing=skip to evaluate the common cases)")
    for side, ids in missing.items():
        if ids:
            log.warning("skipping %d case(s) found only as %s: %s", len(ids), side.replace("_only", ""), ", ".join(ids[:5]))
    return [(identifier, predictions[identifier], references[identifier]) for identifier in common], missing


def configure(config: EvaluateConfig | None, lesion_labels, tolerance_mm) -> EvaluateConfig:
    config = (config or EvaluateConfig()).model_copy(deep=True)
    updates: dict[str, Any] = {}
    if lesion_labels:
        updates["lesion_labels"] = [lesion_labels] if isinstance(lesion_labels, (str, int)) else list(lesion_labels)
    if isinstance(tolerance_mm, Mapping):
        tolerances = {str(k): float(v) for k, v in tolerance_mm.items()}
        if "default" in tolerances:
            updates["tolerance_mm"] = tolerances.pop("default")
        updates["label_tolerance_mm"] = tolerances
    elif tolerance_mm is not None:
        updates["tolerance_mm"] = float(tolerance_mm)
    from medseg.config.loader import build

    return build(EvaluateConfig, config.model_dump() | updates, source="evaluate")


def _check_inferred_keys(keys, what: str) -> None:
    for key in keys:
        text = str(key)
        if not (text.isdigit() or (text.startswith("label_") and text[6:].isdigit())):
            raise ConfigError(f"{what}: '{key}' is a name, but no label names are known; give --labels dataset.json or use the label index")


def _load_pair(pred: Source, gt: Source) -> tuple[Volume, Volume]:
    volumes = [source if isinstance(source, Volume) else read_volume(source, role="label") for source in (pred, gt)]
    return volumes[0], volumes[1]


@dataclass
class Specs:
    """The evaluated labels and which of them get lesion-wise and BraTS lesion-wise analysis."""

    labels: list[LabelSpec] | None
    lesions: list[LabelSpec]
    brats: list[LabelSpec]
    ignore_label: int | None


def resolve_specs(config: EvaluateConfig, labels: LabelSource, label_task: str | None) -> Specs:
    specs = load_label_specs(labels, label_task)
    brats_keys = list(config.brats_labels)
    if specs is not None:
        lesion_specs = resolve_keys(specs, config.lesion_labels, "lesion_labels")
        resolve_keys(specs, config.label_tolerance_mm, "tolerance_mm")
        resolve_keys(specs, config.brats_label_min_volume_mm3, "brats_label_min_volume_mm3")
        brats_specs = list(specs) if brats_keys == ["all"] else resolve_keys(specs, brats_keys, "brats_labels")
        return Specs(specs, lesion_specs, brats_specs, load_ignore_label(labels))
    if brats_keys == ["all"]:
        raise ConfigError("--brats scores every label of the label list: give --labels dataset.json (its regions are the BraTS regions)")
    for keys, what in ((config.lesion_labels, "lesion_labels"), (config.label_tolerance_mm, "tolerance_mm"), (brats_keys, "brats_labels")):
        _check_inferred_keys(keys, what)
    # inferred specs are named label_<k>, so lesion labels can be built without the data
    return Specs(None, inferred_specs(int(str(key).removeprefix("label_")) for key in config.lesion_labels),
                  inferred_specs(int(str(key).removeprefix("label_")) for key in brats_keys), None)


def _without_ignored(pred: Volume, gt: Volume, ignore_label: int | None) -> tuple[Volume, Volume]:
    """Unannotated reference voxels (the 'ignore' label) count for nothing: background in both maps."""
    if ignore_label is None:
        return pred, gt
    ignored = np.asarray(gt.array) == ignore_label
    if not ignored.any():
        return pred, gt
    return pred.with_array(np.where(ignored, 0, pred.array).astype(pred.array.dtype)), gt.with_array(np.where(ignored, 0, gt.array).astype(gt.array.dtype))


def _rows_of_pairs(pairs, specs: Specs, config: EvaluateConfig, progress: bool,
                    detection: DetectionCollector | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """Case rows, lesion rows and BraTS lesion rows of every pair (and each case's detections into ``detection``)."""
    case_rows: list[dict] = []
    lesion_rows: list[dict] = []
    brats_rows: list[dict] = []
    with new_progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}", markup=False), TimeRemainingColumn(),
        enabled=progress,
    ) as bar:  # fmt: skip
        task = bar.add_task("", total=len(pairs))
        for identifier, pred_source, gt_source in pairs:
            bar.update(task, description=identifier)
            pred_volume, gt_volume = _load_pair(pred_source, gt_source)
            if detection is not None:
                detection.add(identifier, pred_source, gt_volume)
            pred_volume, gt_volume = _without_ignored(pred_volume, gt_volume, specs.ignore_label)
            rows, lesions = evaluate_case(pred_volume, gt_volume, specs.labels, config, identifier, specs.lesions)
            if specs.brats:
                scores, brats_lesions = evaluate_brats(pred_volume, gt_volume, specs.brats, config, identifier)
                for row in rows:
                    row.update(scores.get(row["label"], {}))
                brats_rows.extend(brats_lesions)
            case_rows.extend(rows)
            lesion_rows.extend(lesions)
            bar.advance(task)
    return case_rows, lesion_rows, brats_rows


def evaluate(
    pred: Source,
    gt: Source,
    labels: LabelSource = None,
    lesion_labels=(),
    tolerance_mm: float | Mapping[str, float] | None = None,
    out_dir: str | Path | None = None,
    config: EvaluateConfig | None = None,
    label_task: str | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate predictions against references; write summary.json, cases.csv, lesions.csv to ``out_dir``
    (and brats_lesions.csv when labels are scored BraTS lesion-wise; detections.csv and froc.png when the
    predictions come with `medseg infer --instances` confidences, see ``evaluate.detection``).

    ``labels``: dataset.json / label_map.json (or a folder holding one), a dict, a list of
    indices, or None to evaluate every value present; regions of an nnU-Net dataset.json are
    evaluated as the union of their values, and its 'ignore' label counts for nothing.
    ``lesion_labels``: names or indices analysed lesion by lesion. ``tolerance_mm``: NSD
    tolerance, one number or {label: mm} (key "default" for the rest); None keeps ``config``'s.
    ``pred`` may also be a cross-validation run folder (``fold_<k>/validation/`` for each trained fold): every
    fold's held-out predictions are evaluated together, and summarised per fold and pooled
    (:func:`medseg.metrics.crossval.evaluate_cross_validation`).
    """
    if not isinstance(pred, Volume) and not isinstance(gt, Volume):
        from medseg.metrics.crossval import is_cross_validation_run

        if is_cross_validation_run(Path(pred)):
            from medseg.metrics.crossval import evaluate_cross_validation

            return evaluate_cross_validation(pred, gt, labels, lesion_labels, tolerance_mm, out_dir, config, label_task, progress)
    config = configure(config, lesion_labels, tolerance_mm)
    specs = resolve_specs(config, labels, label_task)
    if isinstance(pred, Volume) or isinstance(gt, Volume):
        pairs, missing = [("case", pred, gt)], {"prediction_only": [], "reference_only": []}
    else:
        pairs, missing = pair_cases(Path(pred), Path(gt), config.on_missing)
    result = evaluate_pairs(pairs, missing, specs, config, progress, pred, gt)
    if out_dir is not None:
        result.out_dir = Path(out_dir)
        result.files = write_outputs(result, result.out_dir)
    return result


def evaluate_pairs(pairs: list[tuple[str, Source, Source]], missing: dict[str, list[str]], specs: Specs, config: EvaluateConfig,
                   progress: bool, pred: Source, gt: Source) -> EvaluationResult:
    """The rows and summary of ``pairs`` (case id, prediction, reference), written nowhere; ``config`` as :func:`configure` made it."""
    started = time.perf_counter()
    detection = DetectionCollector(specs.lesions, config, specs.ignore_label) if detection_wanted(config, pairs, specs.lesions) else None
    case_rows, lesion_rows, brats_rows = _rows_of_pairs(pairs, specs, config, progress, detection)
    label_specs = specs.labels
    if label_specs is None:
        label_specs = inferred_specs(int(value) for row in case_rows for value in row["label_index"].split("+"))
        case_rows = _fill_absent_labels(case_rows, [pair[0] for pair in pairs], label_specs, config)
    elapsed = time.perf_counter() - started
    summary = {
        "medseg_version": __version__,
        "prediction": str(pred) if not isinstance(pred, Volume) else "<in-memory volume>",
        "reference": str(gt) if not isinstance(gt, Volume) else "<in-memory volume>",
        "cases": len(pairs),
        "case_ids": [pair[0] for pair in pairs],
        "missing": missing,
        "labels": [{"name": spec.name, "values": list(spec.values)} for spec in label_specs],
        "ignore_label": specs.ignore_label,
        "lesion_labels": [str(key) for key in config.lesion_labels],
        "config": config.model_dump(mode="json"),
        "conventions": CONVENTIONS | {"empty_distance_cap": _cap_text(config)},
        "metrics": aggregate_cases(case_rows, config),
        "lesions": lesion_summary(case_rows, lesion_rows, config),
        "brats_lesionwise": brats_summary(case_rows, config),
        "worst_cases": {"overall": worst_cases_overall(case_rows, config.worst_cases), "by_label": worst_cases(case_rows, config.worst_cases)},
        "seconds": {"total": elapsed, "per_case": elapsed / max(len(pairs), 1)},
    }
    if detection is not None:
        summary["lesion_detection"] = detection.summary()  # with its "convention"
    log.info("evaluated %d case(s), %d label(s) in %.1f s", len(pairs), len(label_specs), elapsed)
    return EvaluationResult(case_rows, lesion_rows, summary, brats_lesions=brats_rows, detections=detection.rows() if detection else None)


def _cap_text(config: EvaluateConfig) -> str:
    if config.empty_distance == "diagonal":
        return "image diagonal in mm (length of the grid's extent vector), the largest distance the image can hold"
    if config.empty_distance == "fixed":
        return f"{config.empty_distance_mm} mm (fixed)"
    return "NaN (undefined, excluded from aggregates)"


def _fill_absent_labels(rows: list[dict], case_ids: list[str], specs: list[LabelSpec], config: EvaluateConfig) -> list[dict]:
    """With labels inferred from the data, a label absent from a case is a 'both empty' row there."""
    from medseg.metrics.case import empty_lesion_scores, tolerance_for

    have = {(row["case"], row["label"]) for row in rows}
    lesion_keys = {str(key) for key in config.lesion_labels}
    for identifier in case_ids:
        for spec in specs:
            if (identifier, spec.name) in have:
                continue
            row = {column: "" for column in CASE_COLUMNS}
            row.update(case=identifier, label=spec.name, label_index=spec.index, empty="both", dice=1.0, iou=1.0)
            row.update(hd=np.nan, hd95=np.nan, assd=np.nan, nsd=np.nan, tolerance_mm=tolerance_for(spec, config))
            row.update(volume_pred_ml=0.0, volume_ref_ml=0.0, volume_diff_ml=0.0, abs_volume_error_ml=0.0, rel_volume_error=np.nan, tp=0, fp=0, fn=0)
            if lesion_keys & {spec.name, spec.index}:
                row.update(empty_lesion_scores(config))
            if {str(key) for key in config.brats_labels} & {spec.name, spec.index}:
                row.update(brats_lesionwise(np.zeros((1, 1, 1), bool), np.zeros((1, 1, 1), bool), (1, 1, 1)).scores())
            rows.append(row)
    order = {identifier: i for i, identifier in enumerate(case_ids)}
    value = {spec.name: spec.values for spec in specs}
    return sorted(rows, key=lambda row: (order[row["case"]], value[row["label"]]))


def write_outputs(result: EvaluationResult, out_dir: Path) -> list[Path]:
    """summary.json, cases.csv, lesions.csv (and brats_lesions.csv; detections.csv and froc.png with lesion detection),
    each written atomically; the summary last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        write_csv(result.cases, CASE_COLUMNS, out_dir / "cases.csv"),
        write_csv(result.lesions, LESION_COLUMNS, out_dir / "lesions.csv"),
    ]
    if result.summary.get("brats_lesionwise"):
        files.append(write_csv(result.brats_lesions, BRATS_LESION_COLUMNS, out_dir / "brats_lesions.csv"))
    if result.detections is not None:
        files.append(write_csv(result.detections, DETECTION_COLUMNS, out_dir / "detections.csv"))
        figure = froc_figure(result.summary["lesion_detection"], out_dir / "froc.png")
        files += [figure] if figure is not None else []
    return files + [write_json(result.summary, out_dir / "summary.json")]
