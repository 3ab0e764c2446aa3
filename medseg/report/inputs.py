"""What a report is built from: an evaluation folder, the label maps and images it refers to, and model facts.

The evaluation folder is the one written by ``medseg evaluate -o`` (summary.json, cases.csv,
lesions.csv). The label maps are found again through the paths recorded in summary.json (or given
explicitly), and images are matched to cases by id the same way predictions are matched to
references. Nothing here reads patient identifiers unless :func:`dicom_identifiers` is called, which
the builder only does with ``include_phi``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.metrics.evaluate import case_id, pair_cases
from medseg.metrics.brats import BRATS_LESION_COLUMNS
from medseg.metrics.case import CASE_COLUMNS, LESION_COLUMNS
from medseg.metrics.outputs import read_csv_with_header

log = logging.getLogger(__name__)

TEXT_COLUMNS = {"case", "label", "label_index", "empty", "source", "size_bin", "matched", "kind"}
IN_MEMORY = "<in-memory volume>"
# nnU-Net names the image channels of case X as X_0000, X_0001, ...; the first one is shown.
CHANNEL_SUFFIX = "_0000"


def _number(value: str) -> float | str:
    if value == "":
        return math.nan
    if value in ("true", "false"):
        return float(value == "true")
    try:
        return float(value)
    except ValueError:
        return value


def _parsed(rows: list[dict[str, str]], columns: list[str], path: Path) -> list[dict[str, Any]]:
    """Numbers parsed (NaN where empty); a known numeric column holding text is an InputError naming the row."""
    numeric = set(columns) - TEXT_COLUMNS
    parsed = []
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        values = {key: value if key in TEXT_COLUMNS else _number(value or "") for key, value in row.items() if key is not None}
        for key in numeric & values.keys():
            if isinstance(values[key], str):
                raise InputError(path, f"line {number}: column '{key}' holds {values[key][:40]!r}, not a number")
        parsed.append(values)
    return parsed


def _read_table(path: Path, columns: list[str], required: tuple[str, ...]) -> list[dict[str, Any]]:
    """A CSV that `medseg evaluate` wrote, checked at the boundary: text, a header with the ``required`` columns, numbers where numbers belong."""
    try:
        rows, header = read_csv_with_header(path)
    except UnicodeDecodeError:
        raise InputError(path, "not a text CSV file (binary data)") from None
    except csv.Error as error:
        raise InputError(path, f"not a readable CSV file ({error})") from error
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror or error})") from error
    if not header:
        raise InputError(path, "is empty (no header row); write it again with `medseg evaluate`")
    missing = [column for column in required if column not in header]
    if missing:
        raise InputError(path, f"lacks column(s) {', '.join(missing)} (found: {', '.join(header[:12])}); not a `medseg evaluate` table")
    return _parsed(rows, columns, path)


@dataclass
class EvalData:
    """summary.json plus the rows of cases.csv and lesions.csv (numbers parsed, NaN where empty)."""

    eval_dir: Path
    summary: dict[str, Any]
    cases: list[dict[str, Any]]
    lesions: list[dict[str, Any]] = field(default_factory=list)
    brats_lesions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [entry["name"] for entry in self.summary.get("labels", [])] or list(dict.fromkeys(row["label"] for row in self.cases))

    @property
    def case_ids(self) -> list[str]:
        return list(self.summary.get("case_ids") or dict.fromkeys(row["case"] for row in self.cases))

    def regions(self) -> list[tuple[str, list[int]]]:
        """The evaluated labels as (name, values) when they are overlapping regions (BraTS' whole tumour, core,
        enhancing), else []: a voxel value shared by two labels means a label map cannot colour them apart."""
        entries = [(entry["name"], [int(value) for value in entry["values"]]) for entry in self.summary.get("labels", [])]
        values = [value for _, group in entries for value in set(group)]
        return entries if len(values) != len(set(values)) else []

    def label_values(self) -> dict[int, str]:
        """{voxel value: label name} of every evaluated label (a region contributes each of its values)."""
        return {int(value): entry["name"] for entry in self.summary.get("labels", []) for value in entry["values"]}

    @cached_property
    def _by_label(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in self.cases:
            grouped.setdefault(row["label"], []).append(row)
        return grouped

    @cached_property
    def _present_by_case(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in self.cases:
            if row.get("empty") != "both":
                grouped.setdefault(row["case"], []).append(row)
        return grouped

    @cached_property
    def _shown(self) -> list[str]:
        present = {row["label"] for rows in self._present_by_case.values() for row in rows}
        return [label for label in self.labels if label in present]

    def shown_labels(self) -> list[str]:
        """Labels present in at least one case in either map.

        A label absent from both maps of every case would show Dice 1 and no distances: listing it
        inflates the means and hides the informative rows, so the report leaves it out (and says so).
        """
        return list(self._shown)

    def hidden_labels(self) -> list[str]:
        shown = set(self._shown)
        return [label for label in self.labels if label not in shown]

    def rows(self, label: str, present_only: bool = False) -> list[dict[str, Any]]:
        """cases.csv rows of one label; ``present_only`` leaves out cases where both maps lack it."""
        return [row for row in self._by_label.get(label, []) if not (present_only and row.get("empty") == "both")]

    @cached_property
    def _ranking(self) -> list[dict[str, Any]]:
        shown = set(self._shown)
        ranking = []
        for identifier in self.case_ids:
            rows = [row for row in self._present_by_case.get(identifier, []) if row["label"] in shown]
            dice = [float(row["dice"]) for row in rows if not math.isnan(float(row["dice"]))]
            worst = min(rows, key=lambda row: float(row["dice"]), default=None)
            ranking.append({
                "case": identifier,
                "mean_dice": float(np.mean(dice)) if dice else math.nan,
                "labels_present": len(rows),
                "worst_label": worst["label"] if worst else None,
                "worst_dice": float(worst["dice"]) if worst else math.nan,
            })  # fmt: skip
        ranking.sort(key=lambda item: math.inf if math.isnan(item["mean_dice"]) else item["mean_dice"])
        return ranking

    def case_ranking(self) -> list[dict[str, Any]]:
        """Cases worst first: mean Dice over the labels present in either map, and the worst label.

        Cases where no label is present anywhere have nothing to get wrong and come last.
        """
        return [dict(entry) for entry in self._ranking]


def load_evaluation(eval_dir: str | Path) -> EvalData:
    """Read an evaluation folder; a missing or foreign folder is an InputError that says what to run."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise InputError(eval_dir, "evaluation folder does not exist (write one with `medseg evaluate --pred P --gt G -o EVAL_DIR`)")
    summary_path, cases_path = eval_dir / "summary.json", eval_dir / "cases.csv"
    for path in (summary_path, cases_path):
        if not path.is_file():
            raise InputError(eval_dir, f"no {path.name}: not an evaluation folder (write one with `medseg evaluate --pred P --gt G -o EVAL_DIR`)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(summary_path, f"not readable JSON ({error})") from error
    if not isinstance(summary, dict) or "metrics" not in summary:
        raise InputError(summary_path, "not a medseg evaluation summary (no 'metrics')")
    _check_summary(summary, summary_path)
    cases = _read_table(cases_path, CASE_COLUMNS, ("case", "label", "label_index", "dice", "tolerance_mm"))
    lesions_path = eval_dir / "lesions.csv"
    lesions = _read_table(lesions_path, LESION_COLUMNS, ("case", "label", "source")) if lesions_path.is_file() else []
    brats_path = eval_dir / "brats_lesions.csv"
    brats = _read_table(brats_path, BRATS_LESION_COLUMNS, ("case", "label", "kind", "volume_mm3", "dice")) if brats_path.is_file() else []
    if not cases:
        raise InputError(cases_path, "holds no case rows")
    return EvalData(eval_dir, summary, cases, lesions, brats)


def _check_summary(summary: dict[str, Any], path: Path) -> None:
    """The parts of summary.json the report reads by key must have the shapes `medseg evaluate` writes."""
    labels = summary.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(entry, dict) and isinstance(entry.get("name"), str)
                                               and isinstance(entry.get("values"), list) for entry in labels):
        raise InputError(path, "'labels' must be a list of {name, values} entries")
    for key in ("case_ids", "lesion_labels"):
        if summary.get(key) is not None and not isinstance(summary[key], list):
            raise InputError(path, f"'{key}' must be a list")
    for key in ("metrics", "config", "missing", "conventions", "seconds", "worst_cases", "lesions", "cross_validation"):
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            raise InputError(path, f"'{key}' must be a mapping")
    if not all(isinstance(entry, dict) for entry in (summary["metrics"] or {}).values()):
        raise InputError(path, "'metrics' must map each label to its metrics")


def _source(given: str | Path | None, recorded: str | None) -> Path | None:
    if given is not None:
        return Path(given)
    if not recorded or recorded == IN_MEMORY:
        return None
    return Path(recorded)


def locate_label_maps(data: EvalData, pred: str | Path | None = None, gt: str | Path | None = None) -> tuple[dict[str, tuple[Path, Path]], str | None]:
    """{case id: (prediction, reference)} for the evaluated cases, and a note when they cannot be found."""
    pred_path = _source(pred, data.summary.get("prediction"))
    gt_path = _source(gt, data.summary.get("reference"))
    if pred_path is None or gt_path is None:
        return {}, "the evaluation was run on in-memory volumes: pass the prediction and reference files to draw thumbnails"
    if not pred_path.exists() or not gt_path.exists():
        return {}, "the prediction/reference files recorded in summary.json were not found (moved?): pass --pred and --gt to draw thumbnails"
    if pred_path.is_dir() != gt_path.is_dir():
        raise InputError(pred_path, "prediction and reference must both be folders or both be files")
    if not pred_path.is_dir():
        identifiers = data.case_ids
        return ({identifiers[0]: (pred_path, gt_path)} if len(identifiers) == 1 else {}), None
    if isinstance(data.summary.get("cross_validation"), dict):  # the predictions are every fold's validation/ folder
        from medseg.metrics.crossval import cross_validation_pairs

        pairs = cross_validation_pairs(pred_path, gt_path, on_missing="skip")[0]
    else:
        pairs, _ = pair_cases(pred_path, gt_path, on_missing="skip")
    wanted = set(data.case_ids)
    return {identifier: (p, g) for identifier, p, g in pairs if identifier in wanted}, None


def _image_entries(folder: Path) -> dict[str, Path]:
    """Images in a folder keyed by case id: volume files by name without extension, subfolders (DICOM series) by name."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        identifier = entry.name if entry.is_dir() else case_id(entry)
        if identifier:
            found.setdefault(identifier, entry)
    return found


def locate_images(images: str | Path | None, case_ids: list[str]) -> dict[str, Path]:
    """{case id: image file or DICOM folder}; cases without an image are simply absent.

    ``images`` is a folder of images named like the cases (``case.nii.gz``, nnU-Net's
    ``case_0000.nii.gz``, or a DICOM folder ``case/``), or one image (file or DICOM folder) when the
    evaluation has a single case.
    """
    if images is None:
        return {}
    images = Path(images)
    if not images.exists():
        raise InputError(images, "image file or folder does not exist")
    if images.is_dir():
        entries = _image_entries(images)
        matched = {}
        for identifier in case_ids:
            path = entries.get(identifier) or entries.get(identifier + CHANNEL_SUFFIX)
            if path is not None:
                matched[identifier] = path
        if matched:
            missing = [identifier for identifier in case_ids if identifier not in matched]
            if missing:
                log.warning("no image for %d case(s) (e.g. %s): their thumbnails show the masks only", len(missing), missing[0])
            return matched
        if len(case_ids) == 1:  # e.g. a DICOM series folder for a single-case evaluation
            return {case_ids[0]: images}
        raise InputError(images, f"no image named after any case id (e.g. {case_ids[0]}.nii.gz, {case_ids[0]}{CHANNEL_SUFFIX}.nii.gz or a folder {case_ids[0]}/)")
    if len(case_ids) != 1:
        raise InputError(images, f"is a single image but the evaluation has {len(case_ids)} cases; give a folder of images named by case id")
    return {case_ids[0]: images}


# DICOM attributes that identify a patient or a visit: read only with include_phi.
PHI_TAGS = (
    "PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "AccessionNumber",
    "StudyID", "InstitutionName", "ReferringPhysicianName", "StudyDescription", "SeriesDescription",
)  # fmt: skip


def _first_dicom(path: Path) -> Path | None:
    from medseg.io.readers import is_dicom_file

    if path.is_file():
        return path if is_dicom_file(path) else None
    for candidate in sorted(path.rglob("*")):
        if candidate.is_file() and is_dicom_file(candidate):
            return candidate
    return None


def dicom_identifiers(path: Path) -> dict[str, str]:
    """Identifying attributes of the first DICOM file under ``path`` (empty for non-DICOM images)."""
    import pydicom

    first = _first_dicom(path)
    if first is None:
        return {}
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=list(PHI_TAGS))
    except Exception as error:  # pydicom raises many types for damaged headers
        log.warning("could not read identifying DICOM fields: %s", type(error).__name__)
        return {}
    return {tag: str(ds.get(tag)).strip() for tag in PHI_TAGS if ds.get(tag) not in (None, "") and str(ds.get(tag)).strip()}


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        log.warning("could not read %s: %s", path.name, error)
        return {}
    return data if isinstance(data, dict) else {}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _format_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _config_facts(config: dict[str, Any], include_phi: bool) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []
    model = config.get("model") or {}
    if model:
        parts = [str(model.get("name", "?"))]
        for key in ("spatial_dims", "base_features", "max_features", "norm", "deep_supervision"):
            if key in model and model[key] is not None:
                parts.append(f"{key}={model[key]}")
        facts.append(("network", ", ".join(parts)))
    if config.get("dataset"):
        dataset = str(config["dataset"])
        facts.append(("training dataset", dataset if include_phi else Path(dataset).name))
    target = (config.get("plan") or {}).get("target_spacing")
    if target:
        facts.append(("plan target spacing (mm)", " x ".join(f"{float(v):g}" for v in target)))
    train = config.get("train") or {}
    for key in ("epochs", "iterations_per_epoch", "lr", "fold"):
        if train.get(key) is not None:
            facts.append((f"train.{key}", _format_number(train[key])))
    return facts


def _summary_facts(summary: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    facts = []
    names = {"epochs": "epochs trained", "iterations": "iterations", "minutes": "training minutes",
             "best_ema_dice": "best validation Dice (EMA)", "final_mean_dice": "final mean validation Dice"}  # fmt: skip
    for key, name in names.items():
        if summary.get(key) is not None:
            facts.append((f"{prefix}{name}", _format_number(summary[key])))
    final = summary.get("final_validation")
    if isinstance(final, dict) and final:
        facts.append((f"{prefix}final validation Dice", ", ".join(f"{name} {_format_number(value)}" for name, value in final.items())))
    return facts


def _checkpoint_facts(path: Path, include_phi: bool) -> list[tuple[str, str]]:
    from medseg.train.checkpoint import load_checkpoint  # only for --model CHECKPOINT.pt; the rest of the report needs no torch

    payload = load_checkpoint(path)
    facts = _config_facts(payload.config, include_phi)
    facts += [("epoch", _format_number(payload.epoch)), ("configuration", payload.configuration.name)]
    if payload.fold is not None:
        facts.append(("fold", _format_number(payload.fold)))
    if payload.training is not None:
        facts.append(("best ema dice", _format_number(payload.training.best_ema_dice)))
    facts.append(("medseg version", payload.medseg_version))
    if payload.validation is not None:
        facts.append((f"validation mean Dice ({payload.validation.kind})", _format_number(payload.validation.mean_dice)))
    facts.append(("model labels", ", ".join(f"{k}: {v}" for k, v in payload.labels.items())))
    return facts


def model_facts(model: str | Path | None, summary: dict[str, Any], include_phi: bool = False) -> list[tuple[str, str]]:
    """Key facts about the model that made the predictions: from ``model`` (a checkpoint, a run
    folder with config.yaml/summary.json, or a folder of fold_* runs) or a ``model`` entry that
    the evaluation recorded. Paths are reduced to names unless ``include_phi``."""
    facts: list[tuple[str, str]] = []
    recorded = summary.get("model")
    if isinstance(recorded, dict):
        facts += [(str(key), _format_number(value)) for key, value in recorded.items() if not isinstance(value, (dict, list))]
    if model is None:
        return facts
    path = Path(model)
    if not path.exists():
        raise InputError(path, "model does not exist (expected a checkpoint .pt file, a run folder or a folder of fold_* run folders)")
    facts.append(("model", str(path.resolve()) if include_phi else path.name))
    if path.is_file():
        return facts + _checkpoint_facts(path, include_phi)
    folds = sorted(entry for entry in path.iterdir() if entry.is_dir() and entry.name.startswith("fold_"))
    runs = [path] if (path / "config.yaml").is_file() or (path / "summary.json").is_file() else folds
    if not runs:
        raise InputError(path, "holds no config.yaml, summary.json or fold_* folders: not a medseg run folder")
    if (runs[0] / "config.yaml").is_file():
        facts += _config_facts(_yaml(runs[0] / "config.yaml"), include_phi)
    for run in runs:
        prefix = f"{run.name}: " if run is not path else ""
        facts += _summary_facts(_json(run / "summary.json"), prefix)
    return facts
